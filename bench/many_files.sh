#!/usr/bin/env bash
# Many-file benchmarks: the speech corpus, 2000 short files and the seed workload on disk and on
# tmpfs; 200,000 tiny files on tmpfs; the supervisor's peak memory over 1,000,000 files.
# Every contender of a workload runs side by side in one hyperfine call. See bench/README.md.
#
# Usage (from the repo root):  bash bench/many_files.sh [corpus] [tiny] [memory]
#   (no argument: all three parts)
# Environment:
#   ETL        the etl binary (default: target/release/etl, built with cargo build --release)
#   DISK_DIR   workloads on disk (default /work/etl-bench-many; must not be tmpfs)
#   SHM_DIR    workloads on tmpfs (default /dev/shm/etl-bench-many)
#   RUNS       timed runs per contender (default 3; 2 for the tiny files)
#   WORKLOADS  which of speech short seed to time in `corpus` (default all three)
#   MEM_FILES  files for `memory` (default 1000000), MEM_REAL=1 to also time a real run of them,
#              MEM_WATCH=1 to also measure `etl watch` catching up on them
#   PYTHON     interpreter for bench/reference_pool.py (default python3)
# Results: $DISK_DIR/results/*.json (hyperfine), *.mem (peak memory), summary.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
DISK=${DISK_DIR:-/work/etl-bench-many}
SHM=${SHM_DIR:-/dev/shm/etl-bench-many}
RUNS=${RUNS:-3}
PARTS=("$@")
[[ ${#PARTS[@]} -eq 0 ]] && PARTS=(corpus tiny memory)
if [[ -z ${ETL:-} ]]; then
    cargo build --release >&2
    ETL=$ROOT/target/release/etl
fi
REF=$ROOT/bench/reference_pool.py
OUT=$DISK/results
mkdir -p "$DISK" "$SHM" "$OUT"
[[ $(stat -f -c %T "$DISK") != tmpfs ]] || { echo "DISK_DIR $DISK is on tmpfs" >&2; exit 1; }
[[ $(stat -f -c %T "$SHM") == tmpfs ]] || { echo "SHM_DIR $SHM is not on tmpfs" >&2; exit 1; }
for tool in hyperfine /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install hyperfine time)" >&2; exit 1; }
done
say() { printf '\n== %s\n' "$*" >&2; }
q() { printf '%q' "$1"; }

# Inputs dated 10 s back: etl skips files modified within --settle (1 s) as still being written.
backdate() { find "$1" -name '*.wav' ! -name '*-transformed.wav' -exec touch -d '-10 seconds' {} +; }

make_workload() {   # name dir
    local w=$1 dir=$2
    [[ -f $dir.done ]] && return
    rm -rf "$dir"
    case $w in
        speech) "$PYTHON" bench/speech_corpus.py "$dir" 3000 12 >&2 ;;
        short) "$ETL" gen-fake-data -q --out-dir "$dir" --count 2000 --duration 0.25 ;;
        seed) "$ETL" gen-fake-data -q --out-dir "$dir" --count 24 --duration 240 ;;
        tiny) "$ETL" gen-fake-data -q --out-dir "$dir" --count 200000 --duration 0.005 ;;
        # Its peak RSS too: gen-fake-data plans a window of tones at a time.
        mem) /usr/bin/time -v -o "$OUT/mem-gen-fake-data.time" \
                 "$ETL" gen-fake-data -q --out-dir "$dir" --count "${MEM_FILES:-1000000}" --duration 0.005 >/dev/null ;;
    esac
    backdate "$dir"
    touch "$dir.done"
}

