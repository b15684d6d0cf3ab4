"""How far validation numbers drift from the test movies' under ``split.val_by: window`` and ``movie``.

    .venv/bin/python bench/bench_validation.py [--sets easy_large easy_noisy] [--seeds 0 1 2]

With ``window`` (the seed's protocol) validation windows are random windows of the training
movies: they share movies, scenes and camera set-ups with training windows. With ``movie``
whole movies are held out. For simseq (one run per seed) and the stacked reference this prints,
per protocol: validation AP, the threshold chosen on validation, validation F1 at it, test AP,
test F1 at the validation threshold, and the best test F1 any threshold reaches (an oracle,
for comparison only): a protocol tells the truth when validation AP ~ test AP and the test F1 at
its threshold ~ the oracle's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import SETS, prepare  # noqa: E402

from sceneseg.config import load_params  # noqa: E402
from sceneseg.evaluation.metrics import _pooled_f1  # noqa: E402
from sceneseg.models.references.stacked import fit_stacked  # noqa: E402
from sceneseg.models.registry import get_model  , model_params# noqa: E402

GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def pooled(movies, prob: dict, masks: dict | None) -> tuple[np.ndarray, np.ndarray]:
    gt = np.concatenate([np.asarray(m.boundary, bool)[masks[m.imdb_id] if masks else slice(None)] for m in movies])
    p = np.concatenate([prob[m.imdb_id][masks[m.imdb_id] if masks else slice(None)] for m in movies])
    return gt, p


def row(val: tuple, test: tuple, threshold: float) -> dict:
    (vg, vp), (tg, tp) = val, test
    f1 = lambda g, p, t: float(_pooled_f1(g, p, np.array([t]))[0])  # noqa: E731
    return {"val AP": average_precision_score(vg, vp), "threshold": threshold, "val F1": f1(vg, vp, threshold),
            "test AP": average_precision_score(tg, tp), "test F1": f1(tg, tp, threshold),
            "oracle test F1": float(_pooled_f1(tg, tp, GRID).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["easy_large", "easy_noisy"], choices=list(SETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_validation"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_params()
    kind = get_model("simseq")
    lines = ["| set | protocol | system | val AP | threshold | val F1 | test AP | test F1 | oracle test F1 |",
             "| --- | --- | --- |" + " ---: |" * 6]
    for name in args.sets:
        for val_by in ("window", "movie"):
            params = dataclasses.replace(base, split=dataclasses.replace(base.split, val_by=val_by))
            data, test, _ = prepare(name, args.workdir, params)
            vmask = None if val_by == "movie" else data.owned("val")
            ref = fit_stacked(data.movies("train"), data.owned("train"), data.movies("val"), vmask,
                              model_params(params, "simseq").modalities, tuple(params.evaluate.stacked_widths))
            rows = {"stacked": [row(pooled(data.movies("val"), ref.predict(data.movies("val")), vmask),
                                    pooled(test, ref.predict(test), None), ref.threshold)]}
            for seed in args.seeds:
                common = dataclasses.replace(params.train, seed=seed)
                tr = kind.train(data, model_params(params, "simseq"), common, torch.device("cpu"), progress=False)
                val_prob = kind.predict(tr.model, tr.config, data.movies("val"), torch.device("cpu"), 256)
                test_prob = kind.predict(tr.model, tr.config, test, torch.device("cpu"), 256)
                rows.setdefault("simseq", []).append(row(pooled(data.movies("val"), val_prob, vmask),
                                                         pooled(test, test_prob, None), tr.threshold))
            for system, rs in rows.items():
                cells = [f"{np.mean([r[k] for r in rs]):.3f}" + (f" ± {np.std([r[k] for r in rs]):.3f}" if len(rs) > 1 else "")
                         for k in rs[0]]
                lines.append(f"| {name} | {val_by} | {system} | " + " | ".join(cells) + " |")
                print(lines[-1], file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
