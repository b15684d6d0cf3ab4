"""The decision threshold maximises validation F1 (or Miou) against a brute force over the candidate
thresholds and never sees test movies; the chance baseline fires at the rate it is given."""

from __future__ import annotations

import numpy as np
import pytest

import eluvio_reference as ref
from conftest import bank_and_windows, sharp_model, tiny_config, tiny_movie
from sceneseg.data.movies import Movie
from sceneseg.evaluation import metrics
from sceneseg.models.lgss.inference import predict_owned
from sceneseg.models.lgss.training import validation_threshold

GRID = [round(0.01 * k, 2) for k in range(1, 100)]  # the candidate thresholds: 0.01 ... 0.99


def pooled_f1(gt: list[bool], prob: list[float], t: float) -> float:
    tp = sum(1 for g, p in zip(gt, prob) if g and p >= t)
    fp = sum(1 for g, p in zip(gt, prob) if not g and p >= t)
    fn = sum(1 for g, p in zip(gt, prob) if g and p < t)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def brute_force_best(score) -> tuple[float, list[float]]:
    """Best score over the grid and the thresholds reaching it."""
    scores = {t: score(t) for t in GRID}
    best = max(scores.values())
    return best, [t for t, s in scores.items() if s >= best - 1e-12]


def tie_break(winners: list[float]) -> float:
    """Among equally good thresholds: the one closest to 0.5, then the lower one."""
    return sorted(winners, key=lambda t: (round(abs(t - 0.5), 9), t))[0]


@pytest.mark.parametrize("seed", range(6))
def test_choose_threshold_f1_is_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    gt = {f"tt{i}": rng.random(int(rng.integers(30, 300))) < 0.1 for i in range(3)}
    prob = {k: np.round(np.clip(0.3 * g + rng.beta(1, 4, g.size) * (1 + seed / 3), 0, 1), 3) for k, g in gt.items()}
    flat_gt = [bool(x) for k in gt for x in gt[k]]
    flat_prob = [float(x) for k in gt for x in prob[k]]
    best, winners = brute_force_best(lambda t: pooled_f1(flat_gt, flat_prob, t))
    chosen = metrics.choose_threshold(gt, prob, metric="f1")
    assert pooled_f1(flat_gt, flat_prob, chosen) == pytest.approx(best, abs=1e-12)
    assert chosen == tie_break(winners)
    # one array instead of a dict of movies: the same pooled F1
    assert metrics.choose_threshold(np.concatenate(list(gt.values())), np.concatenate(list(prob.values()))) == chosen


def test_choose_threshold_f1_hand_case():
    # positives at 0.9 and 0.35, negatives at 0.6 and 0.1: t in (0.6, 0.9] -> F1 2/3; t in
    # (0.35, 0.6] -> 1/2; t in (0.1, 0.35] -> 4/5 (the best), t <= 0.1 -> 2/3.
    gt = np.array([True, False, True, False])
    prob = np.array([0.9, 0.6, 0.35, 0.1])
    assert metrics.choose_threshold(gt, prob) == 0.35  # closest to 0.5 of 0.11 ... 0.35
    assert metrics.choose_threshold(gt, prob, grid=np.array([0.05, 0.2, 0.7])) == 0.2
    # no positive at all: every threshold scores 0, the tie goes to 0.5
    assert metrics.choose_threshold(np.zeros(4, bool), prob) == 0.5


def test_choose_threshold_miou_is_the_brute_force_optimum():
    rng = np.random.default_rng(3)
    gt, prob, ends = {}, {}, {}
    for i, n in enumerate((60, 90)):
        gt[f"tt{i}"] = rng.random(n - 1) < 0.15
        prob[f"tt{i}"] = np.round(np.clip(0.35 * gt[f"tt{i}"] + 0.7 * rng.random(n - 1), 0, 1), 2)
        ends[f"tt{i}"] = np.cumsum(rng.integers(1, 100, n)).astype(np.int64)

    def mean_miou(t):
        return sum(ref.miou(gt[k], ref.boundaries(prob[k], t), ends[k]) for k in gt) / len(gt)

    best, winners = brute_force_best(mean_miou)
    chosen = metrics.choose_threshold(gt, prob, metric="miou", shot_end_frame=ends)
    assert mean_miou(chosen) == pytest.approx(best, abs=1e-12)
    assert chosen == tie_break(winners)
    with pytest.raises(ValueError, match="shot_end_frame"):
        metrics.choose_threshold(gt, prob, metric="miou")


def val_and_test_movies() -> tuple[list[Movie], list[Movie]]:
    return [tiny_movie("tt1", 50, 1), tiny_movie("tt2", 37, 2)], [tiny_movie("tt3", 44, 3)]


@pytest.fixture
def validation():
    """Validation movies, their bank and windows, a model, and its predictions on the owned transitions."""
    movies, _ = val_and_test_movies()
    bank, w = bank_and_windows(movies, 6)
    model = sharp_model(tiny_config(), seed=4)
    return movies, bank, w, model, predict_owned(model, bank, w, 8)


def test_validation_threshold_maximises_validation_f1(validation):
    movies, bank, w, model, (movie, trans, prob) = validation
    gt = [bool(movies[i].boundary[t]) for i, t in zip(movie, trans)]
    _, winners = brute_force_best(lambda t: pooled_f1(gt, prob.tolist(), t))
    assert 0.5 not in winners  # precondition: a constant 0.5 would be wrong here
    assert validation_threshold(model, bank, w, "f1", batch_size=5) == tie_break(winners)
    assert validation_threshold(model, bank, w, "fixed", batch_size=5) == 0.5
    with pytest.raises(ValueError, match="threshold metric"):
        validation_threshold(model, bank, w, "auc", batch_size=5)


