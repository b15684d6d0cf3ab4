"""Seconds `sceneseg predict` takes for all transitions of one long movie at the real sizes.

A 3,000-shot movie (features 2048/512/512/512, random), a randomly initialised LGSS of the published
size (512 channels, LSTM hidden 512, fc 100, seq_len 10), saved and loaded as a real checkpoint.
Times the whole command path (find, load, check, predict, scenes; JSON formatting included) on
the chosen device, for a few batch sizes.

    .venv/bin/python bench/bench_predict.py [--shots 3000] [--device auto] [--batch-sizes 64,256,1024] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sceneseg.checkpoint import save_checkpoint
from sceneseg.model import LGSS, ModelConfig
from sceneseg.movies import FEATURE_DIMS, Movie, save_movie
from sceneseg.predict import format_json, predict_input


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=3000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-sizes", default="64,256,1024")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (as `sceneseg predict --threads`); 0 = torch's default")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        feats = {m: np.abs(rng.normal(size=(a.shots, d))).astype(np.float32) for m, d in FEATURE_DIMS.items()}
        save_movie(Movie("tt0000001", feats, shot_end_frame=np.cumsum(rng.integers(24, 240, a.shots))), tmp)
        cfg = ModelConfig(feature_dims=dict(FEATURE_DIMS),
                          fusion_weights={"place": 0.5, "cast": 0.2, "action": 0.2, "audio": 0.1})
        torch.manual_seed(0)
        save_checkpoint(tmp / "model.pt", LGSS(cfg), cfg, 10, 0.5, "fixed", params={}, commit="bench")
        print(f"movie: {a.shots} shots ({a.shots - 1} transitions); model: sim_channel {cfg.sim_channel}, "
              f"lstm_hidden {cfg.lstm_hidden}, fc_hidden {cfg.fc_hidden}, seq_len 10; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        for bs in [int(x) for x in a.batch_sizes.split(",")]:
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                doc = predict_input(tmp / "tt0000001", tmp / "model.pt", device_name=a.device, batch_size=bs)
                format_json(doc)
                times.append(time.perf_counter() - t0)
            m = doc["movies"][0]
            print(f"batch {bs:5d}: {min(times):6.2f} s best of {a.repeats} ({', '.join(f'{t:.2f}' for t in times)}) "
                  f"on {doc['device']}; {(a.shots - 1) / min(times):,.0f} transitions/s; {m['n_scenes']} scenes")


if __name__ == "__main__":
    main()
