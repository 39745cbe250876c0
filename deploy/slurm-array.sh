#!/bin/bash
# audio-etl as a Slurm job array: 4 tasks, one shard each, over a folder on a
# shared file system that every node mounts at the same path.
#
#   SOUNDS=/shared/sounds sbatch deploy/slurm-array.sh
#
# Run from a directory on the shared file system: each task writes
# reports/shard-N.jsonl under it. Merge them afterwards with
#   cat reports/shard-*.jsonl > report.jsonl
# The same --seed gives the same output bytes as one run over the whole
# folder, however it is split. To change the number of shards N, change only
# --array to 0-(N-1): the shard count comes from $SLURM_ARRAY_TASK_COUNT.
#
#SBATCH --job-name=audio-etl
#SBATCH --array=0-3
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=1G
#SBATCH --time=01:00:00
#SBATCH --output=etl-%A_%a.out

set -euo pipefail

SOUNDS="${SOUNDS:-/shared/sounds}"
mkdir -p reports

# Plain exec: etl replaces this shell, so its exit code is the task's. At the
# time limit (or scancel) Slurm sends SIGTERM to the job's processes, then
# SIGKILL after KillWait (a cluster setting, 30 s by default). etl stops its
# workers, removes its temp files and exits 143 within ~10 s, so nothing is
# left half-written. Resubmitting the array is safe: finished outputs are
# skipped. Exit 75 means another run holds this shard's lock: resubmit later.
# Each report ends with a summary line for its shard.
exec etl run "$SOUNDS" -r -j "$SLURM_CPUS_PER_TASK" --seed 42 \
    --shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" \
    --report "reports/shard-$SLURM_ARRAY_TASK_ID.jsonl"
