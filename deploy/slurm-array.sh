#!/bin/bash
# audio-etl as a Slurm job array: one task per shard, over a folder on a
# shared file system that every node mounts at the same path.
#
#   SOUNDS=/shared/sounds sbatch deploy/slurm-array.sh
#
# Run from a directory on the shared file system: each task writes
# reports/shard-K.jsonl under it (and its log to etl-JOBID_K.out). Merge them
# afterwards with
#   cat reports/shard-*.jsonl > report.jsonl
# The same --seed gives the same output bytes as one run over the whole
# folder, however it is split.
#
# The number of shards is SHARDS below, and --array must be 0-(SHARDS-1): to
# change it, change both. Task K always takes shard K/SHARDS, so any subset of
# the array can be submitted again (sbatch --array=2, --array=1,3): see
# deploy/README.md. A task outside 0..SHARDS-1 refuses to start (exit 2).
#
# Adapt --cpus-per-task (etl runs one worker per CPU it is given), --mem and
# --time to your nodes, here or on the sbatch command line, which wins over
# these lines: a task asking for more CPUs or memory than a node has stays
# PENDING forever.
#
#SBATCH --job-name=audio-etl
#SBATCH --array=0-3
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=1G
#SBATCH --time=01:00:00
#SBATCH --output=etl-%A_%a.out

set -euo pipefail

SHARDS=4
SOUNDS="${SOUNDS:-/shared/sounds}"

# Refuse a task that would take a shard of another count before any work:
# with --array=0-4 every task stops here, not only task 4, so the folder is
# never split two ways at once.
task="${SLURM_ARRAY_TASK_ID:-}"
last="${SLURM_ARRAY_TASK_MAX:-$task}"
if [ -z "$task" ]; then
    echo "slurm-array.sh: not an array task; submit it with sbatch (--array=0-$((SHARDS - 1)), or --array=K to redo shard K)" >&2
    exit 2
fi
if [ "$task" -ge "$SHARDS" ] || [ "$last" -ge "$SHARDS" ]; then
    echo "slurm-array.sh: array task $last is not a shard of SHARDS=$SHARDS; submit --array within 0-$((SHARDS - 1)), or change SHARDS and --array together" >&2
    exit 2
fi

# One worker per CPU Slurm gave the task.
jobs="${SLURM_CPUS_PER_TASK:-$(nproc)}"
mkdir -p reports

# Plain exec: etl replaces this shell, so its exit code is the task's. At the
# time limit (or scancel) Slurm sends SIGTERM to the job's processes, then
# SIGKILL after KillWait (a cluster setting, 30 s by default). etl stops its
# workers, removes its temp files and exits 143 within ~10 s, so nothing is
# left half-written. Submitting a task again is safe: finished outputs are
# skipped. Exit 75 means another run holds this shard's lock: resubmit later.
# Each report ends with a summary line for its shard.
exec etl run "$SOUNDS" -r -j "$jobs" --seed 42 \
    --shard "$task/$SHARDS" \
    --report "reports/shard-$task.jsonl"
