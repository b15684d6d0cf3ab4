"""Which LGSS recipe learns reliably: the published one against variants, on one synthetic set.

    .venv/bin/python bench/bench_lgss_recipes.py --set noisy --epochs 10 --seeds 0
    .venv/bin/python bench/bench_lgss_recipes.py --variants published lr1e-3 ...

Each variant changes one thing of the published recipe (``lgss`` section of params.yaml) and
trains on the same set, split and seed; printed: first and kept-epoch train loss, validation
loss of the kept epoch, validation AP and test AP / Miou (at the validation threshold), next to
the stacked reference and the shipped prediction on the same test movies.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import SETS, prepare, score  # noqa: E402

from sceneseg.config import load_params  # noqa: E402
from sceneseg.models import get_model  # noqa: E402
from sceneseg.stacked import fit_stacked  # noqa: E402

VARIANTS = {  # name -> (lgss overrides, train overrides)
    "published": ({}, {}),
    "lr1e-3": ({"lr": 1e-3}, {}),
    "lr1e-3 no-decay": ({"lr": 1e-3, "lr_decay_epochs": []}, {}),
    "unscaled": ({"scale_inputs": False}, {}),
    "weights 1:1": ({"class_weights": [1.0, 1.0]}, {}),
    "batch 32": ({}, {"batch_size": 32}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="noisy", choices=list(SETS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
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
                      params.models["lgss"].modalities, tuple(e.stacked_widths))
    print(f"{args.set}: stacked {score(test, ref.predict(test), ref.threshold, e.fps, e.recall_window_s)}")
    kind = get_model("lgss")
    print("| variant | seed | train loss (epoch 1 -> kept) | kept epoch | val loss | val AP | test AP | test Miou |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.variants:
        own_over, train_over = VARIANTS[name]
        own = dataclasses.replace(params.models["lgss"], **own_over)
        for seed in args.seeds:
            common = dataclasses.replace(params.train, model="lgss", epochs=args.epochs, seed=seed, **train_over)
            tr = kind.train(data, own, common, torch.device("cpu"), progress=False)
            val = kind.predict(tr.model, tr.config, data.movies("val"), torch.device("cpu"), 256)
            mask = data.owned("val")
            from sklearn.metrics import average_precision_score
            vg = np.concatenate([np.asarray(m.boundary)[mask[m.imdb_id]] for m in data.movies("val")])
            vp = np.concatenate([val[m.imdb_id][mask[m.imdb_id]] for m in data.movies("val")])
            res = score(test, kind.predict(tr.model, tr.config, test, torch.device("cpu"), 256), tr.threshold,
                        e.fps, e.recall_window_s)
            print(f"| {name} | {seed} | {tr.train_loss[0]:.3f} -> {tr.train_loss[tr.best_epoch - 1]:.3f} | "
                  f"{tr.best_epoch} | {tr.val_loss[tr.best_epoch - 1]:.3f} | {average_precision_score(vg, vp):.3f} | "
                  f"{res['AP']:.3f} | {res['Miou']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