def test_validation_threshold_by_miou_uses_whole_validation_movies(validation):
    movies, bank, w, model, (movie, trans, prob) = validation
    per_movie = {m.imdb_id: prob[movie == i][np.argsort(trans[movie == i])] for i, m in enumerate(movies)}

    def mean_miou(t):
        return np.mean([ref.miou(m.boundary, ref.boundaries(per_movie[m.imdb_id], t), m.shot_end_frame)
                        for m in movies])

    _, winners = brute_force_best(mean_miou)
    assert validation_threshold(model, bank, w, "miou", batch_size=5) == tie_break(winners)


def test_validation_threshold_never_sees_the_test_movies():
    """The validation windows may index a bank that also holds other movies (as with validation by
    window): changing those movies' labels and features must not move the threshold."""
    val_movies, test_movies = val_and_test_movies()
    model = sharp_model(tiny_config(), seed=4)

    def threshold_with(test: list[Movie]) -> float:
        bank, w = bank_and_windows(val_movies + test, 6)
        val_rows = np.flatnonzero(w.movie < len(val_movies))
        return validation_threshold(model, bank, w.subset(val_rows), "f1", batch_size=5)

    flipped = [Movie(m.imdb_id, {k: -3 * v for k, v in m.features.items()}, ~m.boundary, m.shot_end_frame)
               for m in test_movies]
    expect = threshold_with([])
    assert threshold_with(test_movies) == expect == threshold_with(flipped)
    # whereas the threshold does follow the validation labels
    flipped_val = [Movie(m.imdb_id, m.features, ~m.boundary, m.shot_end_frame) for m in val_movies]
    assert validation_threshold(model, *bank_and_windows(flipped_val, 6), "f1", batch_size=5) != expect


def test_chance_fires_at_the_given_rate_not_the_labels_rate():
    rng = np.random.default_rng(0)
    gt = {f"tt{i}": rng.random(n) < 0.4 for i, n in enumerate((3000, 5000, 2000))}  # labels' rate 0.4
    for rate in (0.08, 0.0, 1.0):
        prob = metrics.chance_predictions(gt, seed=1, rate=rate)
        fired = np.concatenate([prob[k] >= 0.5 for k in gt])
        assert set(prob) == set(gt) and all(prob[k].shape == gt[k].shape for k in gt)
        assert all(((p >= 0) & (p <= 1)).all() for p in prob.values())
        sd = np.sqrt(max(rate * (1 - rate), 1e-12) / fired.size)
        assert abs(fired.mean() - rate) <= 4 * sd
        # fired positions are independent of the labels: the same share among true boundaries
        pos = np.concatenate([gt[k] for k in gt])
        assert abs(fired[pos].mean() - rate) <= 4 * np.sqrt(max(rate * (1 - rate), 1e-12) / pos.sum())
    # no rate given: the labels' pooled rate
    fired = np.concatenate([p >= 0.5 for p in metrics.chance_predictions(gt, seed=1).values()])
    assert abs(fired.mean() - np.concatenate(list(gt.values())).mean()) < 0.02
    # the ranking carries no information: AP about the boundary rate
    ap, _, _ = metrics.average_precision(gt, metrics.chance_predictions(gt, seed=2, rate=0.08))
    assert abs(ap - 0.4) < 0.03


def test_validation_threshold_refusals(validation):
    movies, _, w, model, _ = validation
    unlabelled = [Movie(m.imdb_id, m.features, None, m.shot_end_frame) for m in movies]
    for metric in ("f1", "miou"):
        with pytest.raises(ValueError, match="^choosing a threshold needs ground-truth boundaries on the "
                                             "validation movies, found none$"):
            validation_threshold(model, bank_and_windows(unlabelled, 6)[0], w, metric, batch_size=5)
    assert validation_threshold(model, bank_and_windows(unlabelled, 6)[0], w, "fixed", batch_size=5) == 0.5
    no_frames = [movies[0], Movie(movies[1].imdb_id, movies[1].features, movies[1].boundary)]
    with pytest.raises(ValueError, match="^movie tt2: choosing a threshold by Miou needs its shot_end_frame, found none$"):
        validation_threshold(model, bank_and_windows(no_frames, 6)[0], w, "miou", batch_size=5)
    with pytest.raises(ValueError, match="^threshold metric: expected f1, miou or fixed, found 'auc'$"):
        validation_threshold(model, bank_and_windows(movies, 6)[0], w, "auc", batch_size=5)


def test_the_shared_choice_on_hand_worked_validation_sets():
    """sceneseg.training.threshold, which every model and reference calls: F1 is 1 exactly for
    thresholds in (0.30, 0.35] (a boundary is prob >= threshold), whether the transitions come
    pooled or per movie; 'fixed' is 0.5 without labels; an unknown metric is an error naming it."""
    from sceneseg.training.threshold import choose_on_validation

    gt, prob = np.array([False, True, False, True]), np.array([0.10, 0.35, 0.30, 0.90])
    t = choose_on_validation("f1", gt, prob)
    assert 0.30 < t <= 0.35
    assert choose_on_validation("f1", {"a": gt[:2], "b": gt[2:]}, {"b": prob[2:], "a": prob[:2]}) == t
    assert choose_on_validation("fixed") == 0.5
    with pytest.raises(ValueError, match="expected f1, miou or fixed, found 'auc'"):
        choose_on_validation("auc", gt, prob)
