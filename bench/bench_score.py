"""Seconds the Eluvio metrics take on the 64 MovieScenes movies at their real shot counts.

1. ``metrics.evaluate`` on arrays (random labels at the published 7.65% boundary rate,
   probabilities with some signal), plus ``choose_threshold`` for F1 and Miou on the same movies.
2. ``sceneseg score`` end to end on ``--pickles`` real-size pickles (full feature widths, as the
   loader validates them), i.e. allow-list unpickling + validation + metrics, per movie.

    .venv/bin/python bench/bench_score.py [--pickles 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sceneseg.data.movies import END_FRAME_KEY, FEATURE_DIMS, GT_KEY, PRED_KEY
from sceneseg.data.validate import load_manifest
from sceneseg.evaluation import score
from sceneseg.evaluation import metrics


def fake_labels(n_shots: dict[str, int], seed: int = 0) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    gt, prob, ends = {}, {}, {}
    for name, n in n_shots.items():
        g = rng.random(n - 1) < 0.0765
        gt[name] = g
        prob[name] = np.clip(rng.beta(1, 8, n - 1) + g * rng.random(n - 1) * 0.6, 0, 1).astype(np.float32)
        ends[name] = np.cumsum(rng.integers(24, 200, n))
    return gt, prob, ends


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pickles", type=int, default=8, help="real-size pickles to score end to end (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    n_shots = load_manifest()
    gt, prob, ends = fake_labels(n_shots)
    print(f"{len(n_shots)} movies, {sum(n_shots.values())} shots (MovieScenes manifest)")
    t = best_of(args.repeats, lambda: metrics.evaluate(gt, prob, ends))
    print(f"metrics.evaluate, all 64 movies:            {t:.3f} s")
    longest = max(n_shots, key=n_shots.get)
    g, p, e = gt[longest], prob[longest], ends[longest]
    t = best_of(args.repeats * 10, lambda: metrics.miou(g, p >= 0.5, e))
    print(f"metrics.miou, one {n_shots[longest]}-shot movie:       {t * 1e3:.2f} ms")
    t = best_of(args.repeats, lambda: metrics.choose_threshold(gt, prob, metric="f1"))
    print(f"choose_threshold f1 (99 thresholds, pooled): {t:.3f} s")
    t = best_of(1, lambda: metrics.choose_threshold(gt, prob, metric="miou", shot_end_frame=ends))
    print(f"choose_threshold miou (99 thresholds):       {t:.3f} s")

    if args.pickles > 0:
        names = list(n_shots)[: args.pickles]
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                n = n_shots[name]
                d = {"imdb_id": name, GT_KEY: torch.from_numpy(gt[name]), PRED_KEY: torch.from_numpy(prob[name]),
                     END_FRAME_KEY: torch.from_numpy(ends[name])}
                d.update({m: torch.rand(n, dim) for m, dim in FEATURE_DIMS.items()})
                with open(Path(tmp) / f"{name}.pkl", "wb") as f:
                    pickle.dump(d, f)
            shots = sum(n_shots[k] for k in names)
            t = best_of(args.repeats, lambda: score.score_folder(Path(tmp)))
            print(f"sceneseg score, {len(names)} real-size pickles ({shots} shots): {t:.2f} s "
                  f"({t / len(names):.3f} s per movie; 64 movies ~ {t / shots * sum(n_shots.values()):.1f} s)")


if __name__ == "__main__":
    main()
