#!/usr/bin/env bash
# Benchmark `etl run` against the reference Python implementation
# (bench/reference_pool.py) and against `cp -r` (the floor: reading and
# writing the same bytes once).  See bench/README.md.
#
# Usage (from the repo root):
#   bash bench/run.sh                # full run
#   QUICK=1 bash bench/run.sh        # every workload 10x smaller, RUNS=2
#
# Environment:
#   BENCH_DIR  where the workloads and results go (default /tmp/etl-bench;
#              QUICK=1 uses $BENCH_DIR/quick)
#   RUNS       timed runs per contender (default 5, or 2 with QUICK=1)
#   PYTHON     interpreter for the reference (default python3)
#   ETL_BASELINE  another etl binary (say, a build of an older commit) to time
#              side by side, as the contenders "baseline -j 2" and
#              "baseline -j 2 --no-fsync"
#
# Results: $D/<workload>.json (hyperfine), $D/mem/*.json (peak memory),
# $D/summary.md (the table printed at the end).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=${QUICK:-0}
PYTHON=${PYTHON:-python3}
if [[ "$QUICK" == 1 ]]; then
    D=${BENCH_DIR:-/tmp/etl-bench}/quick
    RUNS=${RUNS:-2}
else
    D=${BENCH_DIR:-/tmp/etl-bench}
    RUNS=${RUNS:-5}
fi

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: error: %s\n' "$*" >&2; exit 1; }
q() { printf '%q' "$1"; }   # quote one word for a shell command string

# ---------------------------------------------------------------- tools
SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO=(sudo); fi

apt_install() {
    # Try the install first; refresh the package lists only if it fails.
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"; then
        "${SUDO[@]}" apt-get update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
    fi
}

say "checking tools"
command -v hyperfine >/dev/null || apt_install hyperfine
[[ -x /usr/bin/time ]] || apt_install time
if ! "$PYTHON" -c 'import numpy, scipy' 2>/dev/null; then
    "$PYTHON" -m pip install numpy scipy || apt_install python3-numpy python3-scipy
fi
"$PYTHON" -c 'import numpy, scipy' || die "$PYTHON cannot import numpy and scipy"
command -v hyperfine >/dev/null || die "hyperfine is not installed"
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is not installed"

# ---------------------------------------------------------------- build
say "cargo build --release"
if ! cargo build --release; then
    die "cargo build --release failed: the benchmark needs a working target/release/etl. Fix the build and run again."
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
    | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
ETL="$TARGET_DIR/release/etl"
[[ -x "$ETL" ]] || die "cargo build succeeded but $ETL does not exist (is the binary called etl?)"
REF="$ROOT/bench/reference_pool.py"
if [[ -n ${ETL_BASELINE:-} && ! -x $ETL_BASELINE ]]; then
    die "ETL_BASELINE=$ETL_BASELINE is not an executable"
fi

# ---------------------------------------------------------------- workloads
mkdir -p "$D"
rm -rf "$D/mem" && mkdir -p "$D/mem"
if [[ $(stat -f -c %T "$D") == tmpfs ]]; then
    echo "warning: $D is on tmpfs: file I/O is memory I/O here and the data uses RAM" >&2
fi
avail_kib=$(df -Pk "$D" | awk 'NR==2 {print $4}')
# inputs ~2.4 GB, plus one contender's outputs (<= ~1 GB) at a time
need_kib=$(( QUICK == 1 ? 512 * 1024 : 4 * 1024 * 1024 ))
if (( avail_kib < need_kib )); then
    echo "warning: only $((avail_kib / 1024)) MiB free under $D; the inputs plus one set of outputs need about $((need_kib / 1024)) MiB" >&2
fi

WORKLOADS=(seed long short stereo)
declare -A GEN
if [[ "$QUICK" == 1 ]]; then
    GEN[seed]="--count 24 --duration 24"
    GEN[long]="--count 1 --duration 576"
    GEN[short]="--count 200 --duration 0.25"
    GEN[stereo]="--count 24 --duration 6 --format i16 --channels 2 --sample-rate 48000"
else
    GEN[seed]="--count 24 --duration 240"       # float32 mono 44.1 kHz, ~970 MB
    GEN[long]="--count 1 --duration 5760"       # one 96-minute file, ~1 GB
    GEN[short]="--count 2000 --duration 0.25"   # many tiny files
    GEN[stereo]="--count 24 --duration 60 --format i16 --channels 2 --sample-rate 48000"
fi

