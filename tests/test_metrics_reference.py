"""`metrics.evaluate` and `sceneseg score` against the independent reference in eluvio_reference.py,
on random movies of real sizes (hundreds to ~3,000 shots) and on the edge cases of the definitions."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

import eluvio_reference as ref
from sceneseg import cli
from sceneseg.data.movies import END_FRAME_KEY, GT_KEY, PRED_KEY
from sceneseg.data.synthetic import generate_movie
from sceneseg.evaluation import score
from sceneseg.evaluation import metrics

SCALAR_KEYS = ("AP", "mAP", "Miou", "Precision", "Recall", "F1")


def random_movie(rng: np.random.Generator, n_shots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth [N-1] from scene lengths (mean ~13 shots), informative probabilities with ties
    and values exactly on the usual thresholds, end frames of 1-300-frame shots (first may be 0)."""
    lengths = np.maximum(1, rng.geometric(1 / 13, size=n_shots))
    cuts = np.cumsum(lengths) - 1
    gt = np.zeros(n_shots - 1, bool)
    gt[cuts[cuts < n_shots - 1]] = True
    prob = np.clip(0.45 * gt + 0.6 * rng.random(n_shots - 1), 0, 1)
    prob = np.round(prob, 2)  # ties, which AP must rank together
    prob[rng.random(n_shots - 1) < 0.05] = 0.5  # exactly at the threshold: counts as a boundary
    ends = np.cumsum(rng.integers(1, 301, size=n_shots)) - rng.integers(0, 2)
    return gt, prob, ends.astype(np.int64)


def real_size_set(seed: int, sizes: list[int]) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    gt, prob, ends = {}, {}, {}
    for i, n in enumerate(sizes):
        gt[f"tt{seed:02d}{i:05d}"], prob[f"tt{seed:02d}{i:05d}"], ends[f"tt{seed:02d}{i:05d}"] = random_movie(rng, n)
    return gt, prob, ends


def edge_set() -> tuple[dict, dict, dict]:
    """Movies where the definitions' corner cases decide: no true boundary, nothing predicted,
    everything predicted, a two-shot movie, a cut in the last transition only."""
    rng = np.random.default_rng(7)
    gt, prob, ends = {}, {}, {}

    def add(name, g, p):
        gt[name], prob[name] = np.asarray(g, bool), np.asarray(p, float)
        ends[name] = np.cumsum(rng.integers(1, 200, size=len(g) + 1)).astype(np.int64)

    add("tt_no_true", np.zeros(300, bool), rng.random(300))
    n = 400
    g = rng.random(n) < 0.08
    add("tt_none_pred", g, np.where(g, 0.4999, 0.1))
    add("tt_all_pred", g, np.full(n, 0.5))
    add("tt_two_shots", [True], [0.7])
    last = np.zeros(250, bool)
    last[-1] = True
    add("tt_last_cut", last, np.linspace(0, 1, 250))
    return gt, prob, ends


def assert_matches_reference(got: dict, expect: dict, window_s: float = 3.0, tol: float = 1e-12) -> None:
    recall_key = f"Recall@{window_s:g}s"
    for key in (*SCALAR_KEYS, recall_key):
        assert got[key] == pytest.approx(expect[key], abs=tol), key
    for key in ("AP", "Miou", "Precision", "Recall", "F1", recall_key):
        g, e = got[f"{key}_dict"], expect[f"{key}_dict"]
        assert set(g) == set(e)
        for movie in e:
            assert g[movie] == pytest.approx(e[movie], abs=tol), (key, movie)


