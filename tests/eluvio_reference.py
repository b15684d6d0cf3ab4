"""An independent reference for the Eluvio scene-segmentation metrics, for the tests.

Written from the published definitions (the challenge's README and ``evaluate_sceneseg.py`` as
described in the project brief), not from ``sceneseg.evaluation.metrics``: plain loops over transitions and
scenes (numpy only to try every pair of scenes at once), so that a bug in the fast code cannot
hide in a shared helper.

- A transition is a boundary when ``prob >= threshold``.
- AP: average precision of all transitions pooled, as scikit-learn defines it
  (sum over distinct score thresholds, from high to low, of the recall gained times the precision
  there); a set without a true boundary has AP 0. mAP: unweighted mean of per-movie AP.
- Miou: scene k of a movie runs from the frame after the previous scene's last frame (0 for the
  first) to ``shot_end_frame`` of its last shot, the last scene ending at the last shot's end frame.
  IoU counts frames inclusively, 0 without overlap. Per movie, (mean over predicted scenes of the
  best IoU with a true scene + mean over true scenes of the best IoU with a predicted scene) / 2;
  the result is the unweighted mean over movies.
- Precision, Recall, F1 per movie (an empty denominator gives 0), then unweighted means.
- Recall@Ns: a true boundary is found when a predicted boundary lies strictly less than N seconds
  away, a boundary's time being ``shot_end_frame`` of the shot before the cut divided by fps.
"""

from __future__ import annotations

import numpy as np


def boundaries(prob, threshold: float) -> list[bool]:
    """Predicted boundaries: probability at or above the threshold."""
    return [float(p) >= threshold for p in prob]


def average_precision(labels, scores) -> float:
    """Average precision of one ranking: sum of (recall gain) x (precision) over distinct scores."""
    pairs = sorted(zip((float(s) for s in scores), (bool(y) for y in labels)), key=lambda sy: -sy[0])
    n_pos = sum(1 for _, y in pairs if y)
    if n_pos == 0:
        return 0.0
    ap, seen, hits, prev_recall, i = 0.0, 0, 0, 0.0, 0
    while i < len(pairs):
        score = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == score:  # all tied scores cross the threshold together
            seen += 1
            hits += pairs[i][1]
            i += 1
        recall = hits / n_pos
        ap += (recall - prev_recall) * (hits / seen)
        prev_recall = recall
    return ap


def scenes(boundary, shot_end_frame) -> list[tuple[int, int]]:
    """Inclusive frame ranges (first, last) of a movie's scenes."""
    out, first = [], 0
    for shot, cut in enumerate(boundary):
        if cut:
            out.append((first, int(shot_end_frame[shot])))
            first = int(shot_end_frame[shot]) + 1
    out.append((first, int(shot_end_frame[len(boundary)])))
    return out


def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Intersection over union of two inclusive frame ranges."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    return inter / (max(a[1], b[1]) - min(a[0], b[0]) + 1)


def best_iou_mean(these: list[tuple[int, int]], others: list[tuple[int, int]]) -> float:
    """Mean over ``these`` scenes of their best IoU with any of ``others`` (every pair is tried)."""
    first = np.array([b[0] for b in others])  # [S_other]
    last = np.array([b[1] for b in others])
    total = 0.0
    for a_first, a_last in these:
        inter = np.minimum(last, a_last) - np.maximum(first, a_first) + 1  # [S_other], <= 0: no overlap
        union = np.maximum(last, a_last) - np.minimum(first, a_first) + 1
        total += float(np.max(np.where(inter > 0, inter / union, 0.0)))
    return total / len(these)


def miou(gt_boundary, pred_boundary, shot_end_frame) -> float:
    """Mean maximum IoU of one movie."""
    true, pred = scenes(gt_boundary, shot_end_frame), scenes(pred_boundary, shot_end_frame)
    return (best_iou_mean(pred, true) + best_iou_mean(true, pred)) / 2


def precision_recall_f1(gt_boundary, pred_boundary) -> tuple[float, float, float]:
    """Precision, recall and F1 of one movie; 0 for an empty denominator."""
    tp = fp = fn = 0
    for g, p in zip(gt_boundary, pred_boundary):
        tp += bool(g) and bool(p)
        fp += (not g) and bool(p)
        fn += bool(g) and not p
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def recall_at_seconds(gt_boundary, pred_boundary, shot_end_frame, fps: float, window_s: float) -> float:
    """Share of true boundaries with a predicted boundary less than ``window_s`` seconds away."""
    true_frames = [int(shot_end_frame[i]) for i, g in enumerate(gt_boundary) if g]
    pred_frames = [int(shot_end_frame[i]) for i, p in enumerate(pred_boundary) if p]
    if not true_frames:
        return 0.0
    found = sum(1 for t in true_frames if any(abs(p - t) / fps < window_s for p in pred_frames))
    return found / len(true_frames)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def evaluate(gt: dict, prob: dict, shot_end_frame: dict, threshold: float = 0.5, fps: float = 24.0,
             window_s: float = 3.0) -> dict:
    """The Eluvio scores (plus Recall@Ns) of a set of movies: scalars and per-movie dicts."""
    names = sorted(gt)
    pooled_labels = [bool(y) for n in names for y in gt[n]]
    pooled_scores = [float(s) for n in names for s in prob[n]]
    per: dict[str, dict[str, float]] = {"AP": {}, "Miou": {}, "Precision": {}, "Recall": {}, "F1": {}, "R@": {}}
    for n in names:
        pred = boundaries(prob[n], threshold)
        per["AP"][n] = average_precision(gt[n], prob[n])
        per["Miou"][n] = miou(gt[n], pred, shot_end_frame[n])
        per["Precision"][n], per["Recall"][n], per["F1"][n] = precision_recall_f1(gt[n], pred)
        per["R@"][n] = recall_at_seconds(gt[n], pred, shot_end_frame[n], fps, window_s)
    recall_key = f"Recall@{window_s:g}s"
    out = {"AP": average_precision(pooled_labels, pooled_scores), "mAP": mean(per["AP"].values())}
    for key in ("Miou", "Precision", "Recall", "F1"):
        out[key] = mean(per[key].values())
    out[recall_key] = mean(per["R@"].values())
    for key in ("AP", "Miou", "Precision", "Recall", "F1"):
        out[f"{key}_dict"] = per[key]
    out[f"{recall_key}_dict"] = per["R@"]
    return out
