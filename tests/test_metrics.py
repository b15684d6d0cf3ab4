"""Metrics against an independent brute-force reference, scikit-learn and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from sceneseg.evaluation import metrics

# ----------------------------------------------------------------------------- brute force


def ref_scenes(boundary, end) -> list[set[int]]:
    """Scenes as explicit frame sets, built shot by shot."""
    scenes, start = [], 0
    for i in range(len(end)):
        last_shot = i == len(end) - 1
        if last_shot or boundary[i]:
            scenes.append(set(range(start, int(end[i]) + 1)))
            start = int(end[i]) + 1
    return scenes


def ref_miou(gt, pred, end) -> float:
    a, b = ref_scenes(gt, end), ref_scenes(pred, end)
    iou = [[len(x & y) / len(x | y) for y in b] for x in a]
    best_true = [max(row) for row in iou]
    best_pred = [max(iou[i][j] for i in range(len(a))) for j in range(len(b))]
    return (sum(best_pred) / len(best_pred) + sum(best_true) / len(best_true)) / 2


def ref_prf(gt, pred):
    tp = sum(1 for g, p in zip(gt, pred) if g and p)
    n_pred, n_true = sum(pred), sum(gt)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def ref_recall_at(gt, pred, end, fps, window_s):
    found = total = 0
    for i, g in enumerate(gt):
        if not g:
            continue
        total += 1
        found += any(pred[j] and abs(int(end[j]) - int(end[i])) / fps < window_s for j in range(len(pred)))
    return found / total if total else 0.0


def random_movie(rng, n_shots, rate):
    lengths = rng.integers(1, 40, size=n_shots)
    end = np.cumsum(lengths) - 1 + rng.integers(0, 5)  # the first scene may start before the first shot
    gt = rng.random(n_shots - 1) < rate
    return gt, end.astype(np.int64)


def edge_movies(rng):
    """Random movies plus the corner cases: no boundary, all boundaries, last transition a boundary."""
    cases = []
    for k in range(60):
        n = int(rng.integers(2, 60))
        rate = [0.0, 0.05, 0.2, 0.5, 0.9, 1.0][k % 6]
        gt, end = random_movie(rng, n, rate)
        cases.append((gt, end))
    gt, end = random_movie(rng, 30, 0.2)
    gt[-1] = True
    cases.append((gt, end))
    cases.append((np.array([True]), np.array([3, 7])))
    cases.append((np.array([False]), np.array([0, 1])))
    return cases


# ----------------------------------------------------------------------------- Miou


def test_miou_matches_brute_force_on_random_movies():
    rng = np.random.default_rng(0)
    for gt, end in edge_movies(rng):
        for rate in (0.0, 0.1, 0.5, 1.0):
            pred = rng.random(gt.size) < rate
            pred2 = gt.copy()
            assert metrics.miou(gt, pred, end) == pytest.approx(ref_miou(gt, pred, end), abs=1e-12)
            assert metrics.miou(gt, pred2, end) == pytest.approx(1.0, abs=1e-12)


def test_miou_hand_worked():
    # 4 shots ending at frames 9, 19, 29, 39. Truth: boundary after shot 1 -> scenes [0,19], [20,39].
    # Prediction: boundary after shot 0 -> scenes [0,9], [10,39].
    # IoU table (true x pred): [0,19]&[0,9] = 10/20 = 0.5; [0,19]&[10,39] = 10/40 = 0.25;
    #                          [20,39]&[0,9] = 0;          [20,39]&[10,39] = 20/30 = 2/3.
    # best per pred: 0.5, 2/3 -> 7/12; best per true: 0.5, 2/3 -> 7/12; Miou = 7/12.
    end = np.array([9, 19, 29, 39])
    gt = np.array([False, True, False])
    pred = np.array([True, False, False])
    assert metrics.miou(gt, pred, end) == pytest.approx(7 / 12, abs=1e-15)
    # No predicted boundary: one predicted scene [0,39]; IoU with [0,19] and [20,39] both 0.5.
    # per pred: 0.5; per true: (0.5 + 0.5) / 2 = 0.5 -> Miou 0.5.
    assert metrics.miou(gt, np.zeros(3, bool), end) == pytest.approx(0.5, abs=1e-15)
    # First shot ends at 4 (frames 0..4), the first scene still starts at frame 0:
    # truth [0,4],[5,9]; prediction [0,9] -> per pred max(5/10, 5/10) = 0.5, per true 0.5 -> 0.5.
    assert metrics.miou(np.array([True]), np.array([False]), np.array([4, 9])) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- P/R/F1, Recall@s


def test_precision_recall_f1_match_reference_and_hand_case():
    rng = np.random.default_rng(1)
    for gt, _ in edge_movies(rng):
        pred = rng.random(gt.size) < 0.3
        assert metrics.precision_recall_f1(gt, pred) == pytest.approx(ref_prf(gt, pred), abs=1e-12)
    # gt 1 1 0 0, pred 1 0 1 0: tp 1, P 1/2, R 1/2, F1 1/2.
    assert metrics.precision_recall_f1(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == (0.5, 0.5, 0.5)
    # Nothing predicted and nothing true: empty denominators count as 0 (Eluvio's F1 would be NaN).
    assert metrics.precision_recall_f1(np.zeros(3, bool), np.zeros(3, bool)) == (0.0, 0.0, 0.0)


def test_recall_at_seconds_hand_worked():
    # Shots end at frames 0, 24, 48, 96, 200 (fps 24): cut times 0 s, 1 s, 2 s, 4 s.
    end = np.array([0, 24, 48, 96, 200])
    gt = np.array([True, False, False, True])  # true cuts at 0 s and 4 s
    # Predicted cut at 2 s: 2 s from both true cuts < 3 s -> both found -> 1.0.
    assert metrics.recall_at_seconds(gt, np.array([False, False, True, False]), end, 24, 3.0) == 1.0
    # With a 2 s window the gap must be strictly smaller than 2 s -> none found -> 0.0.
    assert metrics.recall_at_seconds(gt, np.array([False, False, True, False]), end, 24, 2.0) == 0.0
    # Predicted cut at 1 s: 1 s from the cut at 0 s (found), 3 s from the one at 4 s (not < 3) -> 0.5.
    assert metrics.recall_at_seconds(gt, np.array([False, True, False, False]), end, 24, 3.0) == 0.5
    # No true cut -> 0; no predicted cut -> 0.
    assert metrics.recall_at_seconds(np.zeros(4, bool), np.ones(4, bool), end, 24, 3.0) == 0.0
    assert metrics.recall_at_seconds(gt, np.zeros(4, bool), end, 24, 3.0) == 0.0


def test_recall_at_seconds_matches_reference():
    rng = np.random.default_rng(2)
    for gt, end in edge_movies(rng):
        pred = rng.random(gt.size) < 0.2
        for window in (0.0, 0.5, 3.0):
            got = metrics.recall_at_seconds(gt, pred, end, 24.0, window)
            assert got == pytest.approx(ref_recall_at(gt, pred, end, 24.0, window), abs=1e-12)


# ----------------------------------------------------------------------------- AP and evaluate


def test_average_precision_matches_sklearn():
    rng = np.random.default_rng(3)
    gt = {f"tt{i:07d}": rng.random(int(rng.integers(5, 300))) < 0.1 for i in range(12)}
    gt["tt9999999"] = np.zeros(20, bool)  # no true boundary: AP 0 as scikit-learn gives
    prob = {k: np.round(rng.random(v.size), 2).astype(np.float32) for k, v in gt.items()}  # ties included
    ap, m_ap, ap_dict = metrics.average_precision(gt, prob)
    assert ap == pytest.approx(average_precision_score(np.concatenate(list(gt.values())), np.concatenate(list(prob.values()))), abs=1e-12)
    with pytest.warns(UserWarning):
        assert ap_dict["tt9999999"] == average_precision_score(gt["tt9999999"], prob["tt9999999"]) == 0.0
    for k in gt:
        if gt[k].any():
            assert ap_dict[k] == pytest.approx(average_precision_score(gt[k], prob[k]), abs=1e-12)
    assert m_ap == pytest.approx(np.mean([ap_dict[k] for k in gt]), abs=1e-12)


def test_evaluate_threshold_is_inclusive_and_means_are_unweighted():
    rng = np.random.default_rng(4)
    gt, prob, end = {}, {}, {}
    for i, (g, e) in enumerate(edge_movies(rng)[:20]):
        name = f"tt{i:07d}"
        gt[name], end[name] = g, e
        prob[name] = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=g.size)  # 0.5 exactly: counts as a boundary
    out = metrics.evaluate(gt, prob, end, threshold=0.5)
    assert list(out)[:8] == ["AP", "mAP", "Miou", "Precision", "Recall", "F1", "AP_dict", "Miou_dict"]
    pred = {k: p >= 0.5 for k, p in prob.items()}
    assert out["Miou"] == pytest.approx(np.mean([ref_miou(gt[k], pred[k], end[k]) for k in gt]), abs=1e-12)
    prf = np.array([ref_prf(gt[k], pred[k]) for k in gt])
    assert [out["Precision"], out["Recall"], out["F1"]] == pytest.approx(prf.mean(axis=0).tolist(), abs=1e-12)
    assert out["Recall@3s"] == pytest.approx(np.mean([ref_recall_at(gt[k], pred[k], end[k], 24.0, 3.0) for k in gt]))
    assert out["Miou_dict"].keys() == gt.keys()


# ----------------------------------------------------------------------------- thresholds, chance


def test_choose_threshold_f1_picks_grid_optimum_and_is_pure():
    rng = np.random.default_rng(5)
    gt = rng.random(2000) < 0.1
    prob = np.clip(gt * 0.3 + rng.random(2000) * 0.6, 0, 1)
    grid = np.round(np.linspace(0.01, 0.99, 99), 2)
    brute = [ref_prf(gt, prob >= t)[2] for t in grid]
    t = metrics.choose_threshold(gt, prob)
    assert brute[int(np.argmin(np.abs(grid - t)))] == pytest.approx(max(brute), abs=1e-12)
    before = (gt.copy(), prob.copy())
    assert metrics.choose_threshold(gt, prob) == t  # deterministic
    assert np.array_equal(gt, before[0]) and np.array_equal(prob, before[1])  # inputs untouched
    # Dict input pools the movies: same answer as the concatenated arrays.
    assert metrics.choose_threshold({"a": gt[:700], "b": gt[700:]}, {"a": prob[:700], "b": prob[700:]}) == t


def test_choose_threshold_ties_go_to_closest_to_half_then_lower():
    gt = np.array([True, False, True, False])
    prob = np.array([0.9, 0.1, 0.9, 0.1])  # every t in (0.1, 0.9] gives F1 = 1
    assert metrics.choose_threshold(gt, prob) == 0.5
    assert metrics.choose_threshold(gt, prob, grid=[0.3, 0.7]) == 0.3


def test_choose_threshold_miou_matches_brute_force():
    rng = np.random.default_rng(6)
    gt, prob, end = {}, {}, {}
    for i in range(4):
        g, e = random_movie(rng, 80, 0.15)
        gt[f"m{i}"], end[f"m{i}"] = g, e
        prob[f"m{i}"] = np.clip(g * 0.4 + rng.random(g.size) * 0.6, 0, 1)
    grid = [0.2, 0.4, 0.5, 0.6, 0.8]
    scores = [np.mean([ref_miou(gt[k], prob[k] >= t, end[k]) for k in gt]) for t in grid]
    t = metrics.choose_threshold(gt, prob, metric="miou", shot_end_frame=end, grid=grid)
    assert t == grid[int(np.argmax(scores))]


def test_chance_predictions_rate_and_order_independence():
    rng = np.random.default_rng(7)
    gt = {f"tt{i}": rng.random(5000) < 0.08 for i in range(3)}
    a = metrics.chance_predictions(gt, seed=1)
    rate = np.mean(np.concatenate(list(gt.values())))
    fired = np.mean(np.concatenate([p >= 0.5 for p in a.values()]))
    assert abs(fired - rate) < 0.01
    b = metrics.chance_predictions(dict(reversed(list(gt.items()))), seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in gt)
    assert not np.array_equal(a["tt0"], metrics.chance_predictions(gt, seed=2)["tt0"])
    ap, _, _ = metrics.average_precision(gt, a)
    assert abs(ap - rate) < 0.03  # a random ranking's AP is about the positive rate
    none = metrics.chance_predictions(gt, seed=1, rate=0.0)
    every = metrics.chance_predictions(gt, seed=1, rate=1.0)
    assert all((p < 0.5).all() for p in none.values()) and all((p >= 0.5).all() for p in every.values())


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_movie():
    gt = {"tt1": np.array([True, False])}
    with pytest.raises(ValueError, match="at least one movie"):
        metrics.average_precision({}, {})
    with pytest.raises(ValueError, match="tt1.*2 transition probabilities"):
        metrics.average_precision(gt, {"tt1": np.array([0.5])})
    with pytest.raises(ValueError, match=r"tt1.*\[0, 1\]"):
        metrics.average_precision(gt, {"tt1": np.array([0.5, 1.5])})
    with pytest.raises(ValueError, match=r"tt1.*\[0, 1\]"):
        metrics.average_precision(gt, {"tt1": np.array([0.5, np.nan])})
    with pytest.raises(ValueError, match="tt1.*boolean"):
        metrics.average_precision({"tt1": np.array([1, 0])}, {"tt1": np.array([0.5, 0.5])})
    with pytest.raises(ValueError, match="missing"):
        metrics.average_precision(gt, {"tt2": np.array([0.5, 0.5])})
    with pytest.raises(ValueError, match="tt1.*shot_end_frame"):
        metrics.evaluate(gt, {"tt1": np.array([0.5, 0.5])}, {"tt1": np.array([1, 2])})
    with pytest.raises(ValueError, match="tt1.*strictly increasing"):
        metrics.evaluate(gt, {"tt1": np.array([0.5, 0.5])}, {"tt1": np.array([1, 2, 2])})
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.miou(np.array([], bool), np.array([], bool), np.array([3]))


def test_recall_at_seconds_reads_each_movie_s_own_frame_rate():
    # one true cut after frame 23, one predicted after frame 59: 36 frames apart
    gt = {"a": np.array([True, False]), "b": np.array([True, False])}
    prob = {"a": np.array([0.0, 1.0]), "b": np.array([0.0, 1.0])}
    ends = {"a": np.array([23, 59, 99]), "b": np.array([23, 59, 99])}
    # 36 frames: 1.5 s at 24 fps (within 3 s), 3.0 s at 12 fps (not within)
    res = metrics.evaluate(gt, prob, ends, fps={"a": 24.0, "b": 12.0}, window_s=3.0)
    assert res["Recall@3s_dict"] == {"a": 1.0, "b": 0.0} and res["Recall@3s"] == 0.5
    assert metrics.evaluate(gt, prob, ends, fps=24.0, window_s=3.0)["Recall@3s"] == 1.0
