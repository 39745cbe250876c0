#!/bin/bash
# Usage: bash bench/peak_rss.sh COMMAND...  (for example: bench/peak_rss.sh target/release/etl run DIR -j 2 -q)
# Runs COMMAND and prints the largest VmHWM (KiB) seen among its child processes (the workers),
# sampled every 20 ms, and its own (the supervisor).
"$@" >/dev/null 2>&1 &
pid=$!
max=0; own=0
while kill -0 $pid 2>/dev/null; do
  for c in $(pgrep -P $pid); do
    v=$(awk '/VmHWM/ {print $2}' /proc/$c/status 2>/dev/null)
    [[ -n $v && $v -gt $max ]] && max=$v
  done
  v=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null)
  [[ -n $v && $v -gt $own ]] && own=$v
  sleep 0.02
done
echo "workers VmHWM max ${max} KiB; supervisor ${own} KiB"
