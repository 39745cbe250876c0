#!/usr/bin/env python3
"""Writes the speech-corpus workload: COUNT WAV files, 16 kHz 16-bit mono, durations drawn
uniformly from 1 to 20 s with a fixed seed (3000 files: about 1 GB), named utt00000.wav, ...

The samples are a tone under noise at about -12 dBFS, so that the outputs clip rarely, like
speech. Files that exist with the right size are kept, so a second call only checks.

Usage: speech_corpus.py DIR [COUNT=3000] [SEED=12]
"""
import os
import struct
import sys

import numpy as np

out, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3000
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 12
rate = 16000
rng = np.random.default_rng(seed)
durations = rng.uniform(1.0, 20.0, count)
os.makedirs(out, exist_ok=True)
total = 0
for i, seconds in enumerate(durations):
    frames = int(seconds * rate)
    path = os.path.join(out, f"utt{i:05d}.wav")
    size = 44 + 2 * frames
    total += size
    if os.path.exists(path) and os.path.getsize(path) == size:
        continue
    t = np.arange(frames) / rate
    x = 0.15 * np.sin(2 * np.pi * (150 + 10 * (i % 30)) * t) + rng.normal(0, 0.08, frames)
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(pcm))
    with open(path + ".part", "wb") as f:
        f.write(header + pcm)
    os.replace(path + ".part", path)
print(f"{count} files, {total / 1e9:.2f} GB, {durations.sum() / 3600:.1f} h in {out}")
