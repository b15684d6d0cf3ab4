"""Scene-boundary metrics, numerically equal to the Eluvio challenge's ``evaluate_sceneseg.py``.

Conventions (all checked against the challenge script and by tests against a brute-force reference):

- A transition is predicted a boundary when ``prob >= threshold`` (the challenge uses ``>=``).
- AP: scikit-learn ``average_precision_score`` over all transitions pooled; mAP: the unweighted mean
  of per-movie AP (a movie without any true boundary has AP 0, as scikit-learn returns).
- Miou (Baraldi et al.): a movie's scenes become inclusive frame ranges; scene k runs from the frame
  after the previous scene's last frame (0 for the first scene) to ``shot_end_frame`` of its last
  shot. Miou = (mean over predicted scenes of the best IoU with a true scene + mean over true scenes
  of the best IoU with a predicted scene) / 2; the reported value is the unweighted mean over movies.
- Precision, Recall, F1 per movie, then the unweighted mean over movies. An empty denominator counts
  as 0. One deliberate difference: when a movie has neither precision nor recall the challenge
  script divides 0 by 0 and its mean F1 becomes NaN; here that movie's F1 is 0. (Fed the raw
  pickles' torch tensors, the challenge script also computes P/R/F1 in float32, about 1e-7 off the
  exact values returned here; with numpy inputs the two agree to 1e-12.)
- Recall@Ns (LGSS, Rao et al. 2020): a true boundary counts as found when a predicted boundary lies
  strictly less than ``window_s`` seconds away, a boundary's time being ``shot_end_frame`` of the
  shot before the cut divided by ``fps``. Unlike LGSS's script, the search is not capped at 5 shots
  either side (it only matters for shots shorter than 0.6 s) and a movie without true boundaries
  scores 0 (LGSS: 0 / (0 + 1e-5)).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np
from sklearn.metrics import average_precision_score

DEFAULT_GRID = np.round(np.linspace(0.01, 0.99, 99), 2)  # 0.5 is exactly on the grid


# ----------------------------------------------------------------------------- validation


def _check_gt(name: str, gt) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 1 or gt.size == 0:
        raise ValueError(f"{name}: expected ground truth of shape [N-1] with N >= 2, found shape {gt.shape}")
    if gt.dtype != np.bool_:
        raise ValueError(f"{name}: expected boolean ground truth, found dtype {gt.dtype}")
    return gt


def _check_prob(name: str, prob, n: int) -> np.ndarray:
    prob = np.asarray(prob)
    if prob.shape != (n,):
        raise ValueError(f"{name}: expected {n} transition probabilities (like the ground truth), found shape {prob.shape}")
    if not (np.issubdtype(prob.dtype, np.floating) or np.issubdtype(prob.dtype, np.integer) or prob.dtype == np.bool_):
        raise ValueError(f"{name}: expected numeric probabilities, found dtype {prob.dtype}")
    prob = prob.astype(np.float64)
    bad = ~((prob >= 0.0) & (prob <= 1.0))  # also catches NaN
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: expected probabilities in [0, 1], found {prob[i]!r} at transition {i}")
    return prob


def _check_end_frames(name: str, end, n_transitions: int) -> np.ndarray:
    end = np.asarray(end)
    if end.shape != (n_transitions + 1,):
        raise ValueError(f"{name}: expected shot_end_frame of shape [{n_transitions + 1}] (one per shot), found shape {end.shape}")
    if not np.issubdtype(end.dtype, np.integer):
        raise ValueError(f"{name}: expected integer shot_end_frame, found dtype {end.dtype}")
    end = end.astype(np.int64)
    if end[0] < 0 or (np.diff(end) <= 0).any():
        raise ValueError(f"{name}: expected shot_end_frame non-negative and strictly increasing, found {end[:5].tolist()}...")
    return end


def check_movie(
    name: str, gt, prob=None, shot_end_frame=None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate one movie's ground truth [N-1] bool, probabilities [N-1] in [0, 1] and end frames [N]."""
    gt = _check_gt(name, gt)
    prob = None if prob is None else _check_prob(name, prob, gt.size)
    end = None if shot_end_frame is None else _check_end_frames(name, shot_end_frame, gt.size)
    return gt, prob, end


