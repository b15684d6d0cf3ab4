"""Which LGSS recipe learns reliably: the published one against variants, on one synthetic set.

    .venv/bin/python bench/bench_lgss_recipes.py --set easy_noisy --epochs 10 --seeds 0 1 2 \
        --variants published lr1e-3 "lr1e-3 shots 8"
    .venv/bin/python bench/bench_lgss_recipes.py --variants small "small unscaled" "lr1e-3 small centred" ...

Each variant changes the published recipe (``lgss`` section of params.yaml, ``train.batch_size``,
``lgss.shot_num``, formerly ``featurize.shot_num``) in one or two ways and trains on the same set, split and seed; a
`` centred`` suffix also subtracts the training shots' mean from every movie's features. Printed
per run: first and kept-epoch train loss, the range of the validation loss over the epochs, the
kept epoch, AP on the transitions owned by the train windows (how well it fits) and by the
validation windows, test AP / Miou (at the validation threshold) and minutes; before them the
stacked reference on the same test movies. Results: bench/RESULTS_lgss_recipes.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import SETS, prepare, score  # noqa: E402

from sceneseg.config import load_params  # noqa: E402
from sceneseg.models.references.stacked import fit_stacked  # noqa: E402
from sceneseg.models.registry import get_model, model_params  # noqa: E402

SMALL = {"sim_channel": 64, "lstm_hidden": 64}
VARIANTS = {  # name -> (lgss overrides, train overrides, lgss.shot_num or None)
    "published": ({}, {}, None),
    "lr1e-3": ({"lr": 1e-3}, {}, None),
    "lr1e-3 no-decay": ({"lr": 1e-3, "lr_decay_epochs": []}, {}, None),
    "unscaled": ({"scale_inputs": False}, {}, None),
    "weights 1:1": ({"class_weights": [1.0, 1.0]}, {}, None),
    "batch 32": ({}, {"batch_size": 32}, None),
    "lr1e-3 batch 32": ({"lr": 1e-3}, {"batch_size": 32}, None),
    "lr1e-3 wd 1e-2": ({"lr": 1e-3, "weight_decay": 1e-2}, {}, None),
    "lr1e-3 small": ({"lr": 1e-3, **SMALL}, {}, None),  # 64 conv channels, 64 LSTM units
    "lr1e-3 small shots 8": ({"lr": 1e-3, **SMALL}, {}, 8),  # 4 shots each side
    "lr1e-3 shots 8": ({"lr": 1e-3}, {}, 8),
    "lr1e-3 small shots 16": ({"lr": 1e-3, **SMALL}, {}, 16),
    "published shots 8": ({}, {}, 8),
    "small": (SMALL, {}, None),
    "small weights 1:1": ({**SMALL, "class_weights": [1.0, 1.0]}, {}, None),
    "small lr1e-3 batch 32": ({**SMALL, "lr": 1e-3}, {"batch_size": 32}, None),
    "small lr1e-4": ({**SMALL, "lr": 1e-4}, {}, None),
    "small lr1e-3 last": ({**SMALL, "lr": 1e-3, "select_epoch": "last"}, {}, None),
    "small unscaled": ({**SMALL, "scale_inputs": False}, {}, None),
    "small lr1e-3 unscaled": ({**SMALL, "lr": 1e-3, "scale_inputs": False}, {}, None),
}
CENTRED = " centred"  # suffix: every movie's features minus the training shots' mean per dimension


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="easy_noisy", choices=list(SETS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS) + [v + CENTRED for v in VARIANTS],
                    metavar="NAME", help=f"among: {', '.join(VARIANTS)} (each also with the suffix '{CENTRED}')")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_models"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params()
    data, test, _ = prepare(args.set, args.workdir, params)
    e = params.evaluate
    ref = fit_stacked(data.movies("train"), data.owned("train"), data.movies("val"), data.owned("val"),
                      model_params(params, "lgss").modalities, tuple(e.stacked_widths))
    print(f"{args.set}: stacked {score(test, ref.predict(test), ref.threshold, e.fps, e.recall_window_s)}")
    kind = get_model("lgss")
    print("| variant | seed | train loss (epoch 1 -> kept) | val loss (min - max) | kept epoch | train AP | val AP "
          "| test AP | test Miou | minutes |")
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.variants:
        own_over, train_over, shot_num = VARIANTS[name.removesuffix(CENTRED)]
        own = dataclasses.replace(model_params(params, "lgss"), **own_over,
                                  **({} if shot_num is None else {"shot_num": shot_num}))
        d = data
        movies = test
        if name.endswith(CENTRED):
            d, movies = _centred(d, test)
        for seed in args.seeds:
            t0 = time.perf_counter()
            common = dataclasses.replace(params.train, model="lgss", epochs=args.epochs, seed=seed, **train_over)
            tr = kind.train(d, own, common, torch.device("cpu"), progress=False)
            owned_ap = {part: _owned_ap(kind, tr, d, part) for part in ("train", "val")}
            res = score(test, kind.predict(tr.model, tr.config, movies, torch.device("cpu"), 256), tr.threshold,
                        e.fps, e.recall_window_s)
            print(f"| {name} | {seed} | {tr.train_loss[0]:.3f} -> {tr.train_loss[tr.best_epoch - 1]:.3f} | "
                  f"{min(tr.val_loss):.3f} - {max(tr.val_loss):.3f} | {tr.best_epoch} | {owned_ap['train']:.3f} | "
                  f"{owned_ap['val']:.3f} | {res['AP']:.3f} | {res['Miou']:.3f} | "
                  f"{(time.perf_counter() - t0) / 60:.1f} |", flush=True)


def _centred(data, test: list) -> tuple:
    """The same data with every movie's features minus the mean of the training shots (per dimension)."""
    train = data.movies("train")
    mean = {k: np.concatenate([m.features[k] for m in train]).mean(0) for k in train[0].features}

    def centre(m):
        return dataclasses.replace(m, features={k: v - mean[k] for k, v in m.features.items()})

    shifted = {m.imdb_id: centre(m) for part in ("train", "val", "test") for m in data.movies(part)}
    return dataclasses.replace(data, _movies=shifted), [centre(m) for m in test]


def _owned_ap(kind, tr, data, part: str) -> float:
    """AP over the transitions that the ``part`` windows own (train AP: how well the model fits)."""
    movies = data.movies(part)
    prob = kind.predict(tr.model, tr.config, movies, torch.device("cpu"), 256)
    mask = data.owned(part)
    gt = np.concatenate([np.asarray(m.boundary)[mask[m.imdb_id]] for m in movies])
    return float(average_precision_score(gt, np.concatenate([prob[m.imdb_id][mask[m.imdb_id]] for m in movies])))


if __name__ == "__main__":
    main()