def test_reference_ap_is_sklearns_average_precision():
    """The hand-written AP is the quantity the challenge computes with scikit-learn (ties included)."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(2, 400))
        y = rng.random(n) < 0.1
        y[0] = True
        s = np.round(rng.random(n), int(rng.integers(1, 4)))
        assert ref.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    # hand case: scores 0.9 (pos), 0.5 (neg, pos tied), 0.2 (neg): (1/2)*1 + (1/2)*(2/3)
    assert ref.average_precision([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.2]) == pytest.approx(0.5 + 1 / 3)


def test_reference_miou_hand_worked():
    # 4 shots ending at frames 9, 19, 29, 39. True scenes [0-19], [20-39]; predicted [0-9], [10-39].
    # pred [0-9]: best 10/20; pred [10-39]: best with [20-39] 20/30. true [0-19]: best 10/20
    # (with [0-9]) vs 10/40 -> 0.5; true [20-39]: 20/30.
    end = [9, 19, 29, 39]
    got = ref.miou([False, True, False], [True, False, False], end)
    assert got == pytest.approx(((0.5 + 2 / 3) / 2 + (0.5 + 2 / 3) / 2) / 2)
    assert ref.scenes([False, True, False], end) == [(0, 19), (20, 39)]
    assert ref.iou((0, 9), (10, 19)) == 0.0


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.83])
def test_evaluate_matches_reference_on_real_size_movies(threshold):
    gt, prob, ends = real_size_set(seed=int(threshold * 100), sizes=[607, 1657, 3096])
    got = metrics.evaluate(gt, prob, ends, threshold=threshold)
    assert_matches_reference(got, ref.evaluate(gt, prob, ends, threshold=threshold))


def test_evaluate_matches_reference_on_edge_movies_and_other_windows():
    gt, prob, ends = edge_set()
    assert_matches_reference(metrics.evaluate(gt, prob, ends), ref.evaluate(gt, prob, ends))
    expect = ref.evaluate(gt, prob, ends)
    assert expect["AP_dict"]["tt_no_true"] == 0.0 and expect["F1_dict"]["tt_none_pred"] == 0.0
    for window_s, fps in ((5.0, 24.0), (0.5, 25.0), (0.0, 24.0)):
        got = metrics.evaluate(gt, prob, ends, fps=fps, window_s=window_s)
        assert_matches_reference(got, ref.evaluate(gt, prob, ends, fps=fps, window_s=window_s), window_s)


def write_movie_pickles(folder, seed: int, sizes: list[int]) -> tuple[dict, dict, dict]:
    """MovieScenes pickles of synthetic movies (real feature widths); one movie's predictions are
    replaced by rounded values with ties and exact 0.5s. Returns the numpy gt, prob, end frames."""
    folder.mkdir(parents=True, exist_ok=True)
    gt, prob, ends = {}, {}, {}
    for i, n in enumerate(sizes):
        rng = np.random.default_rng([seed, i])
        movie = generate_movie(rng, f"tt{seed:03d}{i:04d}", n)
        if i == 0:
            p = np.round(movie[PRED_KEY].numpy().astype(np.float64), 1)
            p[::17] = 0.5
            movie[PRED_KEY] = torch.from_numpy(p.astype(np.float32))
        with open(folder / f"{movie['imdb_id']}.pkl", "wb") as f:
            pickle.dump(movie, f)
        gt[movie["imdb_id"]] = movie[GT_KEY].numpy()
        prob[movie["imdb_id"]] = movie[PRED_KEY].numpy()
        ends[movie["imdb_id"]] = movie[END_FRAME_KEY].numpy()
    return gt, prob, ends


@pytest.fixture(scope="module")
def pickles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pickles")
    return folder, write_movie_pickles(folder, seed=3, sizes=[612, 1480, 2950])


@pytest.mark.parametrize("threshold", [0.5, 0.2])
def test_score_folder_matches_reference(pickles, threshold):
    folder, (gt, prob, ends) = pickles
    got = score.score_folder(folder, threshold=threshold)
    assert got["n_movies"] == 3 and got["threshold"] == threshold
    assert_matches_reference(got, ref.evaluate(gt, prob, ends, threshold=threshold))


def test_sceneseg_score_command_prints_the_reference_numbers(pickles, capsys):
    folder, (gt, prob, ends) = pickles
    assert cli.main(["score", str(folder)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed)[:8] == [*SCALAR_KEYS, "AP_dict", "Miou_dict"]
    assert_matches_reference(printed, ref.evaluate(gt, prob, ends))