def _check_pair(name: str, gt, pred) -> tuple[np.ndarray, np.ndarray]:
    gt = _check_gt(name, gt)
    pred = np.asarray(pred)
    if pred.shape != gt.shape or pred.dtype != np.bool_:
        raise ValueError(f"{name}: expected boolean predicted boundaries of shape {gt.shape}, found {pred.dtype} {pred.shape}")
    return gt, pred


def _check_dicts(gt: Mapping, prob: Mapping) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not gt:
        raise ValueError("expected at least one movie, found none")
    if set(gt) != set(prob):
        missing, extra = sorted(set(gt) - set(prob)), sorted(set(prob) - set(gt))
        raise ValueError(f"expected predictions for exactly the ground-truth movies; missing {missing}, unexpected {extra}")
    out = {}
    for name in gt:
        g = _check_gt(name, gt[name])
        out[name] = (g, _check_prob(name, prob[name], g.size))
    return out


# ----------------------------------------------------------------------------- per movie


def _scene_ends(boundary: np.ndarray, end: np.ndarray) -> np.ndarray:
    """[N-1] bool, [N] frames -> [S] last frame of each scene (the last scene ends with the movie)."""
    return np.append(end[np.flatnonzero(boundary)], end[-1])


def miou(gt_boundary: np.ndarray, pred_boundary: np.ndarray, shot_end_frame: np.ndarray) -> float:
    """Mean maximum IoU of one movie's true and predicted scenes (boolean boundary arrays [N-1])."""
    gt_boundary, pred_boundary = _check_pair("miou", gt_boundary, pred_boundary)
    end = _check_end_frames("miou", shot_end_frame, gt_boundary.size)
    g_end, p_end = _scene_ends(gt_boundary, end), _scene_ends(pred_boundary, end)
    g_start = np.concatenate(([0], g_end[:-1] + 1))
    p_start = np.concatenate(([0], p_end[:-1] + 1))
    # Both scene lists partition the same frames, so the overlapping (true, predicted) pairs are
    # exactly the pieces of the merged partition: piece k ends at cut[k] and belongs to one true and
    # one predicted scene. Pairs that do not overlap have IoU 0 and never win a max.
    cut = np.union1d(g_end, p_end)  # [K]
    gi = np.searchsorted(g_end, cut)  # [K] true scene of each piece, non-decreasing
    pi = np.searchsorted(p_end, cut)  # [K] predicted scene of each piece, non-decreasing
    inter = np.minimum(g_end[gi], p_end[pi]) - np.maximum(g_start[gi], p_start[pi]) + 1
    union = np.maximum(g_end[gi], p_end[pi]) - np.minimum(g_start[gi], p_start[pi]) + 1
    iou = inter / union  # [K]
    best_gt = np.maximum.reduceat(iou, np.flatnonzero(np.diff(gi, prepend=-1)))  # [S_true]
    best_pred = np.maximum.reduceat(iou, np.flatnonzero(np.diff(pi, prepend=-1)))  # [S_pred]
    return float((best_pred.mean() + best_gt.mean()) / 2)


