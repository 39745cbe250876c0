#!/usr/bin/env python3
"""Which flush makes a batch of N small files durable fastest on this machine's disk?

Each round writes N new files of SIZE bytes into a fresh folder (no flush while writing), then
makes them durable with one of these strategies, and finally flushes the folder once:

  per-file fsync     fsync each file right after writing it (etl's default before group commit)
  syncfs             nothing per file; one syncfs() on the output filesystem for the batch
  sfr + fdatasync    sync_file_range(SYNC_FILE_RANGE_WRITE) right after writing each file (starts
                     write-back, does not wait), then fdatasync() of each at commit
  none               no flush at all (what `cp` does): the floor

The strategies run interleaved, round after round, and the median of the rounds is printed, so
that other load on the machine hits them alike. syncfs also writes whatever else is dirty on that
filesystem (other processes' files), which is part of what is measured.

Usage: flush_strategies.py DIR [N=500] [SIZE=44144] [ROUNDS=5]
"""
import ctypes
import os
import shutil
import statistics
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_WRITE = 2


def check(r):
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def batch(root, n, size, strategy):
    folder = os.path.join(root, f"b{time.monotonic_ns()}")
    os.mkdir(folder)
    data = os.urandom(size)
    start = time.perf_counter()
    fds = []
    for i in range(n):
        fd = os.open(os.path.join(folder, f"f{i}.wav"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        if strategy == "per-file fsync":
            os.fsync(fd)
        elif strategy == "sfr + fdatasync":
            check(libc.sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE))
        fds.append(fd)
    if strategy == "syncfs":
        check(libc.syncfs(fds[0]))
    elif strategy == "sfr + fdatasync":
        for fd in fds:
            os.fdatasync(fd)
    if strategy != "none":
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
    for fd in fds:
        os.close(fd)
    took = time.perf_counter() - start
    return took, folder


def main():
    root = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 44144
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    os.makedirs(root, exist_ok=True)
    strategies = ["none", "per-file fsync", "syncfs", "sfr + fdatasync"]
    times = {s: [] for s in strategies}
    os.sync()
    made = []
    for r in range(rounds):
        for s in strategies:
            took, folder = batch(root, n, size, s)
            times[s].append(took)
            made.append(folder)
            # Out of the timed part: the next batch starts with nothing of this one dirty.
            os.sync()
    # Deleted only at the end: on ext4, creating a file scans past the inodes of its group freed
    # in the last 30 s, so deleting each batch would slow down the next (bench/README.md).
    for folder in made:
        shutil.rmtree(folder)
    fs = os.statvfs(root)
    print(f"{n} files x {size} bytes in {root}, {rounds} rounds, median (min-max) seconds:")
    base = statistics.median(times["none"])
    for s in strategies:
        m = statistics.median(times[s])
        print(f"| {s} | {m:.3f} | {min(times[s]):.3f}-{max(times[s]):.3f} | {m / base:.2f}x none | {m / n * 1e3:.3f} ms/file |")


main()
