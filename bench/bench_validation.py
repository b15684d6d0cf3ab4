"""How well validation predicts the test movies under ``split.val_by: window`` and ``movie``.

    .venv/bin/python bench/bench_validation.py [--sets sample short] [--seeds 0 1 2] [--workdir /tmp/sets]

With ``window`` (the seed's protocol) validation transitions are random windows of the training
movies: the model has seen those movies' features, scenes and camera set-ups in training. With
``movie`` whole movies are held out, as the test movies are (and training has fewer movies).
Under ``movie`` the threshold is also chosen by Miou on the whole validation movies
(``train.threshold_metric: miou``; the same trained models, only the threshold differs).

For simseq (one run per seed), the boosted and the stacked references (deterministic) this
prints, per set, protocol and threshold metric: validation AP, test AP, their gap |val - test|,
the threshold chosen on validation, test F1 and Miou at that threshold (the headline metrics:
means over test movies, ``sceneseg.evaluation.metrics``), and the best test F1 and Miou any threshold of the
grid reaches (oracles, for comparison only). A protocol tells the truth when its gap is small and
its threshold's F1 / Miou are close to the oracles'.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import SETS, prepare  # noqa: E402

from sceneseg.config import load_params  # noqa: E402
from sceneseg.evaluation import metrics  # noqa: E402
from sceneseg.models.references.boosted import boosted_spec, fit_boosted  # noqa: E402
from sceneseg.models.references.stacked import fit_stacked, validation_threshold  # noqa: E402
from sceneseg.models.registry import get_model, model_params  # noqa: E402

GRID = metrics.DEFAULT_GRID  # the thresholds choose_threshold searches
COLUMNS = ("val AP", "test AP", "gap", "threshold", "test F1", "oracle F1", "test Miou", "oracle Miou")
PROTOCOLS = (("window", "f1"), ("movie", "f1"), ("movie", "miou"))  # (split.val_by, train.threshold_metric)


def pooled_ap(movies, prob: dict, masks: dict | None) -> float:
    """AP of the transitions that ``masks`` selects (all when None), pooled over movies."""
    sel = {m.imdb_id: masks[m.imdb_id] if masks is not None else slice(None) for m in movies}
    gt = {m.imdb_id: np.asarray(m.boundary, bool)[sel[m.imdb_id]] for m in movies}
    return metrics.average_precision(gt, {m.imdb_id: prob[m.imdb_id][sel[m.imdb_id]] for m in movies})[0]


def f1_miou(movies, prob: dict, grid: np.ndarray) -> np.ndarray:
    """[G, 2]: mean over movies of F1 and of Miou at each threshold of ``grid`` (as metrics.evaluate)."""
    out = np.zeros((len(grid), 2))
    for m in movies:
        gt, end = np.asarray(m.boundary, bool), np.asarray(m.shot_end_frame)
        for i, t in enumerate(grid):
            pred = prob[m.imdb_id] >= t
            out[i] += metrics.precision_recall_f1(gt, pred)[2], metrics.miou(gt, pred, end)
    return out / len(movies)


def row(val_movies, val_prob: dict, vmask: dict | None, test, test_prob: dict, threshold: float) -> dict:
    """One system's numbers: validation AP, test AP and the test F1 / Miou at ``threshold`` and at best."""
    v, t = pooled_ap(val_movies, val_prob, vmask), pooled_ap(test, test_prob, None)
    at, curve = f1_miou(test, test_prob, np.array([threshold]))[0], f1_miou(test, test_prob, GRID)
    return {"val AP": v, "test AP": t, "gap": abs(v - t), "threshold": threshold, "test F1": at[0],
            "oracle F1": curve[:, 0].max(), "test Miou": at[1], "oracle Miou": curve[:, 1].max()}