def precision_recall_f1(gt_boundary: np.ndarray, pred_boundary: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of one movie's boolean boundaries (an empty denominator gives 0)."""
    gt_boundary, pred_boundary = _check_pair("precision_recall_f1", gt_boundary, pred_boundary)
    tp = int(np.count_nonzero(gt_boundary & pred_boundary))
    n_pred, n_true = int(np.count_nonzero(pred_boundary)), int(np.count_nonzero(gt_boundary))
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f1


def recall_at_seconds(
    gt_boundary: np.ndarray, pred_boundary: np.ndarray, shot_end_frame: np.ndarray, fps: float, window_s: float
) -> float:
    """Share of true boundaries with a predicted boundary less than ``window_s`` seconds away (0 if none)."""
    gt_boundary, pred_boundary = _check_pair("recall_at_seconds", gt_boundary, pred_boundary)
    end = _check_end_frames("recall_at_seconds", shot_end_frame, gt_boundary.size)
    if not fps > 0 or not window_s >= 0:
        raise ValueError(f"recall_at_seconds: expected fps > 0 and window_s >= 0, found fps={fps}, window_s={window_s}")
    t_true = end[:-1][gt_boundary]  # [T] frame of each true cut
    t_pred = end[:-1][pred_boundary]  # [P] sorted, since end frames increase
    if t_true.size == 0 or t_pred.size == 0:
        return 0.0
    # Nearest predicted cut on either side of each true cut.
    j = np.searchsorted(t_pred, t_true)
    after = t_pred[np.minimum(j, t_pred.size - 1)]
    before = t_pred[np.maximum(j - 1, 0)]
    gap = np.minimum(np.abs(after - t_true), np.abs(t_true - before))  # [T] frames
    return float(np.mean(gap / fps < window_s))


# ----------------------------------------------------------------------------- over movies


def average_precision(gt: dict[str, np.ndarray], prob: dict[str, np.ndarray]) -> tuple[float, float, dict[str, float]]:
    """AP over all transitions pooled, mAP (unweighted mean of per-movie AP), and the per-movie APs."""
    checked = _check_dicts(gt, prob)
    ap_dict = {name: _ap(g, p) for name, (g, p) in checked.items()}
    pooled_gt = np.concatenate([g for g, _ in checked.values()])
    pooled_prob = np.concatenate([p for _, p in checked.values()])
    return _ap(pooled_gt, pooled_prob), float(np.mean(list(ap_dict.values()))), ap_dict


def _ap(gt: np.ndarray, prob: np.ndarray) -> float:
    if not gt.any():
        return 0.0  # what scikit-learn returns, without its warning
    return float(average_precision_score(gt, prob))


def recall_key(window_s: float) -> str:
    """Name of the Recall@Ns metric for a window of ``window_s`` seconds ("Recall@3s", "Recall@2.5s")."""
    return f"Recall@{window_s:g}s"


def evaluate(
    gt: dict[str, np.ndarray],
    prob: dict[str, np.ndarray],
    shot_end_frame: dict[str, np.ndarray],
    threshold: float = 0.5,
    fps: float | dict[str, float] = 24.0,
    window_s: float = 3.0,
) -> dict:
    """All metrics of a set of movies: the Eluvio keys first, then Recall@Ns and per-movie dicts.

    ``fps``: one frame rate for all movies, or one per movie (Recall@Ns turns frames into seconds)."""
    checked = _check_dicts(gt, prob)
    if set(shot_end_frame) != set(gt):
        raise ValueError(f"expected shot_end_frame for exactly the ground-truth movies, missing {sorted(set(gt) - set(shot_end_frame))}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"expected a threshold in [0, 1], found {threshold}")
    ap, m_ap, ap_dict = average_precision(gt, prob)
    per: dict[str, dict[str, float]] = {k: {} for k in ("Miou", "Precision", "Recall", "F1", "R@")}
    for name, (g, p) in checked.items():
        end = _check_end_frames(name, shot_end_frame[name], g.size)
        pred = p >= threshold
        per["Miou"][name] = miou(g, pred, end)
        per["Precision"][name], per["Recall"][name], per["F1"][name] = precision_recall_f1(g, pred)
        per["R@"][name] = recall_at_seconds(g, pred, end, fps[name] if isinstance(fps, dict) else fps, window_s)
    key = recall_key(window_s)

    def mean(d: dict[str, float]) -> float:
        return float(np.mean(list(d.values())))

    return {
        "AP": ap,
        "mAP": m_ap,
        "Miou": mean(per["Miou"]),
        "Precision": mean(per["Precision"]),
        "Recall": mean(per["Recall"]),
        "F1": mean(per["F1"]),
        "AP_dict": ap_dict,
        "Miou_dict": per["Miou"],
        key: mean(per["R@"]),
        "Precision_dict": per["Precision"],
        "Recall_dict": per["Recall"],
        "F1_dict": per["F1"],
        f"{key}_dict": per["R@"],
    }


# ----------------------------------------------------------------------------- thresholds and chance


def choose_threshold(
    gt: np.ndarray | dict[str, np.ndarray],
    prob: np.ndarray | dict[str, np.ndarray],
    metric: str = "f1",
    shot_end_frame: np.ndarray | dict[str, np.ndarray] | None = None,
    grid: np.ndarray | None = None,
) -> float:
    """Threshold on ``grid`` maximising F1 of all transitions pooled, or mean per-movie Miou.

    Pass validation data only: the result is a pure function of the arrays given. Ties (within
    1e-12) go to the threshold closest to 0.5, then to the lower one.
    """
    if metric not in ("f1", "miou"):
        raise ValueError(f"expected metric 'f1' or 'miou', found {metric!r}")
    if not isinstance(gt, Mapping):
        gt, prob = {"gt": gt}, {"gt": prob}
        if shot_end_frame is not None:
            shot_end_frame = {"gt": shot_end_frame}
    checked = _check_dicts(gt, prob)
    grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not ((grid >= 0) & (grid <= 1)).all():
        raise ValueError(f"expected a non-empty 1-D grid of thresholds in [0, 1], found {grid!r}")
    if metric == "f1":
        scores = _pooled_f1(np.concatenate([g for g, _ in checked.values()]), np.concatenate([p for _, p in checked.values()]), grid)
    else:
        if shot_end_frame is None or set(shot_end_frame) != set(checked):
            raise ValueError("choose_threshold(metric='miou'): expected shot_end_frame for every movie")
        scores = np.array([np.mean([miou(g, p >= t, shot_end_frame[n]) for n, (g, p) in checked.items()]) for t in grid])
    best = scores >= scores.max() - 1e-12
    candidates = grid[best]
    order = np.lexsort((candidates, np.round(np.abs(candidates - 0.5), 9)))  # closest to 0.5, then lower
    return float(candidates[order[0]])


def _pooled_f1(gt: np.ndarray, prob: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 of ``prob >= t`` for every t of ``grid`` ([G]), from sorted scores instead of G passes."""
    all_sorted = np.sort(prob)
    pos_sorted = np.sort(prob[gt])
    n_pred = prob.size - np.searchsorted(all_sorted, grid, side="left")  # [G] count of prob >= t
    tp = pos_sorted.size - np.searchsorted(pos_sorted, grid, side="left")  # [G]
    denom = n_pred + pos_sorted.size
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def chance_predictions(gt: dict[str, np.ndarray], seed: int, rate: float | None = None) -> dict[str, np.ndarray]:
    """A chance-level predictor that never looks at the labels' positions.

    Each transition gets an independent uniform score u, mapped monotonically so that
    ``prob >= 0.5`` exactly when u falls in the top ``rate`` share: at the usual 0.5 threshold it
    fires at random at rate ``rate`` (default: the pooled boundary rate of ``gt``; pass the training
    rate to keep test labels out of it), and its ranking is uniformly random, so its AP is about the
    boundary rate. Random boundaries at the true rate are the Miou reference (about 0.30-0.35 on
    MovieScenes). Scores of a movie depend only on ``seed`` and its imdb id, not on dict order.
    """
    checked = {name: _check_gt(name, g) for name, g in gt.items()}
    if not checked:
        raise ValueError("expected at least one movie, found none")
    if rate is None:
        rate = float(np.mean(np.concatenate(list(checked.values()))))
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"expected a boundary rate in [0, 1], found {rate}")
    out = {}
    for name, g in checked.items():
        u = np.random.default_rng([seed, zlib.crc32(name.encode())]).random(g.size)  # [N-1] in [0, 1)
        cut = 1.0 - rate  # u >= cut <=> boundary
        low = 0.5 * u / max(cut, 1e-300)  # [0, 0.5) below the cut
        high = 0.5 + 0.5 * (u - cut) / max(rate, 1e-300)  # [0.5, 1) above it
        out[name] = np.clip(np.where(u < cut, low, high), 0.0, 1.0)
    return out