clean_outputs() {   # the previous runs' outputs of one workload
    find "$1" -name '*-transformed.wav' -delete
    rm -rf "$1.cp"
}

for w in "${WORKLOADS[@]}"; do
    dir="$D/$w"
    stamp="$D/$w.genargs"
    # gen-fake-data keeps existing files, so regenerate from scratch only
    # when the parameters changed (or an earlier generation did not finish).
    if [[ ! -f "$stamp" || $(cat "$stamp") != "${GEN[$w]}" ]]; then
        rm -rf "$dir" "$stamp"
    fi
    [[ -d "$dir" ]] && clean_outputs "$dir"
    say "workload $w: etl gen-fake-data --out-dir $dir ${GEN[$w]}"
    # shellcheck disable=SC2086  # GEN holds several arguments on purpose
    if ! "$ETL" gen-fake-data --out-dir "$dir" ${GEN[$w]}; then
        die "etl gen-fake-data failed for workload $w"
    fi
    printf '%s' "${GEN[$w]}" > "$stamp"
    n=$(find "$dir" -maxdepth 1 -name '*.wav' ! -name '*-transformed.wav' | wc -l)
    echo "$w: $n input files, $(du -sh "$dir" | cut -f1)" >&2
done

# Contenders of a workload, as pairs: name, shell command.
contenders() {
    local w=$1 dir="$D/$1" qdir
    qdir=$(q "$dir")
    CONT=()
    # etl flushes each output to the disk before renaming it (fsync); Python
    # and cp do not, so etl also runs with --no-fsync, and cp also runs
    # followed by an fsync of every file it wrote (`sync FILE...`): the same
    # bytes on stable storage, as etl's default promises.
    local js=(2)
    if [[ $w == seed || $w == long ]]; then js=(1 2); fi
    for j in "${js[@]}"; do
        CONT+=("etl -j $j" "$(q "$ETL") run $qdir -j $j -q --force")
    done
    for j in "${js[@]}"; do
        CONT+=("etl -j $j --no-fsync" "$(q "$ETL") run $qdir -j $j -q --force --no-fsync")
    done
    if [[ -n ${ETL_BASELINE:-} ]]; then
        CONT+=("baseline -j 2" "$(q "$ETL_BASELINE") run $qdir -j 2 -q --force")
        CONT+=("baseline -j 2 --no-fsync" "$(q "$ETL_BASELINE") run $qdir -j 2 -q --force --no-fsync")
    fi
    # Python on `long` holds the whole file as float32 plus float64 noise:
    # about 12 bytes/sample x 254M samples; measured peak RSS 2.9 GiB, 10 s.
    # Well under the 8 GB limit, so it runs on every workload.
    CONT+=("python pool -j 2" "$(q "$PYTHON") $(q "$REF") $qdir -j 2")
    CONT+=("cp" "cp -r $qdir $(q "$dir.cp")")
    CONT+=("cp + fsync" "cp -r $qdir $(q "$dir.cp") && find $(q "$dir.cp") -type f -exec sync {} + && sync $(q "$dir.cp")")
}

# Outputs of `short` are moved aside into $TRASH instead of deleted, and the
# trash is deleted only when every workload is done.  On ext4 without a journal
# (the root filesystem of some VMs) creating a file scans past every inode freed
# in the last 30 s of its block group (`recently_deleted()` in fs/ext4/ialloc.c),
# so deleting 2000 files before every run made each contender's run slower than
# the one before, whatever the contender.  A user's run does not follow the
# deletion of the same number of files by a second.  See BENCHMARKS.md.
TRASH="$D/trash"
rm -rf "$TRASH" && mkdir -p "$TRASH"

prepare_cmd() {  # removes the previous outputs; sync so that one run's dirty
                 # pages are not written back during the next timed run
    local qdir qcp
    qdir=$(q "$D/$1")
    qcp=$(q "$D/$1.cp")
    if [[ $1 == short ]]; then
        printf 't=$(mktemp -d %s/XXXXXX) && find %s -name %s -exec mv -t "$t" {} + && { [ ! -e %s ] || mv %s "$t/"; } && sync' \
            "$(q "$TRASH")" "$qdir" "'*-transformed.wav'" "$qcp" "$qcp"
    else
        printf "find %s -name '*-transformed.wav' -delete; rm -rf %s; sync" "$qdir" "$qcp"
    fi
}

