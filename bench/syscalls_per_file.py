#!/usr/bin/env python3
"""System calls per file of one `etl run`, split by process: the supervisor (and its threads)
versus the workers (and theirs). Robust to a noisy machine, unlike wall time.

Usage: syscalls_per_file.py N TRACE
  N      the number of files the run transformed
  TRACE  the output of `strace -f -o TRACE etl run ...` (one line per call, prefixed by the tid)

Prints a markdown table: system call, calls per file in the supervisor, in the workers, and the
total; the calls made once per run (startup, exit) are included, so N should be large (>= 1000).
"""
import collections
import re
import sys

n, path = int(sys.argv[1]), sys.argv[2]
line_re = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()")
ret_re = re.compile(r"=\s+(-?\d+|\?)")
group = {}      # tid -> the pid of its process (thread group)
role = {}       # process pid -> "supervisor" | "worker" | "other"
counts = {"supervisor": collections.Counter(), "worker": collections.Counter()}
errors = {"supervisor": collections.Counter(), "worker": collections.Counter()}
root = None
for line in open(path, errors="replace"):
    m = line_re.match(line)
    if not m:
        continue
    tid = int(m.group(1))
    if root is None:
        root = tid
        group[tid] = tid
        role[tid] = "supervisor"
    resumed, name = m.group(2), m.group(3)
    g = group.setdefault(tid, tid)
    if name in ("clone", "clone3", "vfork", "fork") or resumed in ("clone", "clone3", "vfork"):
        r = re.search(r"=\s+(\d+)\s*$", line)
        if r:
            child = int(r.group(1))
            if "CLONE_THREAD" in line:
                group[child] = g
            else:
                group[child] = child
                role[child] = "spawned"
    if (name == "execve" or resumed == "execve") and role.get(g) == "spawned" \
            and re.search(r"=\s+0\s*$", line):
        role[g] = "worker"
    if resumed and not name:
        continue  # counted at its start
    who = role.get(g, "other")
    if who == "spawned":
        who = "supervisor"  # between fork and exec: the supervisor's spawning cost
    if who not in counts:
        continue
    counts[who][name] += 1
    if re.search(r"=\s+-1\s+E", line):
        errors[who][name] += 1

names = sorted(set(counts["supervisor"]) | set(counts["worker"]),
               key=lambda s: -(counts["supervisor"][s] + counts["worker"][s]))
print(f"| system call | supervisor / file | workers / file | total / file |")
print("|---|---:|---:|---:|")
for s in names:
    a, b = counts["supervisor"][s], counts["worker"][s]
    if (a + b) / n < 0.05:
        continue
    fail = errors["supervisor"][s] + errors["worker"][s]
    label = s + (f" ({fail / n:.2f} failing)" if fail / n >= 0.05 else "")
    print(f"| {label} | {a / n:.2f} | {b / n:.2f} | {(a + b) / n:.2f} |")
ta, tb = sum(counts["supervisor"].values()), sum(counts["worker"].values())
print(f"| **all** | **{ta / n:.1f}** | **{tb / n:.1f}** | **{(ta + tb) / n:.1f}** |")
