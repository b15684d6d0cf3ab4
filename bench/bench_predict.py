"""Seconds `sceneseg predict` takes for all transitions of one long movie at the real sizes.

A 3,096-shot movie (the longest of MovieScenes; a realistic synthetic one, features
2048/512/512/512 and the shipped prediction), converted to a movie folder, and a model saved and
loaded as a real checkpoint:

- ``--model simseq`` (default): the default model at its default size (params.yaml ``simseq``),
  its GRU randomly initialised and its boosted trees (``tree_iters`` of them, with and without the
  shipped input) fitted on another synthetic real-size movie, so the trees have their real depth;
- ``--model lgss``: a randomly initialised LGSS of the published size (512 channels, LSTM hidden
  512, fc 100, seq_len 10).

Times the whole command path (find, load, check, similarity features, forward, scenes; JSON
formatting included) on the chosen device, for a few batch sizes (LGSS's windows; the default
model reads the whole movie at once).

    .venv/bin/python bench/bench_predict.py [--model simseq] [--shots 3096] [--device auto] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from sceneseg.checkpoint import save_checkpoint
from sceneseg.config import load_params
from sceneseg.model import LGSS, ModelConfig
from sceneseg.models.simseq import SimSeqTrees, movie_features, tree_inputs
from sceneseg.models.trees import TreeEnsemble
from sceneseg.movies import END_FRAME_KEY, FEATURE_DIMS, GT_KEY, PRED_KEY, Movie, save_movie
from sceneseg.predict import format_json, predict_input
from sceneseg.synthetic import generate_movie

ROOT = Path(__file__).resolve().parents[1]


def synthetic(imdb_id: str, n: int, seed: int) -> Movie:
    d = generate_movie(np.random.default_rng(seed), imdb_id, n)
    return Movie(imdb_id, {m: d[m].numpy() for m in FEATURE_DIMS}, d[GT_KEY].numpy().astype(bool),
                 d[END_FRAME_KEY].numpy(), d[PRED_KEY].numpy())


def simseq_model(shots: int) -> tuple[torch.nn.Module, dict]:
    """The default model, its trees fitted on the features of a synthetic movie of ``shots`` shots."""
    p = load_params(ROOT / "params.yaml").models["simseq"]
    cfg = {"feature_dims": {m: FEATURE_DIMS[m] for m in p.modalities}, "widths": list(p.widths),
           "cross_widths": list(p.cross_widths), "use_shipped": p.use_shipped, "hidden": p.hidden,
           "dropout": p.dropout, "trees": {"context": p.tree_context}}
    movie = synthetic("tt0000002", shots, 1)
    x = tree_inputs(torch.from_numpy(movie_features(movie, cfg, True)), cfg).numpy()
    fits = [TreeEnsemble.from_classifier(HistGradientBoostingClassifier(
        max_iter=p.tree_iters, learning_rate=p.tree_lr, early_stopping=False, random_state=0).fit(cols, movie.boundary))
        for cols in (x, x[:, :-1])]
    cfg["trees"]["shape"], cfg["trees"]["bare_shape"] = list(fits[0].feature.shape), list(fits[1].feature.shape)
    torch.manual_seed(0)
    model = SimSeqTrees(cfg)
    model.trees.load_state_dict(fits[0].state_dict())
    model.bare.load_state_dict(fits[1].state_dict())
    return model, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["simseq", "lgss"], default="simseq")
    ap.add_argument("--shots", type=int, default=3096)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-sizes", default="256")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (as `sceneseg predict --threads`); 0 = torch's default")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_movie(synthetic("tt0000001", a.shots, 0), tmp)
        if a.model == "simseq":
            model, cfg = simseq_model(a.shots)
            about = (f"simseq: GRU hidden {cfg['hidden']}, widths {cfg['widths']}, cross widths {cfg['cross_widths']}, "
                     f"trees {cfg['trees']['shape']} and {cfg['trees']['bare_shape']} (trees x nodes)")
        else:
            cfg = ModelConfig(feature_dims=dict(FEATURE_DIMS),
                              fusion_weights={"place": 0.5, "cast": 0.2, "action": 0.2, "audio": 0.1})
            torch.manual_seed(0)
            model = LGSS(cfg)
            about = (f"lgss: sim_channel {cfg.sim_channel}, lstm_hidden {cfg.lstm_hidden}, fc_hidden {cfg.fc_hidden}, "
                     f"seq_len 10")
            cfg = {"net": cfg.to_dict(), "seq_len": 10}
        save_checkpoint(tmp / "model.pt", a.model, model, cfg, 0.5, "fixed", params={}, commit="bench")
        print(f"movie: {a.shots} shots ({a.shots - 1} transitions); model {about}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
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
