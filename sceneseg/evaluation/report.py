"""Scoring the model on the test movies next to the shipped predictions and a chance baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve

from sceneseg.data.movies import Movie, missing_shipped
from sceneseg.evaluation import plots
from sceneseg.evaluation import metrics

PR_SYSTEMS = ("model", "boosted", "stacked", "shipped")  # drawn as PR curves (chance's is flat at its rate)

def score_systems(movies: list[Movie], model_prob: dict[str, np.ndarray], threshold: float, fps: float,
                  window_s: float, chance_seed: int, chance_rate: float,
                  references: dict[str, tuple[dict[str, np.ndarray], float]] | None = None,
                  ) -> tuple[dict, dict, dict[str, dict[str, np.ndarray]]]:
    """Eluvio metrics of the model (at 0.5 and at its validation threshold), the fitted references
    (name -> ``(probabilities, its validation threshold)``: boosted, stacked), the shipped predictions and a chance-level
    predictor (random boundaries at ``chance_rate``, the training movies' boundary rate), all on
    the same movies with the same code. ``fps`` is the frame rate of movies that do not carry their own
    (those made from videos do). When a test movie has no shipped prediction, the
    ``shipped`` row is ``{"absent": "<which movies lack it>"}``.

    Returns (summary metrics, per-movie metrics, probabilities per system).
    """
    scalars = ("AP", "mAP", "Miou", "Precision", "Recall", "F1", metrics.recall_key(window_s))
    fps = movie_fps(movies, fps)
    gt = {m.imdb_id: np.asarray(m.boundary, dtype=bool) for m in movies}
    ends = {m.imdb_id: np.asarray(m.shot_end_frame) for m in movies}
    systems = {"model": model_prob}
    thresholds = {"model": 0.5}
    for name, (prob, thr) in (references or {}).items():
        systems[name], thresholds[name] = prob, thr
    absent = missing_shipped(movies, "test movies")
    if not absent:
        systems["shipped"] = {m.imdb_id: np.asarray(m.baseline, dtype=np.float64) for m in movies}
    systems["chance"] = metrics.chance_predictions(gt, chance_seed, rate=chance_rate)
    summary, per_movie = {}, {}
    for name, prob in systems.items():
        thr = thresholds.get(name, 0.5)
        res = metrics.evaluate(gt, prob, ends, threshold=thr, fps=fps, window_s=window_s)
        summary[name] = {k: float(res[k]) for k in scalars}
        if name in thresholds and name != "model":
            summary[name]["threshold"] = float(thr)
        per_movie[name] = {"AP": res["AP_dict"], "Miou": res["Miou_dict"]}
    tuned = metrics.evaluate(gt, model_prob, ends, threshold=threshold, fps=fps, window_s=window_s)
    summary["model_tuned"] = {"threshold": float(threshold), **{k: float(tuned[k]) for k in scalars[2:]}}
    if absent:  # scored on some test movies only it would not compare with the other rows
        summary["shipped"] = {"absent": absent}
    per_movie["model_tuned"] = {"Miou": tuned["Miou_dict"]}
    return summary, per_movie, systems


def movie_fps(movies: list[Movie], default: float) -> dict[str, float]:
    """Each movie's own frame rate when it has one (made from a video), else ``default`` (``evaluate.fps``)."""
    return {m.imdb_id: m.fps if m.fps else default for m in movies}


def headline(summary: dict) -> dict:
    """The few numbers DVC declares as metrics, so that ``dvc exp show`` fits a terminal: the model's
    AP and mAP, its Miou and F1 at its validation threshold (top level: short column names), and the
    AP and Miou of every other system under its name (the references at their own thresholds). Every
    number of every system stays in ``summary`` (written beside it, not a DVC metric).
    """
    tuned = summary["model_tuned"]
    out = {"AP": summary["model"]["AP"], "mAP": summary["model"]["mAP"], "Miou": tuned["Miou"], "F1": tuned["F1"]}
    for name, res in summary.items():
        if name not in ("model", "model_tuned"):  # a system not scored (no shipped prediction) says why
            out[name] = {"AP": res["AP"], "Miou": res["Miou"]} if "AP" in res else dict(res)
    return out


def predictions_doc(movies: list[Movie], prob: dict[str, np.ndarray], threshold: float, model: str) -> dict:
    """The model's probabilities on the test movies in ``sceneseg predict``'s JSON layout (the keys
    ``sceneseg score --predictions`` reads), at full precision: scored again they give eval's numbers."""
    return {"model": model, "threshold": float(threshold),
            "movies": [{"imdb_id": m.imdb_id, "boundary_prob": np.asarray(prob[m.imdb_id], dtype=np.float64).tolist()}
                       for m in movies]}


def boundary_rate(movies: list[Movie]) -> float:
    """Share of transitions that are scene boundaries, pooled over ``movies``."""
    for m in movies:
        if m.boundary is None:
            raise ValueError(f"movie {m.imdb_id}: expected ground-truth boundaries, found none")
    return float(np.mean(np.concatenate([np.asarray(m.boundary, dtype=bool) for m in movies])))


def pr_points(gt: dict[str, np.ndarray], prob: dict[str, np.ndarray], max_points: int = 400) -> list[dict]:
    """Pooled precision-recall curve, thinned to at most ``max_points`` rows for DVC plots."""
    ids = list(gt)
    precision, recall, _ = precision_recall_curve(np.concatenate([gt[i] for i in ids]),
                                                  np.concatenate([prob[i] for i in ids]))
    keep = np.unique(np.linspace(0, len(recall) - 1, min(max_points, len(recall))).round().astype(int))
    return [{"recall": float(recall[i]), "precision": float(precision[i])} for i in keep]


def draw(movies: list[Movie], systems: dict, summary: dict, per_movie: dict, threshold: float, out: Path,
         n_timelines: int, fps: float) -> None:
    """PNG pictures: PR curves, per-movie AP and Miou bars, timelines of the first test movies."""
    out.mkdir(parents=True, exist_ok=True)
    gt = {m.imdb_id: np.asarray(m.boundary, dtype=bool) for m in movies}
    curves = {}
    for name in PR_SYSTEMS:
        if name in systems:
            pts = pr_points(gt, systems[name], max_points=2000)
            curves[name] = (np.array([p["recall"] for p in pts]), np.array([p["precision"] for p in pts]))
    plots.plot_pr_curves(curves, out / "pr_curve.png", ap={name: summary[name]["AP"] for name in curves})
    for metric in ("AP", "Miou"):
        plots.plot_per_movie({name: pm[metric] for name, pm in per_movie.items() if metric in pm},
                             metric, out / f"per_movie_{metric.lower()}.png")
    for m in movies[:n_timelines]:
        plots.plot_timeline(m.imdb_id, gt[m.imdb_id], systems["model"][m.imdb_id], threshold,
                            out / f"timeline_{m.imdb_id}.png", shot_end_frame=np.asarray(m.shot_end_frame),
                            fps=m.fps if m.fps else fps)
