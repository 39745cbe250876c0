#!/usr/bin/env python3
"""Soak benchmark for `etl watch`: feeds the watcher many short files on tmpfs in bursts and records
the supervisor's resident memory, open file descriptors and threads over time, and worker restarts.

    bench/soak_watch.py [--files 100000] [--burst 1000] [--etl target/release/etl] [--dir /dev/shm]

Each burst is written into a staging folder and renamed into the watched folder (so every file is
complete when it appears); once the burst's outputs are all there, inputs and outputs are removed,
so tmpfs use stays small however many files go through. A sample is taken after every burst; the
curve goes to soak.csv (in the working folder) and a summary is printed as a Markdown table.
"""

import argparse
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request


def tone(path, frames):
    """A mono f32 WAV of `frames` frames of a quiet ramp."""
    data = b"".join(struct.pack("<f", 0.001 * (i % 100)) for i in range(frames))
    fmt = struct.pack("<HHIIHH", 3, 1, 44100, 44100 * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def proc_figures(pid):
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kib, fds, threads


def metric(url, name):
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=441, help="frames per file (441: 10 ms)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--etl", default="target/release/etl")
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--port", type=int, default=19464)
    args = ap.parse_args()

    root = os.path.join(args.dir, f"etl-soak-{os.getpid()}")
    inbox, staging = os.path.join(root, "in"), os.path.join(root, "staging")
    os.makedirs(inbox)
    os.makedirs(staging)
    source = os.path.join(root, "source.wav")
    tone(source, args.frames)
    url = f"http://127.0.0.1:{args.port}/metrics"
    cmd = [args.etl, "-q", "watch", inbox, "--seed", "1", "-j", str(args.jobs), "--settle", "200ms",
           "--no-fsync", "--metrics", f"127.0.0.1:{args.port}"]
    watcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    time.sleep(1.0)
    start = time.time()
    samples = []
    done = 0
    try:
        with open("soak.csv", "w") as csv:
            csv.write("seconds,files,rss_kib,fds,threads,restarts\n")
            rss, fds, threads = proc_figures(watcher.pid)
            samples.append((0.0, 0, rss, fds, threads, 0))
            csv.write(f"0.0,0,{rss},{fds},{threads},0\n")
            burst_no = 0
            while done < args.files:
                n = min(args.burst, args.files - done)
                names = [f"f{burst_no}_{i}.wav" for i in range(n)]
                for name in names:
                    shutil.copyfile(source, os.path.join(staging, name))
                for name in names:
                    os.rename(os.path.join(staging, name), os.path.join(inbox, name))
                outputs = [os.path.join(inbox, name[:-4] + "-transformed.wav") for name in names]
                deadline = time.time() + 600
                while not all(os.path.exists(o) for o in outputs):
                    if watcher.poll() is not None or time.time() > deadline:
                        sys.exit(f"etl watch stopped or stalled at burst {burst_no}")
                    time.sleep(0.05)
                for name, out in zip(names, outputs):
                    os.remove(os.path.join(inbox, name))
                    os.remove(out)
                done += n
                burst_no += 1
                rss, fds, threads = proc_figures(watcher.pid)
                restarts = metric(url, "etl_worker_restarts_total") or 0
                row = (round(time.time() - start, 1), done, rss, fds, threads, int(restarts))
                samples.append(row)
                csv.write(",".join(map(str, row)) + "\n")
                csv.flush()
                print(f"{row[0]:8.1f}s {done:7d} files  RSS {rss / 1024:6.1f} MiB  fds {fds}  threads {threads}",
                      flush=True)
    finally:
        watcher.send_signal(signal.SIGTERM)
        code = watcher.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.time() - start
    print(f"\netl watch exited {code}; {done} files in {elapsed:.0f} s ({done / elapsed:.0f} files/s)\n")
    print("| files | seconds | supervisor RSS (MiB) | fds | threads | worker restarts |")
    print("|---:|---:|---:|---:|---:|---:|")
    step = max(1, len(samples) // 10)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        print(f"| {s[1]} | {s[0]} | {s[2] / 1024:.1f} | {s[3]} | {s[4]} | {s[5]} |")


if __name__ == "__main__":
    main()
