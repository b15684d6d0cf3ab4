"""Report pictures (PNG): loss curves, precision-recall curves, per-movie bars, movie timelines.

Figures are drawn on matplotlib's object API with the Agg renderer (no pyplot, no global backend
or rcParams changes), so plotting works headless and from threads.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from sceneseg.evaluation.metrics import check_movie

DPI = 120
STYLE = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
# One colour per system, stable across pictures (colour-blind-safe Tableau/Okabe-Ito tones).
SYSTEM_COLOURS = {"model": "#0072B2", "boosted": "#D55E00", "stacked": "#CC79A7", "shipped": "#E69F00", "chance": "#999999", "model_tuned": "#009E73"}
OTHER_COLOURS = ["#D55E00", "#56B4E9", "#F0E442"]
TRUE_BANDS = ("#2b6a99", "#9cc3e0")  # alternating scene colours: truth (blues)
PRED_BANDS = ("#c4661f", "#f2bf8f")  # predictions (oranges)


def _colour(name: str, i: int) -> str:
    return SYSTEM_COLOURS.get(name, OTHER_COLOURS[i % len(OTHER_COLOURS)])


def _save(fig: Figure, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches="tight", format="png")


def plot_losses(epochs: list[int], train: list[float], val: list[float], out: Path, test: float | None = None,
                kept_epoch: int | None = None) -> None:
    """Train and validation loss per epoch, with the test loss of the kept model as a dashed line
    and the kept epoch (e.g. the best-validation one) marked, if given."""
    if not epochs or not (len(epochs) == len(train) == len(val)):
        raise ValueError(f"plot_losses: expected equally long, non-empty epochs/train/val, found {len(epochs)}/{len(train)}/{len(val)}")
    if not all(math.isfinite(x) for x in [*train, *val, *([] if test is None else [test])]):
        raise ValueError("plot_losses: expected finite losses, found NaN or inf")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7, 4.2))
        ax = fig.add_subplot()
        marker = "o" if len(epochs) <= 40 else None
        ax.plot(epochs, train, marker=marker, ms=4, lw=1.8, color="#0072B2", label="train")
        ax.plot(epochs, val, marker=marker, ms=4, lw=1.8, color="#E69F00", label="validation")
        if test is not None:
            ax.axhline(test, ls="--", lw=1.5, color="#D55E00", label=f"test (kept model) {test:.4f}")
        if kept_epoch is not None:
            ax.axvline(kept_epoch, ls=":", lw=1.5, color="#555555", label=f"kept epoch {kept_epoch}")
        ax.set(title="Loss per epoch", xlabel="epoch", ylabel="loss (cross-entropy)")
        if len(epochs) <= 15:
            ax.set_xticks(epochs)
        ax.legend(frameon=False)
        _save(fig, out)


def _step_area(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under a precision-recall staircase as scikit-learn's AP sums it: each recall step
    times the precision of the point reached at the end of it (points in decreasing recall)."""
    order = np.argsort(-recall, kind="stable")
    r, p = recall[order], precision[order]
    return float(np.sum((r - np.append(r[1:], 0.0)) * p))


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, ap: dict[str, float] | None = None) -> None:
    """Precision-recall curves, one per system (name -> (recall, precision)), AP in the legend.

    ``ap`` gives the exact AP per name; without it the area under the given points is shown
    (equal to AP for an unthinned scikit-learn curve).
    """
    if not curves:
        raise ValueError("plot_pr_curves: expected at least one curve, found none")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.2, 5.6))
        ax = fig.add_subplot()
        f = np.linspace(0.01, 1, 200)
        for f1 in (0.2, 0.4, 0.6, 0.8):  # iso-F1 guides: precision = F1 * R / (2R - F1)
            r = f[2 * f > f1]
            ax.plot(r, f1 * r / (2 * r - f1), color="0.8", lw=0.8, zorder=0)
            # labelled in the right margin, where the guide meets recall 1: no curve can cover the label
            ax.annotate(f"F1={f1}", (1, f1 / (2 - f1)), xycoords=("axes fraction", "data"), xytext=(3, 0),
                        textcoords="offset points", va="center", color="0.55", fontsize=8, annotation_clip=False)
        for i, (name, (recall, precision)) in enumerate(curves.items()):
            recall, precision = np.asarray(recall, dtype=float), np.asarray(precision, dtype=float)
            if recall.shape != precision.shape or recall.ndim != 1 or recall.size == 0:
                raise ValueError(f"plot_pr_curves: '{name}' expected equally long 1-D recall and precision, found {recall.shape} and {precision.shape}")
            if not (((recall >= 0) & (recall <= 1)).all() and ((precision >= 0) & (precision <= 1)).all()):
                raise ValueError(f"plot_pr_curves: '{name}' expected recall and precision in [0, 1]")
            area = ap[name] if ap and name in ap else _step_area(recall, precision)
            order = np.argsort(recall, kind="stable")
            ax.step(recall[order], precision[order], where="pre", lw=2, color=_colour(name, i), label=f"{name} (AP {area:.3f})")
        # limits a little beyond [0, 1]: a curve at recall 0 or precision 1 stays inside the frame, not on it
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.04), xlabel="recall", ylabel="precision",
               title="Scene boundaries: precision vs recall")
        ax.set_aspect("equal")
        ax.legend(loc="best", frameon=True, framealpha=0.9)
        _save(fig, out)