def run_protocol(name: str, val_by: str, base, seeds: list[int], workdir: Path) -> dict[tuple[str, str], list[dict]]:
    """(threshold metric, system) -> one row per run, for one set under one ``split.val_by``."""
    params = dataclasses.replace(base, split=dataclasses.replace(base.split, val_by=val_by))
    data, test, _ = prepare(name, workdir, params)
    val = data.movies("val")
    tmask, vmask = data.owned("train"), (None if val_by == "movie" else data.owned("val"))
    metrics_here = [m for v, m in PROTOCOLS if v == val_by]
    mods, e = model_params(params, "simseq").modalities, params.evaluate
    rows: dict[tuple[str, str], list[dict]] = {}

    def add(system: str, val_prob: dict, test_prob: dict, thresholds: dict[str, float]) -> None:
        for metric in metrics_here:
            rows.setdefault((metric, system), []).append(row(val, val_prob, vmask, test, test_prob, thresholds[metric]))

    def refit_thresholds(val_prob: dict) -> dict[str, float]:  # the pipeline's own choice, per metric
        return {metric: validation_threshold(val_prob, val, vmask, metric) for metric in metrics_here}

    boost = fit_boosted(data.movies("train"), tmask, val, vmask, boosted_spec(e, mods, True))
    stack = fit_stacked(data.movies("train"), tmask, val, vmask, mods, tuple(e.stacked_widths), e.stacked_c)
    for system, ref in (("boosted", boost), ("stacked", stack)):
        val_prob = ref.predict(val)
        add(system, val_prob, ref.predict(test), refit_thresholds(val_prob))
    kind, cpu = get_model("simseq"), torch.device("cpu")
    for seed in seeds:
        common = dataclasses.replace(params.train, model="simseq", seed=seed, threshold_metric="f1")
        tr = kind.train(data, model_params(params, "simseq"), common, cpu, progress=False)
        val_prob = kind.predict(tr.model, tr.config, val, cpu)
        thresholds = refit_thresholds(val_prob)
        if abs(thresholds["f1"] - tr.threshold) > 1e-9:  # the training's own threshold, from the same probabilities
            print(f"  note: {name} {val_by} seed {seed}: training chose {tr.threshold}, recomputed {thresholds['f1']}",
                  file=sys.stderr)
        add("simseq", val_prob, kind.predict(tr.model, tr.config, test, cpu), thresholds)
        print(f"  {name} {val_by} simseq seed {seed}: " + ", ".join(
            f"{metric}: {k} {rows[(metric, 'simseq')][-1][k]:.3f}" for metric in metrics_here
            for k in ("val AP", "test AP", "test Miou")) + f" (epoch {tr.best_epoch}, {tr.seconds:.0f} s)",
            file=sys.stderr)
    n_val = f"{len(val)} val movies" if val_by == "movie" else f"{int(sum(m.sum() for m in vmask.values()))} val transitions"
    print(f"{name} {val_by}: {len(data.movies('train'))} train movies, {n_val}, {len(test)} test movies", file=sys.stderr)
    return rows


def table_lines(name: str, val_by: str, rows: dict[tuple[str, str], list[dict]]) -> list[str]:
    """Markdown rows: mean ± standard deviation over runs (one value for a single run)."""
    lines = []
    for (metric, system), runs in rows.items():
        cells = []
        for c in COLUMNS:
            v = np.array([r[c] for r in runs])
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v[0]:.3f}")
        lines.append(f"| {name} | {val_by} | {metric} | {system} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["sample", "short"], choices=list(SETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_validation"), help="generated sets, reused")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_params(args.params)
    lines = ["| set | val_by | threshold by | system | runs | " + " | ".join(COLUMNS) + " |",
             "| --- | --- | --- | --- | ---: |" + " ---: |" * len(COLUMNS)]
    for name in args.sets:
        for val_by in dict.fromkeys(v for v, _ in PROTOCOLS):
            new = table_lines(name, val_by, run_protocol(name, val_by, base, args.seeds, args.workdir))
            print("\n".join(new), file=sys.stderr, flush=True)
            lines += new
    print("\n".join(lines))


if __name__ == "__main__":
    main()
