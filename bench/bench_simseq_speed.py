"""Projected time of 30 real-size epochs of simseq (the default model) on this CPU, next to LGSS.

    .venv/bin/python bench/bench_simseq_speed.py [--threads 1] [--movies 6]

Real size: the 64 movies of sceneseg/moviescenes_manifest.csv (106,041 shots), the seed's split
(57 train movies: 92,958 transitions, 80% of them train, 20% validation). Measured here on
``--movies`` synthetic movies with manifest shot counts at the real dimensions: (1) the
similarity features per shot (computed once per run for all 64 movies), (2) one training step at
batch 8 crops of ``simseq.crop_len`` transitions, (3) a validation pass (whole movies, no
gradient) per transition. The projection multiplies each by its real-size count.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from sceneseg.config import load_params
from sceneseg.models.simseq import SimSeqNet, _weighted_bce, movie_features
from sceneseg.movies import Movie
from sceneseg.synthetic import generate_movie
from sceneseg.validate import load_manifest

N_SHOTS, TRAIN_MOVIE_TRANSITIONS, N_TRAIN_MOVIES, EPOCHS = 106_041, 92_958, 57, 30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--movies", type=int, default=6, help="manifest-sized movies to time the features on")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml").models["simseq"]
    sizes = sorted(load_manifest().values())
    pick = [sizes[i] for i in np.linspace(0, len(sizes) - 1, args.movies).round().astype(int)]
    cfg = {"feature_dims": {"place": 2048, "cast": 512, "action": 512, "audio": 512}, "widths": p.widths,
           "cross_widths": p.cross_widths, "use_shipped": True, "hidden": p.hidden, "dropout": p.dropout}
    feat_s, shots = 0.0, 0
    for i, n in enumerate(pick):
        d = generate_movie(np.random.default_rng(i), f"tt{i:07d}", n)
        movie = Movie(d["imdb_id"], {m: d[m].numpy() for m in cfg["feature_dims"]},
                      baseline=d["scene_transition_boundary_prediction"].numpy())
        t0 = time.perf_counter()
        movie_features(movie, cfg, True)
        feat_s += time.perf_counter() - t0
        shots += n
    feat_total = feat_s / shots * N_SHOTS
    print(f"features: {shots} shots in {feat_s:.2f} s -> all 64 movies {feat_total:.0f} s (once per run)")

    torch.manual_seed(0)
    net = SimSeqNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    n_in = net.mean.numel()
    x, y = torch.randn(8, p.crop_len, n_in), (torch.rand(8, p.crop_len) < 0.08).float()
    mask = torch.ones_like(y)
    for i in range(args.steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        s, w = _weighted_bce(net(x), y, mask, (1.0, 3.0))
        opt.zero_grad()
        (s / w).backward()
        opt.step()
    step_s = (time.perf_counter() - t0) / args.steps
    train_trans = 0.8 * TRAIN_MOVIE_TRANSITIONS
    steps = math.ceil((train_trans / p.crop_len + N_TRAIN_MOVIES) / 8)  # crops tile every movie, batch 8
    with torch.no_grad():
        net.eval()
        long = torch.randn(1, 1657, n_in)  # a movie of the mean length
        t0 = time.perf_counter()
        for _ in range(5):
            net(long)
        infer_per_trans = (time.perf_counter() - t0) / 5 / 1657
    epoch_s = steps * step_s + TRAIN_MOVIE_TRANSITIONS * infer_per_trans  # val pass runs the whole train movies
    print(f"train step (batch 8 x {p.crop_len} transitions): {step_s * 1e3:.1f} ms; {steps} steps per real-size epoch")
    print(f"validation: {infer_per_trans * 1e6:.1f} us per transition")
    print(f"projected: one epoch {epoch_s:.0f} s; {EPOCHS} epochs {EPOCHS * epoch_s / 60:.1f} min "
          f"+ features {feat_total / 60:.1f} min = {(EPOCHS * epoch_s + feat_total) / 60:.1f} min "
          f"({args.threads} thread{'s' if args.threads > 1 else ''})")


if __name__ == "__main__":
    main()