# ---------------------------------------------------------------- timing
for w in "${WORKLOADS[@]}"; do
    contenders "$w"
    args=(--warmup 1 --runs "$RUNS" --export-json "$D/$w.json" --prepare "$(prepare_cmd "$w")")
    for ((i = 0; i < ${#CONT[@]}; i += 2)); do
        args+=(--command-name "${CONT[i]}" "${CONT[i+1]}")
    done
    say "timing workload $w (hyperfine, $RUNS runs)"
    hyperfine "${args[@]}"
done

# ---------------------------------------------------------------- memory
# Peak memory, two ways, in a separate (untimed) run of each contender.
#
# 1. GNU time -v "Maximum resident set size".  GNU time forks the command and
#    collects it with wait3(&status, 0, &rusage); it prints rusage.ru_maxrss.
#    On Linux the rusage of a reaped child is getrusage(child, RUSAGE_BOTH)
#    (kernel/exit.c wait_task_zombie), and for ru_maxrss that is
#        max(the child's own peak RSS, the child's cmaxrss),
#    where cmaxrss is the largest peak RSS of any descendant that was reaped
#    by its parent (each reap does parent.cmaxrss = max(parent.cmaxrss,
#    max(child.maxrss, child.cmaxrss))).  So the number is the peak RSS of the
#    single largest process in the tree -- a MAXIMUM, not a sum: two workers at
#    300 MB and 200 MB at the same time report ~300 MB, not 500 MB (checked
#    with a test program).  Processes that are never waited for (orphans
#    re-parented to init, double-forked daemons) are NOT included, nor are
#    those still running when the command exits.  RSS counts shared pages
#    (fork copy-on-write pages, mapped files, shared libraries) fully in every
#    process.  For `etl` it is max(supervisor, every worker) as long as the
#    supervisor waits for its workers; for Python the Pool joins (waits for)
#    its workers on exit, so they are included as well.
# 2. A sampler that polls /proc/<pid>/status VmHWM (the same per-process peak
#    RSS, "high water mark") of every descendant every 20 ms, so it reports
#    each process separately (supervisor vs. workers).  It can miss a process
#    that lives less than one interval, and a process' growth after the last
#    sample before it exits; the GNU time number has neither gap.
#    The sampler starts /usr/bin/time itself, so it is watching before the
#    command starts.
SAMPLER='
import json, os, subprocess, sys, time
time_out, sampled_out, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
child = subprocess.Popen(["/usr/bin/time", "-v", "-o", time_out, "bash", "-c", "exec " + cmd],
                         stdout=subprocess.DEVNULL)
root = child.pid          # /usr/bin/time; its child is the measured command
procs = {}
def status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            txt = f.read()
    except OSError:
        return None
    d = {}
    for line in txt.splitlines():
        k, _, v = line.partition(":")
        d[k] = v.strip()
    return d
while child.poll() is None:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = status(name)
            if s is not None:
                table[int(name)] = s
    kids = {}
    for pid, s in table.items():
        kids.setdefault(int(s.get("PPid", "0")), []).append(pid)
    todo = [(c, 1) for c in kids.get(root, [])]
    while todo:
        pid, depth = todo.pop()
        todo += [(c, depth + 1) for c in kids.get(pid, [])]
        s = table[pid]
        p = procs.setdefault(pid, {"pid": pid, "depth": depth, "hwm_kib": 0})
        p["name"] = s.get("Name", "?")   # the latest name (after an exec)
        p["hwm_kib"] = max(p["hwm_kib"], int(s.get("VmHWM", "0 kB").split()[0]))
    time.sleep(0.02)
main = [p for p in procs.values() if p["depth"] == 1]
children = [p for p in procs.values() if p["depth"] > 1]
with open(sampled_out, "w") as f:
    json.dump({
        "main_hwm_kib": max((p["hwm_kib"] for p in main), default=None),
        "max_child_hwm_kib": max((p["hwm_kib"] for p in children), default=None),
        "children_seen": len(children),
        "procs": sorted(procs.values(), key=lambda p: p["pid"]),
    }, f, indent=1)
sys.exit(child.returncode)
'

slug() { printf '%s' "$1" | tr -c 'A-Za-z0-9' '_'; }

for w in "${WORKLOADS[@]}"; do
    contenders "$w"
    for ((i = 0; i < ${#CONT[@]}; i += 2)); do
        name=${CONT[i]} cmd=${CONT[i+1]}
        # The sampler execs one command; this one is two, and uses as little memory as cp.
        [[ $name == "cp + fsync" ]] && continue
        base="$D/mem/$w--$(slug "$name")"
        say "peak memory: $w / $name"
        bash -c "$(prepare_cmd "$w")"
        if ! "$PYTHON" -c "$SAMPLER" "$base.time" "$base.sampled.json" "$cmd"; then
            die "$name on $w failed under /usr/bin/time; see $base.time"
        fi
        kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$base.time")
        printf '{"time_maxrss_kib": %s}\n' "${kib:-null}" > "$base.json"
        echo "$w / $name: max RSS $((${kib:-0} / 1024)) MiB (GNU time)" >&2
    done
done

for w in "${WORKLOADS[@]}"; do clean_outputs "$D/$w"; done
rm -rf "$TRASH"

# ---------------------------------------------------------------- summary
say "summary"
"$PYTHON" - "$D" "$QUICK" "$RUNS" "$ETL" "${WORKLOADS[@]}" <<'EOF' > "$D/summary.md"
import json, os, platform, re, subprocess, sys, time

d, quick, runs, etl, workloads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]

def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""

def slug(s):
    return re.sub(r"[^A-Za-z0-9]", "_", s)

def ratio(a, b):
    return "–" if not b else f"{a / b:.2f}"

def mib(kib):
    return "–" if kib is None else f"{kib / 1024:.1f}"

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
rev = (sh("git", "rev-parse", "--short", "HEAD") or "unknown") + (" (dirty)" if sh("git", "status", "--porcelain") else "")
import numpy, scipy
print(f"# etl benchmark{' (QUICK=1: workloads 10x smaller)' if quick == '1' else ''}")
print()
print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {rev}")
print(f"- machine: {os.cpu_count()} CPUs ({cpu}), {int(mem) / 1048576:.1f} GiB RAM, Linux {platform.release()}")
print(f"- {sh('hyperfine', '--version')}, warmup 1, {runs} runs; Python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}")
print(f"- etl binary: {etl}")
if os.environ.get("ETL_BASELINE"):
    print(f"- baseline binary: {os.environ['ETL_BASELINE']}")
print(f"- data in {d} (page cache warm: the inputs fit in RAM); each run starts after deleting the previous outputs (moving them aside on `short`, deleted at the end) and `sync`")
print()
print("| workload | contender | median s | × python | × cp | × cp + fsync | peak RSS MiB (GNU time: largest process) | sampled VmHWM MiB: main / largest child (children seen) |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
medians = {}
for w in workloads:
    path = os.path.join(d, f"{w}.json")
    if not os.path.exists(path):
        continue
    res = json.load(open(path))["results"]
    med = {r["command"]: r["median"] for r in res}
    medians[w] = med
    py = next((v for k, v in med.items() if k.startswith("python")), None)
    cp = med.get("cp")
    cp_fsync = med.get("cp + fsync")
    for r in res:
        name, m = r["command"], r["median"]
        base = os.path.join(d, "mem", f"{w}--{slug(name)}")
        t = json.load(open(base + ".json")) if os.path.exists(base + ".json") else {}
        s = json.load(open(base + ".sampled.json")) if os.path.exists(base + ".sampled.json") else {}
        sampled = "–"
        if s:
            sampled = f"{mib(s.get('main_hwm_kib'))} / {mib(s.get('max_child_hwm_kib'))} ({s.get('children_seen', 0)})"
        print(f"| {w} | {name} | {m:.3f} | {ratio(m, py)} | {ratio(m, cp)} | {ratio(m, cp_fsync)} | {mib(t.get('time_maxrss_kib'))} | {sampled} |")
print()
for w in ("seed", "long"):
    med = medians.get(w, {})
    for flag in ("", " --no-fsync"):
        one, two = med.get(f"etl -j 1{flag}"), med.get(f"etl -j 2{flag}")
        if one and two:
            print(f"- {w}: etl -j 2{flag} / etl -j 1{flag} = {two / one:.2f} (target ≤ 0.65)")
print("- × python, × cp, × cp + fsync: median time divided by the median of `python pool -j 2`, `cp -r`, or `cp -r` then `sync` of every file it wrote, on the same workload (lower is faster).")
print("- etl fsyncs every output before renaming it into place unless `--no-fsync`; Python and `cp` do not.")
print("- peak RSS target for etl: ≤ 32 MiB in every process.")
EOF
cat "$D/summary.md"
echo >&2
echo "saved: $D/summary.md (hyperfine JSON: $D/<workload>.json, memory: $D/mem/)" >&2
