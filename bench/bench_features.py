"""Seconds and memory of the default model's similarity features on a real-size set.

    .venv/bin/python bench/bench_features.py [--movies 64] [--threads 1] [--before REV]

Generates movies with the real shot counts of ``sceneseg/moviescenes_manifest.csv`` and the real
feature dimensions (one at a time: generating them is not timed), then times
``transition_features`` with simseq's widths from params.yaml on each, as the features stage,
evaluate and ``sceneseg predict`` compute them. Prints the total seconds, ms per shot, the slowest
movie, the peak memory that the features of the largest movie allocate (tracemalloc: numpy's
arrays; measured in an extra, untimed call) next to the size of its input, and the process's peak
RSS. ``--before REV`` also times ``sceneseg/data/simfeatures.py`` as it was at the git
revision REV on the same movies in the same run (the speed-up as a ratio) and prints the largest
difference between the two.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np
import torch

from sceneseg.config import load_params
from sceneseg.data.simfeatures import transition_features
from sceneseg.data.synthetic import generate_movie
from sceneseg.data.validate import load_manifest
from sceneseg.models.registry import model_params

ROOT = Path(__file__).resolve().parents[1]


def module_at(rev: str) -> types.ModuleType:
    """sceneseg/data/simfeatures.py as it was at the git revision ``rev``."""
    src = subprocess.run(["git", "show", f"{rev}:sceneseg/data/simfeatures.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    mod = types.ModuleType(f"simfeatures_{rev}")
    exec(compile(src, f"{rev}:sceneseg/data/simfeatures.py", "exec"), mod.__dict__)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movies", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--before", default="", help="a git revision whose simfeatures.py to time as well")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = model_params(load_params(ROOT / "params.yaml"), "simseq")
    sizes = list(load_manifest().values())[: args.movies]
    versions = {"now": transition_features}
    if args.before:
        versions[args.before] = module_at(args.before).transition_features
    total = dict.fromkeys(versions, 0.0)
    slowest = dict.fromkeys(versions, (0.0, 0))
    peak = dict.fromkeys(versions, 0)
    # match_k too, as the features stage computes them; left out when comparing with a version before them
    extra = {name: () if args.before else (tuple(p.match_widths),) for name in versions}
    diff = 0.0
    largest = max(range(len(sizes)), key=lambda i: sizes[i])
    for i, n in enumerate(sizes):
        d = generate_movie(np.random.default_rng(i), f"tt{i:07d}", n)
        feats = {m: d[m].numpy() for m in p.modalities}
        out = {}
        for name, fn in versions.items():
            t0 = time.perf_counter()
            out[name] = fn(feats, tuple(p.widths), tuple(p.cross_widths), *extra[name])
            dt = time.perf_counter() - t0
            total[name] += dt
            slowest[name] = max(slowest[name], (dt, n))
            if i == largest:
                tracemalloc.start()
                fn(feats, tuple(p.widths), tuple(p.cross_widths), *extra[name])
                peak[name] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                peak_input = sum(a.nbytes for a in feats.values())
        if args.before:
            diff = max(diff, float(np.abs(out["now"] - out[args.before]).max()))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    print(f"{len(sizes)} movies, {sum(sizes):,} shots, widths {p.widths}, cross widths {p.cross_widths}, "
          f"match widths {[] if args.before else p.match_widths}, "
          f"{args.threads} thread(s); peak RSS of the process {rss:.0f} MiB")
    for name in versions:
        print(f"  {name:>10}: features {total[name]:.1f} s in all ({1e3 * total[name] / sum(sizes):.2f} ms per shot); "
              f"slowest movie {slowest[name][1]} shots {slowest[name][0]:.2f} s; the largest movie's "
              f"({sizes[largest]} shots, input {peak_input / 2**20:.0f} MiB) features allocate at most "
              f"{peak[name] / 2**20:.0f} MiB")
    if args.before:
        print(f"  {args.before} / now: {total[args.before] / total['now']:.1f}x the time; largest difference "
              f"{diff:.1e}")


if __name__ == "__main__":
    main()