# Outputs are moved into a trash folder rather than deleted before each run, and the trash is
# deleted at the end (or once it is large, see below): on ext4, creating a file scans past the
# inodes freed in the last 30 s of its group, so deleting thousands of files before each run
# slows the next one (BENCHMARKS.md).
# On tmpfs the outputs are deleted instead: a file there is its dentry and inode, so a trash
# of hundreds of thousands of files would slow every path lookup of the runs after it.
prepare_cmd() {   # dir
    local qd qt
    qd=$(q "$1") qt=$(q "$1.trash")
    if [[ $(stat -f -c %T "$1") == tmpfs ]]; then
        printf 'find %s -name %s -delete && rm -rf %s.cp' "$qd" "'*-transformed.wav'" "$qd"
        return
    fi
    # The trash is emptied once it holds 8 GB (a speech-corpus run leaves 1 GB), then the next
    # run waits out the 30 s in which ext4 still scans past the freed inodes.
    printf 'mkdir -p %s && { [ "$(du -sm %s | cut -f1)" -lt 8000 ] || { rm -rf %s/* && sync && sleep 31; }; } && t=$(mktemp -d %s/XXXXXX) && find %s -name %s -exec mv -t "$t" {} + && { [ ! -e %s.cp ] || mv %s.cp "$t/"; } && sync' \
        "$qt" "$qt" "$qt" "$qt" "$qd" "'*-transformed.wav'" "$qd" "$qd"
}

time_workload() {   # label dir runs contender-set
    local label=$1 dir=$2 runs=$3 set=$4 qd qe
    qd=$(q "$dir") qe=$(q "$ETL")
    local args=(--warmup 1 --runs "$runs" --export-json "$OUT/$label.json" --prepare "$(prepare_cmd "$dir")")
    if [[ $set == full ]]; then
        args+=(-n "etl -j 2" "$qe run $qd -j 2 -q --force"
               -n "etl -j 2 --no-fsync" "$qe run $qd -j 2 -q --force --no-fsync")
    else
        args+=(-n "etl -j 1 --no-fsync" "$qe run $qd -j 1 -q --force --no-fsync"
               -n "etl -j 2 --no-fsync" "$qe run $qd -j 2 -q --force --no-fsync")
    fi
    if [[ -n ${ETL_BASELINE:-} ]]; then
        # The build to compare with, in the same run: as the default durability and without flushes.
        [[ $set == full ]] && args+=(-n "baseline -j 2" "$(q "$ETL_BASELINE") run $qd -j 2 -q --force")
        [[ $set == full ]] || args+=(-n "baseline -j 1 --no-fsync" "$(q "$ETL_BASELINE") run $qd -j 1 -q --force --no-fsync")
        args+=(-n "baseline -j 2 --no-fsync" "$(q "$ETL_BASELINE") run $qd -j 2 -q --force --no-fsync")
    fi
    args+=(-n "python pool -j 2" "$(q "$PYTHON") $(q "$REF") $qd -j 2"
           -n "cp" "cp -r $qd $qd.cp")
    if [[ $set == full ]]; then
        # `sync FILE...` fsyncs each file, as etl's default does; `sync -f` is one syncfs.
        args+=(-n "cp + fsync each" "cp -r $qd $qd.cp && find $qd.cp -type f -exec sync {} + && sync $qd.cp"
               -n "cp + syncfs" "cp -r $qd $qd.cp && sync -f $qd.cp")
    fi
    say "timing $label ($dir)"
    local status=0
    hyperfine "${args[@]}" >&2 || status=$?
    rm -rf "$dir.trash"
    return "$status"
}

# The supervisor's peak RSS: /usr/bin/time -v (the largest single process of the tree) and a
# sampler of the supervisor's own VmHWM every 20 ms.
peak_memory() {   # label command...
    local label=$1; shift
    "$@" >/dev/null 2>"$OUT/$label.stderr" &
    local pid=$! hwm=0 v
    while kill -0 "$pid" 2>/dev/null; do
        v=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [[ -n $v && $v -gt $hwm ]] && hwm=$v
        sleep 0.02
    done
    wait "$pid" || true
    echo "$hwm" > "$OUT/$label.mem"
    say "$label: supervisor VmHWM $((hwm / 1024)) MiB (sampled)"
}