def plot_per_movie(values: dict[str, dict[str, float]], metric: str, out: Path) -> None:
    """Grouped bars of ``metric`` per movie (system -> {imdb_id: value}), each system's mean dashed."""
    if not values or not any(values.values()):
        raise ValueError("plot_per_movie: expected values for at least one system, found none")
    ids = sorted({i for per in values.values() for i in per})
    for name, per in values.items():
        if set(per) != set(ids):
            raise ValueError(f"plot_per_movie: '{name}' expected a value for each of {len(ids)} movies, missing {sorted(set(ids) - set(per))}")
        if not all(math.isfinite(v) for v in per.values()):
            raise ValueError(f"plot_per_movie: '{name}' expected finite values")
    n_sys = len(values)
    width = 0.8 / n_sys
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(min(18.0, max(7.0, 0.22 * len(ids) * n_sys + 2.5)), 4.8), layout="constrained")
        ax = fig.add_subplot()
        x = np.arange(len(ids))
        for i, (name, per) in enumerate(values.items()):
            v = np.array([per[k] for k in ids])
            colour = _colour(name, i)
            ax.bar(x + (i - (n_sys - 1) / 2) * width, v, width, color=colour, label=f"{name} (mean {v.mean():.3f})")
            ax.axhline(v.mean(), color=colour, ls="--", lw=1.2)
        few = len(ids) <= 12
        ax.set_xticks(x, ids, rotation=45 if few else 90, ha="right" if few else "center", fontsize=10 if few else 8)
        top = max(max(per.values()) for per in values.values())
        ax.set(xlim=(-0.6, len(ids) - 0.4), ylim=(0, max(1.0, top) * 1.05), ylabel=metric)
        ax.grid(axis="x", visible=False)
        # The title rides on the legend: constrained layout then stacks them without overlap.
        fig.legend(loc="outside upper center", ncol=n_sys, frameon=False,
                   title=f"{metric} per movie (dashed: mean over movies)", title_fontsize=13)
        _save(fig, out)


