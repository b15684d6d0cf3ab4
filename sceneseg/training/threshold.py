"""The decision threshold, chosen on validation transitions only (never on test movies), the same
way for every model and reference: each hands in its validation labels and probabilities."""

from __future__ import annotations

import numpy as np

from sceneseg.evaluation.metrics import choose_threshold

METRICS = ("f1", "miou", "fixed")


def choose_on_validation(metric: str, gt: dict[str, np.ndarray] | np.ndarray | None = None,
                         prob: dict[str, np.ndarray] | np.ndarray | None = None,
                         shot_end_frame: dict[str, np.ndarray] | None = None) -> float:
    """Threshold maximising ``metric`` on validation: 'f1' over the pooled transitions (``gt`` and
    ``prob`` per-movie dicts, concatenated in ``gt``'s order, or pooled arrays), 'miou' over whole
    validation movies (per-movie dicts and their ``shot_end_frame``), 'fixed' 0.5 (the published
    setting; needs neither labels nor probabilities)."""
    if metric == "fixed":
        return 0.5
    if metric == "f1":
        if isinstance(gt, dict):
            gt, prob = np.concatenate(list(gt.values())), np.concatenate([prob[k] for k in gt])
        return float(choose_threshold(gt, prob, metric="f1"))
    if metric == "miou":
        return float(choose_threshold(gt, prob, metric="miou", shot_end_frame=shot_end_frame))
    raise ValueError(f"threshold metric: expected f1, miou or fixed, found {metric!r}")