# The service catching up on a folder of `files` inputs: its supervisor's VmHWM sampled as
# above until every file has its line, then SIGTERM.
watch_memory() {   # label dir files
    local label=$1 dir=$2 files=$3 lines=$OUT/$1.stdout hwm=0 v
    "$ETL" watch "$dir" -j 2 -q --no-fsync --settle 0 >"$lines" 2>"$OUT/$label.stderr" &
    local pid=$! start=$SECONDS
    while kill -0 "$pid" 2>/dev/null; do
        v=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [[ -n $v && $v -gt $hwm ]] && hwm=$v
        (( $(wc -l <"$lines") >= files )) && break
        sleep 0.2
    done
    local took=$((SECONDS - start))
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
    echo "$hwm" > "$OUT/$label.mem"
    say "$label: supervisor VmHWM $((hwm / 1024)) MiB (sampled), $(wc -l <"$lines") files in ${took} s"
    rm -f "$lines"
}

for part in "${PARTS[@]}"; do
    case $part in
    corpus)
        for w in ${WORKLOADS:-speech short seed}; do
            make_workload "$w" "$DISK/$w"
            [[ -f $SHM/$w.done ]] || { rm -rf "$SHM/$w"; cp -r "$DISK/$w" "$SHM/$w"; backdate "$SHM/$w"; touch "$SHM/$w.done"; }
            time_workload "$w-disk" "$DISK/$w" "$RUNS" full
            time_workload "$w-tmpfs" "$SHM/$w" "$RUNS" full
        done ;;
    tiny)
        make_workload tiny "$SHM/tiny"
        time_workload "tiny-tmpfs" "$SHM/tiny" "${TINY_RUNS:-2}" nofsync ;;
    memory)
        make_workload mem "$SHM/mem"
        /usr/bin/time -v -o "$OUT/mem-dry-run.time" "$ETL" run "$SHM/mem" --dry-run -q >/dev/null 2>&1 || true
        peak_memory mem-dry-run "$ETL" run "$SHM/mem" --dry-run -q
        if [[ -n ${ETL_BASELINE:-} ]]; then
            peak_memory mem-dry-run-baseline "$ETL_BASELINE" run "$SHM/mem" --dry-run -q
        fi
        if [[ ${MEM_REAL:-0} == 1 ]]; then
            peak_memory mem-run "$ETL" run "$SHM/mem" -j 2 -q --force --no-fsync
            find "$SHM/mem" -name '*-transformed.wav' -delete
        fi
        if [[ ${MEM_WATCH:-0} == 1 ]]; then
            watch_memory mem-watch "$SHM/mem" "${MEM_FILES:-1000000}"
            find "$SHM/mem" -name '*-transformed.wav' -delete
        fi
        # A million files on tmpfs are a million dentries that slow every path lookup of the
        # machine (the other workloads' timings among them): gone unless MEM_KEEP=1.
        [[ ${MEM_KEEP:-0} == 1 ]] || rm -rf "$SHM/mem" "$SHM/mem.done" ;;
    esac
done

say "summary"
"$PYTHON" - "$OUT" <<'PY' | tee "$OUT/summary.md"
import glob, json, os, sys
out = sys.argv[1]
print("| workload, where | contender | median s | user s | sys s | × python | × cp | × cp + fsync each | × cp + syncfs |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    label = os.path.basename(path)[:-5]
    res = json.load(open(path))["results"]
    med = {r["command"]: r["median"] for r in res}
    py = next((v for k, v in med.items() if k.startswith("python")), None)
    def ratio(m, b):
        return f"{m / b:.2f}" if b else "–"
    for r in res:
        m = r["median"]
        print(f"| {label} | {r['command']} | {m:.3f} | {r['user']:.2f} | {r['system']:.2f} | {ratio(m, py)} | "
              f"{ratio(m, med.get('cp'))} | {ratio(m, med.get('cp + fsync each'))} | {ratio(m, med.get('cp + syncfs'))} |")
for path in sorted(glob.glob(os.path.join(out, "*.mem"))):
    print(f"- {os.path.basename(path)[:-4]}: supervisor VmHWM (sampled every 20 ms) {int(open(path).read()) / 1024:.1f} MiB")
for path in sorted(glob.glob(os.path.join(out, "*.time"))):
    for line in open(path):
        if "Maximum resident" in line:
            print(f"- {os.path.basename(path)[:-5]}: GNU time max RSS (largest process) {int(line.split(':')[1]) / 1024:.1f} MiB")
PY
