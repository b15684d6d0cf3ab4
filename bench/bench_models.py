"""Train and score every system on several synthetic sets; print the table (mean and spread over seeds).

Each set goes through the pipeline's own code (generator -> safe conversion -> split -> windows),
with the pipeline's split protocol from params.yaml (``--test-fraction`` aside). On each set:
the default model (simseq, one run per training seed), optionally LGSS (``--lgss published reliable``:
the published recipe and the reliable one of docs/models.md, lr 1e-3 and 4 shots each side; slow on CPU),
the boosted and stacked references, the shipped prediction and chance, all scored by
``metrics.evaluate`` on the same test movies; models and references at their validation
thresholds. simseq is also scored with the shipped input withheld on the same movies
(``simseq -shipped``), next to the references fitted without it (features only).

    python bench/bench_models.py --sets sample short noisy setups --seeds 0 1 2
    python bench/bench_models.py --sets sample --no-simseq --lgss published reliable --epochs 10
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sceneseg.config import load_params
from sceneseg.data.movies import load_movies, read_index
from sceneseg.data.sources import materialize
from sceneseg.data.split import split_all_windows, split_movies
from sceneseg.data.synthetic import SyntheticSpec
from sceneseg.evaluation import metrics
from sceneseg.evaluation.report import boundary_rate
from sceneseg.models.base import TrainData
from sceneseg.models.references.boosted import boosted_spec, fit_boosted
from sceneseg.models.references.stacked import fit_stacked
from sceneseg.models.registry import get_model, model_params

SETS = {  # name -> (generator settings, test fraction); the realistic story unless said
    "sample": (None, None),  # the built-in sample of params.yaml, the pipeline's split
    "short": (SyntheticSpec(32, seed=11, length_scale=0.3), 0.25),  # 32 movies of a third of the real length
    "full": (SyntheticSpec(40, seed=12), 0.2),  # 40 movies of the real shot counts
    "resample": (SyntheticSpec(32, seed=17, length_scale=0.4), 0.25),  # the sample's settings, another seed
    "noisy": (SyntheticSpec(32, seed=13, length_scale=0.3, noise=1.3), 0.25),  # 1.3x the per-shot noise
    "setups": (SyntheticSpec(32, seed=14, length_scale=0.3, min_setups=2, max_setups=12), 0.25),  # more camera set-ups
    "scaled": (SyntheticSpec(32, seed=15, length_scale=0.3, scale_spread=1.0), 0.25),  # scales x0.1-x10 per movie
    "dense": (SyntheticSpec(32, seed=16, length_scale=0.3, scene_scale=0.6), 0.25),  # shorter scenes: more boundaries
    "easy": (SyntheticSpec(12, 250, 400, seed=0, min_setups=2, max_setups=3, preset="easy"), None),  # the old sample
    # the sets of RESULTS_lgss_recipes.md and RESULTS_validation.md (the easy generator; its draws have
    # changed order since, so the same statistics but not the same movies)
    "easy_large": (SyntheticSpec(40, 250, 400, seed=11, min_setups=2, max_setups=3, preset="easy"), 0.2),
    "easy_noisy": (SyntheticSpec(24, 250, 400, seed=12, noise=2.0, min_setups=2, max_setups=3, preset="easy"), 0.25),
}
COLUMNS = ("AP", "mAP", "Miou", "F1")
LGSS_RECIPES = {  # name -> changes to the lgss section (docs/models.md, bench/RESULTS_lgss_recipes.md)
    "published": {},
    "reliable": {"lr": 1e-3, "shot_num": 8},
}


def prepare(name: str, root: Path, params) -> tuple[TrainData, list, list]:
    spec, test_fraction = SETS[name]
    if spec is None:
        spec = SyntheticSpec(**vars(params.data.synthetic))
    out = root / name
    if not (out / "index.json").exists():
        materialize("synthetic", out, cache_dir=root, synthetic=spec)
    n_shots = {m["imdb_id"]: m["n_shots"] for m in read_index(out)["movies"]}
    s = params.split
    split = split_movies(sorted(n_shots), test_fraction or s.test_fraction, s.test_movies, s.val_fraction,
                         s.val_by, s.seed)
    wins = split_all_windows(split, n_shots, params.featurize.seq_len, s.val_by, s.val_fraction, s.seed)
    data = TrainData(out, split, wins)
    return data, load_movies(out, split["test"]), load_movies(out, split["train"])


def score(test, prob: dict, threshold: float, fps: float, window_s: float) -> dict:
    gt = {m.imdb_id: np.asarray(m.boundary, bool) for m in test}
    ends = {m.imdb_id: np.asarray(m.shot_end_frame) for m in test}
    res = metrics.evaluate(gt, prob, ends, threshold=threshold, fps=fps, window_s=window_s)
    return {k: float(res[k]) for k in COLUMNS}


def run_set(name: str, root: Path, params, seeds: list[int], lgss: list[str], epochs: int | None,
            simseq: bool = True) -> dict:
    data, test, train_movies = prepare(name, root, params)
    e = params.evaluate
    rows: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    val_whole = data.windows["val"].movie_ids != data.windows["train"].movie_ids
    masks = (data.owned("train"), None if val_whole else data.owned("val"))
    mods = model_params(params, "simseq").modalities
    for suffix, shipped in (("", True), (" -shipped", False)):  # -shipped: fitted without it (features only)
        ref = fit_stacked(data.movies("train"), masks[0], data.movies("val"), masks[1], mods,
                          tuple(e.stacked_widths), e.stacked_c, params.train.threshold_metric, use_shipped=shipped)
        rows["stacked" + suffix] = [score(test, ref.predict(test), ref.threshold, e.fps, e.recall_window_s)]
        boost = fit_boosted(data.movies("train"), masks[0], data.movies("val"), masks[1],
                            boosted_spec(e, mods, shipped), params.train.threshold_metric)
        rows["boosted" + suffix] = [score(test, boost.predict(test), boost.threshold, e.fps, e.recall_window_s)]
    if all(m.baseline is not None for m in test):
        rows["shipped"] = [score(test, {m.imdb_id: np.asarray(m.baseline, np.float64) for m in test}, 0.5,
                                 e.fps, e.recall_window_s)]
    chance = metrics.chance_predictions({m.imdb_id: np.asarray(m.boundary, bool) for m in test}, e.chance_seed,
                                        rate=boundary_rate(train_movies))
    rows["chance"] = [score(test, chance, 0.5, e.fps, e.recall_window_s)]
    systems = [("simseq", "simseq", {})] if simseq else []  # (row name, model, changes to its params)
    systems += [(f"lgss {r}", "lgss", LGSS_RECIPES[r]) for r in lgss]
    device = torch.device("cpu")
    for system, model_name, changes in systems:
        kind = get_model(model_name)
        own = dataclasses.replace(model_params(params, model_name), **changes)
        for seed in seeds:
            common = dataclasses.replace(params.train, model=model_name, seed=seed,
                                         epochs=epochs or params.train.epochs)
            trained = kind.train(data, own, common, device, progress=False)
            prob = kind.predict(trained.model, trained.config, test, device)
            rows.setdefault(system, []).append(score(test, prob, trained.threshold, e.fps, e.recall_window_s))
            if model_name == "simseq":
                bare = kind.predict(trained.model, trained.config, test, device, with_shipped=False)
                rows.setdefault("simseq -shipped", []).append(score(test, bare, trained.threshold, e.fps,
                                                                    e.recall_window_s))
            print(f"  {name} {system} seed {seed}: {rows[system][-1]} "
                  f"(epoch {trained.best_epoch}, {trained.seconds:.0f} s)", file=sys.stderr)
    n_trans = sum(m.n_shots - 1 for m in test)
    print(f"{name}: {len(test)} test movies, {n_trans} transitions; {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return rows


def table(results: dict[str, dict[str, list[dict]]]) -> str:
    lines = ["| set | system | runs | " + " | ".join(COLUMNS) + " |", "| --- | --- | ---: |" + " ---: |" * len(COLUMNS)]
    for set_name, rows in results.items():
        for system, runs in rows.items():
            cells = []
            for c in COLUMNS:
                v = np.array([r[c] for r in runs])
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v[0]:.3f}")
            lines.append(f"| {set_name} | {system} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--lgss", nargs="*", default=[], choices=list(LGSS_RECIPES),
                    help="also train LGSS with these recipes (slow on CPU; no LGSS when left out)")
    ap.add_argument("--no-simseq", action="store_true", help="leave the default model out (LGSS and references only)")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the generated sets here (default: temporary)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        results = {}
        for name in args.sets:
            results[name] = run_set(name, root, params, args.seeds, args.lgss, args.epochs, not args.no_simseq)
            print(table({name: results[name]}), file=sys.stderr)
    print(table(results))
    for ref in ("boosted", "stacked"):
        for suffix in ("", " -shipped") if not args.no_simseq else ():
            print(f"\nsimseq{suffix} minus {ref}{suffix} (mean over seeds): " + "; ".join(
                f"{n}: AP {np.mean([r['AP'] for r in rows['simseq' + suffix]]) - rows[ref + suffix][0]['AP']:+.3f}, "
                f"Miou {np.mean([r['Miou'] for r in rows['simseq' + suffix]]) - rows[ref + suffix][0]['Miou']:+.3f}"
                for n, rows in results.items()))


if __name__ == "__main__":
    main()
