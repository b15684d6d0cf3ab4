"""Seconds and memory of the default model's similarity features on a real-size set.

    .venv/bin/python bench/bench_features.py [--movies 64] [--threads 1]

Generates movies with the real shot counts of ``sceneseg/moviescenes_manifest.csv`` and the real
feature dimensions (one at a time: generating them is not timed), then times
``transition_features`` with simseq's widths from params.yaml on each, as train, evaluate and
``sceneseg predict`` compute them. Prints the total seconds, the slowest movie and the peak
memory that the features allocate (tracemalloc: numpy's arrays), next to the size of the input.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from sceneseg.config import load_params
from sceneseg.simfeatures import transition_features
from sceneseg.synthetic import generate_movie
from sceneseg.validate import load_manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movies", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml").models["simseq"]
    sizes = list(load_manifest().values())[: args.movies]
    total, slowest, peak, peak_input = 0.0, (0.0, 0), 0, 0
    for i, n in enumerate(sizes):
        d = generate_movie(np.random.default_rng(i), f"tt{i:07d}", n)
        feats = {m: d[m].numpy() for m in p.modalities}
        tracemalloc.start()
        t0 = time.perf_counter()
        transition_features(feats, tuple(p.widths), tuple(p.cross_widths))
        dt = time.perf_counter() - t0
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        peak_input = max(peak_input, sum(a.nbytes for a in feats.values()))
        total += dt
        slowest = max(slowest, (dt, n))
    print(f"{len(sizes)} movies, {sum(sizes):,} shots, widths {p.widths}, cross widths {p.cross_widths}: "
          f"features {total:.1f} s in all ({1e3 * total / sum(sizes):.2f} ms per shot); slowest movie "
          f"{slowest[1]} shots {slowest[0]:.2f} s; peak memory of the features "
          f"{peak / 2**20:.0f} MiB (largest movie's input {peak_input / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
