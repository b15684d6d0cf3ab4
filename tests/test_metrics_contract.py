"""The metrics' input contract and edges: every refusal names the function or movie, what was
expected and what arrived (full messages), the accepted corner values, and the chance scores'
distribution. Written against surviving mutants (see bench/RESULTS_mutants.md)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sceneseg.evaluation import metrics

GT = np.array([True, False, True])
END = np.array([3, 7, 9, 12])
PROB = np.array([0.1, 0.2, 0.3])

REFUSALS = [
    (lambda: metrics.miou(GT[:2], GT, END), "miou: expected boolean predicted boundaries of shape (2,), found bool (3,)"),
    (lambda: metrics.miou(GT, GT.astype(np.int8), END), "miou: expected boolean predicted boundaries of shape (3,), found int8 (3,)"),
    (lambda: metrics.miou(np.array([1, 0, 1]), GT, END), "miou: expected boolean ground truth, found dtype int64"),
    (lambda: metrics.miou(GT, GT, END[:3]), "miou: expected shot_end_frame of shape [4] (one per shot), found shape (3,)"),
    (lambda: metrics.miou(GT, GT, END.astype(float)), "miou: expected integer shot_end_frame, found dtype float64"),
    (lambda: metrics.miou(GT, GT, np.array([-1, 7, 9, 12])),
     "miou: expected shot_end_frame non-negative and strictly increasing, found [-1, 7, 9, 12]..."),
    (lambda: metrics.miou(np.zeros(6, bool), np.zeros(6, bool), np.array([1, 2, 3, 4, 5, 6, 6])),
     "miou: expected shot_end_frame non-negative and strictly increasing, found [1, 2, 3, 4, 5]..."),
    (lambda: metrics.precision_recall_f1(GT, GT[:2]),
     "precision_recall_f1: expected boolean predicted boundaries of shape (3,), found bool (2,)"),
    (lambda: metrics.precision_recall_f1(GT[:0], GT[:0]),
     "precision_recall_f1: expected ground truth of shape [N-1] with N >= 2, found shape (0,)"),
    (lambda: metrics.recall_at_seconds(GT, GT.astype(int), END, 24, 3),
     "recall_at_seconds: expected boolean predicted boundaries of shape (3,), found int64 (3,)"),
    (lambda: metrics.recall_at_seconds(GT, GT, END[:3], 24, 3),
     "recall_at_seconds: expected shot_end_frame of shape [4] (one per shot), found shape (3,)"),
    (lambda: metrics.recall_at_seconds(GT, GT, END, 0, 3),
     "recall_at_seconds: expected fps > 0 and window_s >= 0, found fps=0, window_s=3"),
    (lambda: metrics.recall_at_seconds(GT, GT, END, 24, -1),
     "recall_at_seconds: expected fps > 0 and window_s >= 0, found fps=24, window_s=-1"),
    (lambda: metrics.check_movie("tt1", GT, np.array([0.1, 0.2]), END),
     "tt1: expected 3 transition probabilities (like the ground truth), found shape (2,)"),
    (lambda: metrics.check_movie("tt1", GT, np.array([0.1, 1.5, 0.2]), END),
     "tt1: expected probabilities in [0, 1], found np.float64(1.5) at transition 1"),
    (lambda: metrics.check_movie("tt1", GT, np.array([0.1, 0.2, np.nan]), END),
     "tt1: expected probabilities in [0, 1], found np.float64(nan) at transition 2"),
    (lambda: metrics.check_movie("tt1", GT, np.array(["a", "b", "c"]), END),
     "tt1: expected numeric probabilities, found dtype <U1"),
    (lambda: metrics.check_movie("tt1", GT, PROB, END[:3]),
     "tt1: expected shot_end_frame of shape [4] (one per shot), found shape (3,)"),
    (lambda: metrics.check_movie("tt1", GT[:, None]), "tt1: expected ground truth of shape [N-1] with N >= 2, found shape (3, 1)"),
    (lambda: metrics.evaluate({}, {}, {}), "expected at least one movie, found none"),
    (lambda: metrics.evaluate({"a": GT, "b": GT}, {"a": PROB, "c": PROB}, {"a": END, "b": END}),
     "expected predictions for exactly the ground-truth movies; missing ['b'], unexpected ['c']"),
    (lambda: metrics.evaluate({"a": GT, "b": GT}, {"a": PROB, "b": PROB}, {"a": END}),
     "expected shot_end_frame for exactly the ground-truth movies, missing ['b']"),
    (lambda: metrics.evaluate({"a": GT}, {"a": PROB}, {"a": END}, threshold=1.5), "expected a threshold in [0, 1], found 1.5"),
    (lambda: metrics.evaluate({"a": GT}, {"a": PROB}, {"a": END}, threshold=-0.1), "expected a threshold in [0, 1], found -0.1"),
    (lambda: metrics.choose_threshold(GT, PROB, metric="auc"), "expected metric 'f1' or 'miou', found 'auc'"),
    (lambda: metrics.choose_threshold(GT, PROB, grid=[1.5]), "expected a non-empty 1-D grid of thresholds in [0, 1], found array([1.5])"),
    (lambda: metrics.choose_threshold(GT, PROB, grid=[-0.5]), "expected a non-empty 1-D grid of thresholds in [0, 1], found array([-0.5])"),
    (lambda: metrics.choose_threshold(GT, PROB, grid=[]), "expected a non-empty 1-D grid of thresholds in [0, 1], found array([], dtype=float64)"),
    (lambda: metrics.choose_threshold(GT, PROB, grid=[[0.2, 0.4]]),
     "expected a non-empty 1-D grid of thresholds in [0, 1], found array([[0.2, 0.4]])"),
    (lambda: metrics.choose_threshold({"a": GT, "b": GT}, {"a": PROB, "b": PROB}, metric="miou", shot_end_frame={"a": END}),
     "choose_threshold(metric='miou'): expected shot_end_frame for every movie"),
    (lambda: metrics.choose_threshold(GT, PROB, metric="miou"), "choose_threshold(metric='miou'): expected shot_end_frame for every movie"),
    (lambda: metrics.chance_predictions({}, 0), "expected at least one movie, found none"),
    (lambda: metrics.chance_predictions({"a": GT}, 0, rate=1.5), "expected a boundary rate in [0, 1], found 1.5"),
    (lambda: metrics.chance_predictions({"a": GT}, 0, rate=-0.5), "expected a boundary rate in [0, 1], found -0.5"),
    (lambda: metrics.chance_predictions({"tt7": GT[:0]}, 0, rate=0.5), "tt7: expected ground truth of shape [N-1] with N >= 2, found shape (0,)"),
]


@pytest.mark.parametrize("call, message", REFUSALS, ids=[m[:50] for _, m in REFUSALS])
def test_refusals_say_what_was_expected_and_found(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def test_accepted_corner_values():
    # probabilities may be integers or booleans (a hard 0/1 predictor); thresholds 0 and 1 are valid
    out = metrics.evaluate({"a": GT}, {"a": np.array([1, 0, 1])}, {"a": END}, threshold=1.0)
    assert (out["Precision"], out["Recall"], out["F1"]) == (1.0, 1.0, 1.0)
    out = metrics.evaluate({"a": GT}, {"a": np.array([False, False, True])}, {"a": END}, threshold=0.0)
    assert (out["Precision"], out["Recall"]) == (2 / 3, 1.0)  # 0.0: every transition a boundary
    _, prob, end = metrics.check_movie("tt1", GT, np.array([0, 1, 1], dtype=np.int32), np.array([0, 1, 2, 3], np.int32))
    assert prob.dtype == np.float64 and end.dtype == np.int64 and end[0] == 0
    # a one-value grid, and a grid reaching 0 and 1
    assert metrics.choose_threshold(GT, PROB, grid=[0.3]) == 0.3
    assert metrics.choose_threshold(GT, PROB, grid=[0.0, 1.0]) == 0.0
    assert metrics.recall_at_seconds(GT, GT, END, 0.5, 0.0) == 0.0  # fps below 1 is fine; window 0 finds nothing
    assert metrics.recall_at_seconds(GT, GT, END, 0.5, 1e-9) == 1.0


def test_choose_threshold_miou_on_one_movies_arrays():
    gt = np.array([False, True, False, False, True, False])
    prob = np.array([0.1, 0.7, 0.2, 0.3, 0.35, 0.05])
    end = np.array([4, 9, 14, 19, 24, 29, 34])
    # thresholds in (0.3, 0.35] give exactly the true scenes (Miou 1); 0.35 is the closest to 0.5
    assert metrics.choose_threshold(gt, prob, metric="miou", shot_end_frame=end) == 0.35
    assert metrics.choose_threshold({"m": gt}, {"m": prob}, metric="miou", shot_end_frame={"m": end}) == 0.35


def test_chance_scores_are_uniform_on_each_side_of_one_half():
    """Below the cut the scores spread uniformly over [0, 0.5), above it over [0.5, 1): the mapping
    is the one documented, so a ranking by score is a uniformly random ranking."""
    gt = {"tt1": np.zeros(40000, bool), "tt2": np.zeros(30000, bool)}
    for rate in (0.08, 0.6):
        p = np.concatenate(list(metrics.chance_predictions(gt, seed=3, rate=rate).values()))
        low, high = p[p < 0.5], p[p >= 0.5]
        for part, lo in ((low, 0.0), (high, 0.5)):
            counts, _ = np.histogram(part, bins=5, range=(lo, lo + 0.5))
            expected = part.size / 5
            assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), (rate, lo, counts)
        assert low.min() >= 0.0 and high.max() < 1.0
    # scores depend on the seed and the movie, not on the other movies or their order
    a = metrics.chance_predictions({"tt1": gt["tt1"], "tt2": gt["tt2"]}, seed=1, rate=0.1)
    b = metrics.chance_predictions({"tt2": gt["tt2"]}, seed=1, rate=0.1)
    assert np.array_equal(a["tt2"], b["tt2"]) and not np.array_equal(a["tt1"][:100], a["tt2"][:100])


def test_check_movie_leaves_absent_parts_absent():
    gt, prob, end = metrics.check_movie("tt1", GT)
    assert gt is not None and prob is None and end is None
    _, prob, end = metrics.check_movie("tt1", GT, PROB)
    assert prob.tolist() == PROB.tolist() and end is None
    _, prob, end = metrics.check_movie("tt1", GT, shot_end_frame=END)
    assert prob is None and end.tolist() == END.tolist()