def _bands(ax, boundary: np.ndarray, y: float, h: float, colours: tuple[str, str]) -> None:
    """Scenes as alternately coloured bands; shot k spans [k, k+1), transition i sits at x = i + 1."""
    cuts = np.concatenate(([0], np.flatnonzero(boundary) + 1, [boundary.size + 1]))
    spans = list(zip(cuts[:-1], np.diff(cuts)))
    for parity in (0, 1):
        ax.broken_barh(spans[parity::2], (y, h), facecolors=colours[parity], edgecolor="white", linewidth=0.3)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def plot_timeline(
    imdb_id: str,
    gt_boundary: np.ndarray | None,
    prob: np.ndarray,
    threshold: float,
    out: Path,
    shot_end_frame: np.ndarray | None = None,
    fps: float = 24.0,
    shots_per_row: int = 600,
) -> None:
    """True scenes, predicted scenes (``prob >= threshold``) and the probability curve of one movie,
    in stacked rows of at most ``shots_per_row`` shots so a 3,000-shot movie stays readable.
    Without ground truth (``gt_boundary=None``, e.g. a user's own movie) only predictions are drawn."""
    has_gt = gt_boundary is not None
    if not has_gt:
        gt_boundary = np.zeros(np.asarray(prob).shape, dtype=bool)
    gt, prob, end = check_movie(imdb_id, gt_boundary, prob, shot_end_frame)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{imdb_id}: expected a threshold in [0, 1], found {threshold}")
    if shots_per_row < 10:
        raise ValueError(f"plot_timeline: expected shots_per_row >= 10, found {shots_per_row}")
    n_shots = gt.size + 1
    n_rows = math.ceil(n_shots / shots_per_row)
    per_row = math.ceil(n_shots / n_rows)  # even rows, all drawn to the same scale
    pred = prob >= threshold
    x = np.arange(1, n_shots)  # [N-1] transition i between shot i and shot i+1
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(15, 0.9 + 2.3 * n_rows), layout="constrained")
        axes = fig.subplots(n_rows, 1, squeeze=False)[:, 0]
        for r, ax in enumerate(axes):
            lo, hi = r * per_row, min((r + 1) * per_row, n_shots)
            if has_gt:
                ax.vlines(x[gt], 0, 1, color="#2b6a99", lw=0.6, alpha=0.45)
            ax.plot(x, prob, color="#333333", lw=0.8)
            ax.plot(x[pred], prob[pred], "o", ms=2.5, color="#c4661f")
            ax.axhline(threshold, color="#D55E00", ls="--", lw=1)
            _bands(ax, pred, 1.12, 0.16, PRED_BANDS)
            if has_gt:
                _bands(ax, gt, 1.32, 0.16, TRUE_BANDS)
            ax.set_xlim(lo, lo + per_row)
            ax.set_ylim(0, 1.5)
            ticks = [0, 0.5, 1, 1.2] + ([1.4] if has_gt else [])
            ax.set_yticks(ticks, ["0", "0.5", "1", "predicted", "true"][:len(ticks)])
            ax.grid(axis="y", visible=False)
            label = f"shots {lo}-{hi - 1}"
            if end is not None:
                label += f"\n{_clock((end[lo - 1] + 1 if lo else 0) / fps)}-{_clock(end[hi - 1] / fps)}"
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
            prob_axis = ax.secondary_yaxis("right")  # the left side names the row; the right one the curve
            prob_axis.set_yticks([0, 0.5, 1])
            prob_axis.set_ylabel("boundary\nprobability", fontsize=9)
        axes[-1].set_xlabel("shot index (probability of a scene boundary after each shot)")
        true_part = f"{int(gt.sum()) + 1} true scenes, " if has_gt else ""
        title = f"{imdb_id}: {n_shots} shots, {true_part}{int(pred.sum()) + 1} predicted at threshold {threshold:g}"
        handles = [
            Patch(color=PRED_BANDS[0], label="predicted scenes"),
            Line2D([], [], color="#333333", lw=1, label="boundary probability"),
            Line2D([], [], color="#D55E00", ls="--", label=f"threshold {threshold:g}"),
        ]
        if has_gt:
            handles[:0] = [Patch(color=TRUE_BANDS[0], label="true scenes")]
            handles.append(Line2D([], [], color="#2b6a99", lw=1, alpha=0.6, label="true boundary"))
        fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), frameon=False, title=title, title_fontsize=13)
        _save(fig, out)
