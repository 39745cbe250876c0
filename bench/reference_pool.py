#!/usr/bin/env python3
"""Reference implementation that `etl run` is benchmarked against.

This is the seed program (numpy + scipy + multiprocessing.Pool + pool.map),
made to take a folder.  It is kept deliberately close to the seed so the
comparison is fair.  The only changes from the seed are:

  (a) the noise has ``size=data.shape`` instead of ``size=len(data)``, so
      multichannel files get independent noise per sample instead of a
      broadcast error;
  (b) integer PCM input (e.g. int16) is converted to float32 in [-1, 1)
      (divide by 2**(bits-1)) before the noise is added, and converted back to
      the input's integer type with rounding and clipping afterwards, so the
      output has the input's sample format, the way the Rust tool does.
      float32 input stays float32 (the seed's in-place ``data +=`` keeps the
      array's dtype).

Like the seed, every worker forked by the Pool starts from the same global
numpy RNG state; that only affects which noise is drawn, not the speed.

Usage: python3 bench/reference_pool.py DIR [-j N]
Processes every ``*.wav`` directly in DIR whose name does not end in
``-transformed.wav`` and writes ``<name>-transformed.wav`` next to it.
"""

import argparse
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import scipy.io.wavfile


def etl(filename: str) -> tuple[str, float]:
    start_t = time.perf_counter()
    samplerate, data = scipy.io.wavfile.read(filename)
    in_dtype = data.dtype
    if np.issubdtype(in_dtype, np.signedinteger):
        # (b) integer PCM -> float32 in [-1, 1)
        scale = float(-np.iinfo(in_dtype).min)  # 32768.0 for int16
        data = data.astype(np.float32) / np.float32(scale)
    elif not np.issubdtype(in_dtype, np.floating):
        raise ValueError(f"{filename}: unsupported sample type {in_dtype}")
    eps = .1
    data += np.random.normal(scale=eps, size=data.shape)  # (a) was size=len(data)
    data = np.clip(data, -1.0, 1.0)
    if np.issubdtype(in_dtype, np.signedinteger):
        # (b) back to the input's integer type, rounded and clipped
        info = np.iinfo(in_dtype)
        data = np.clip(np.rint(data * np.float32(scale)), info.min, info.max).astype(in_dtype)
    new_filename = filename.removesuffix(".wav") + "-transformed.wav"
    scipy.io.wavfile.write(new_filename, samplerate, data)
    end_t = time.perf_counter()
    return filename, end_t - start_t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="folder of .wav files")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count(),
                        help="worker processes (default: number of CPUs)")
    args = parser.parse_args()

    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"reference_pool.py: {folder} is not a directory", file=sys.stderr)
        return 2
    filenames = sorted(
        str(p) for p in folder.glob("*.wav")
        if p.is_file() and not p.name.endswith("-transformed.wav")
    )
    if not filenames:
        print(f"reference_pool.py: no input .wav files in {folder}", file=sys.stderr)
        return 2

    start_t = time.perf_counter()
    with Pool(processes=args.jobs) as pool:
        results = pool.map(etl, filenames)
    for filename, duration in results:
        print(f"{filename} completed in {duration:.2f}s")
    end_t = time.perf_counter()
    print(f"etl took {end_t - start_t:.2f}s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
