#!/usr/bin/env bash
# Offline augmentation: 2000 short files × 3 noisy variants at SNRs drawn in 10..20 dB, with a
# manifest, by one `etl run --variants 3` against three runs of the Python pool (which makes one
# output per input per run). Run once (hyperfine --runs 1 by default): see BENCHMARKS.md.
#
# Usage (from the repo root):  bash bench/augment.sh
# Environment:
#   ETL      the etl binary (default: target/release/etl, built with cargo build --release)
#   DIR      the workload (default /work/etl-bench-augment; remade when missing)
#   RUNS     timed runs per contender (default 1)
#   JOBS     workers for both (default 2)
#   PYTHON   interpreter for bench/reference_pool.py (default python3)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
DIR=${DIR:-/work/etl-bench-augment}
RUNS=${RUNS:-1}
JOBS=${JOBS:-2}
if [[ -z ${ETL:-} ]]; then
    cargo build --release >&2
    ETL=$ROOT/target/release/etl
fi
command -v hyperfine >/dev/null || { echo "missing hyperfine (apt-get install hyperfine)" >&2; exit 1; }

if [[ ! -f $DIR.done ]]; then
    rm -rf "$DIR"
    # Varied clips, like a speech corpus: 0.1 to 0.4 s, 200 to 2000 Hz, int16 at 16 kHz.
    "$ETL" gen-fake-data -q --out-dir "$DIR" --count 2000 --duration 0.1..0.4 \
        --frequency 200..2000 --sample-rate 16000 --format i16 --seed 1
    # etl skips inputs modified within --settle (1 s) as still being written.
    find "$DIR" -name '*.wav' -exec touch -d '-10 seconds' {} +
    touch "$DIR.done"
fi

# Before each run: no outputs (etl's variants would be inputs to the Python pool) and no manifest.
clean="find $(printf %q "$DIR") -name '*-transformed*.wav' -delete; rm -f $(printf %q "$DIR")/metadata.csv; sync"
d=$(printf %q "$DIR")
hyperfine --runs "$RUNS" --prepare "$clean" \
    --export-json "$DIR.json" \
    -n "etl --variants 3 -j $JOBS" \
    "$ETL run $d --variants 3 --snr-db 10..20 --seed 1 -j $JOBS -q --manifest $d/metadata.csv" \
    -n "etl --variants 3 -j $JOBS --no-fsync" \
    "$ETL run $d --variants 3 --snr-db 10..20 --seed 1 -j $JOBS -q --no-fsync --manifest $d/metadata.csv" \
    -n "python pool -j $JOBS, 3 runs" \
    "for k in 0 1 2; do $PYTHON bench/reference_pool.py $d -j $JOBS >/dev/null; done"
