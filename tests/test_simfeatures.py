"""Similarity features (sceneseg.data.simfeatures) against brute force, and the stacked reference's input
handling (sceneseg.models.references.stacked): which columns it reads, which transitions it fits, where its threshold
comes from. Small, fast cases; tests/test_models.py runs both on synthetic movies."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import tiny_movie
from sceneseg.data.movies import Movie
from sceneseg.evaluation.metrics import choose_threshold
from sceneseg.data.simfeatures import (CANCEL, _band, _window_terms, cross_max, match_means, modality_features,
                                  transition_features, unit_rows, window_cosines, zscore_columns)
from sceneseg.models.references.stacked import features, fit_stacked

MODS = ["place", "cast"]


def test_unit_rows():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    x[2] = 0.0
    x[4] *= 0.001  # a short row still becomes a unit row
    u = unit_rows(x, center=False)
    assert u.dtype == np.float64
    x64 = x.astype(np.float64)
    for i in (0, 1, 3, 4, 5):
        np.testing.assert_allclose(u[i], x64[i] / np.linalg.norm(x64[i]), rtol=1e-12)
    assert np.all(u[2] == 0)
    c = unit_rows(x, center=True)
    mean = x64[[0, 1, 3, 4, 5]].mean(0)  # the mean of the non-zero rows only
    for i in (0, 1, 3, 4, 5):
        np.testing.assert_allclose(c[i], (x64[i] - mean) / np.linalg.norm(x64[i] - mean), rtol=1e-12)
    assert np.all(c[2] == 0)  # a zero row stays zero after centring
    # a movie without any non-zero row (no face at all) stays zero, centred or not
    assert np.all(unit_rows(np.zeros((3, 2)), center=True) == 0)
    # a row with a single negative entry is not a zero row
    np.testing.assert_allclose(unit_rows(np.array([[-3.0, 0.0], [0.0, 2.0]]), center=False), [[-1, 0], [0, 1]])


def brute_cos(u, t, k):
    n = len(u)
    a, b = u[max(0, t - k + 1):t + 1].sum(0), u[t + 1:min(n, t + 1 + k)].sum(0)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return a @ b / norms if norms > 0 else 0.0


def brute_cross(u, t, k):
    n = len(u)
    return max(u[i] @ u[j] for i in range(max(0, t - k + 1), t + 1) for j in range(t + 1, min(n, t + 1 + k)))


def test_window_cosines_and_cross_max_against_brute_force():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, 5))
    x[4] = 0.0
    u = unit_rows(x, center=False)
    widths = (1, 2, 5, 12)  # 12: longer than the movie, clipped at both edges
    cos = window_cosines(u, widths)
    assert cos.shape == (8, 4)
    for t in range(8):
        for j, k in enumerate(widths):
            assert cos[t, j] == pytest.approx(brute_cos(u, t, k), abs=1e-12), (t, k)
    assert cos[3, 0] == 0.0 and cos[4, 0] == 0.0  # next to the zero shot alone
    for widths in ((3, 1, 2), (1, 4), (2,)):  # any order: each column is its own width's
        cross = cross_max(u, widths)
        assert cross.shape == (8, len(widths))
        for t in range(8):
            for j, k in enumerate(widths):
                assert cross[t, j] == pytest.approx(brute_cross(u, t, k), abs=1e-12), (t, k, widths)


def test_cross_max_sees_the_alternating_set_up():
    """Shot / reverse shot: A B A B | C D C D. Adjacent shots differ, but within 2 shots a shot repeats."""
    a, b, c, d = np.eye(4)
    u = np.array([a, b, a, b, c, d, c, d])
    cross = cross_max(u, (1, 2))
    np.testing.assert_array_equal(cross[:, 0], np.zeros(7))
    np.testing.assert_array_equal(cross[:, 1], [1, 1, 1, 0, 1, 1, 1])  # only the scene cut (t=3) stays low


def definition(x, widths, cross_widths, match_widths=()):
    """One modality's features by their definition, one transition at a time: unit rows of the raw and
    the centred shots (centred on the mean non-zero shot, zero shots stay zero), cosines of the window
    sums clipped at the movie's edges, the best cosine of a centred pair across the cut, and the mean
    over the shots on one side of their best cosine with a shot on the other side."""
    x = np.asarray(x, dtype=np.float64)
    n, dim = x.shape
    nonzero = [bool(np.any(r != 0)) for r in x]
    mean = np.mean([r for r, nz in zip(x, nonzero) if nz], axis=0) if any(nonzero) else np.zeros(dim)

    def unit(r):
        return r / max(float(np.sqrt(r @ r)), 1e-8)

    raw = [unit(r) for r in x]
    cen = [unit(r - mean) if nz else np.zeros(dim) for r, nz in zip(x, nonzero)]
    out = []
    for t in range(n - 1):
        row = []
        for u in (raw, cen):
            for k in widths:
                b = sum(u[i] for i in range(max(0, t - k + 1), t + 1))
                a = sum(u[j] for j in range(t + 1, min(n, t + 1 + k)))
                norms = np.sqrt(b @ b) * np.sqrt(a @ a)
                row.append(b @ a / norms if norms > 1e-8 else 0.0)
        for k in cross_widths:
            row.append(max(cen[i] @ cen[j] for i in range(max(0, t - k + 1), t + 1) for j in range(t + 1, min(n, t + 1 + k))))
        for k in match_widths:
            before, after = range(max(0, t - k + 1), t + 1), range(t + 1, min(n, t + 1 + k))
            row.append(np.mean([max(cen[i] @ cen[j] for i in before) for j in after]))
            row.append(np.mean([max(cen[i] @ cen[j] for j in after) for i in before]))
        out.append(row)
    return np.array(out).reshape(n - 1, 2 * len(widths) + len(cross_widths) + 2 * len(match_widths))


WIDTHS, CROSS = (1, 2, 4, 8, 16, 32, 64), (2, 4, 8, 16, 32)  # simseq's defaults
MATCH = (2, 4, 8, 16)


def _movie(kind, n, dim, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    if kind == "offset":  # non-negative features far from 0 (CNN activations): the mean dominates every shot
        x = 5.0 + np.abs(x)
    elif kind == "zeros":  # shots without a face, as in cast
        x[rng.random(n) < 0.4] = 0.0
    elif kind == "all_zero":
        x[:] = 0.0
    elif kind == "short":  # shots 1e8 times shorter than the mean (a fade to black): the products of two of them
        x = 5.0 + np.abs(x)  # lose every digit if the mean is added back
        x[n // 2:n // 2 + 3] *= 1e-8
    elif kind == "scenes":  # a few scenes with alternating set-ups, as the synthetic movies
        setups = rng.standard_normal((6, dim))
        x = setups[(np.arange(n) // 7 * 2 + np.arange(n) % 2) % 6] + 0.3 * x
    return x.astype(np.float32)


@pytest.mark.parametrize("kind,n", [("normal", 150), ("offset", 90), ("zeros", 70), ("all_zero", 20), ("short", 60),
                                    ("scenes", 130), ("normal", 5), ("offset", 3), ("zeros", 2)])
def test_features_equal_the_definition(kind, n):
    """Movies longer and shorter than the widest window (64), all-zero shots and modalities, 2-3 shots."""
    x = _movie(kind, n, 7, seed=n)
    got = modality_features(x, WIDTHS, CROSS)
    assert got.shape == (n - 1, 2 * 7 + 5)
    np.testing.assert_allclose(got, definition(x, WIDTHS, CROSS), rtol=0, atol=1e-6)
    other = modality_features(x, (3, 1, 12), (5, 1, 3))  # widths that are not powers of 2, in any order
    np.testing.assert_allclose(other, definition(x, (3, 1, 12), (5, 1, 3)), rtol=0, atol=1e-6)
    match = modality_features(x, (1, 4), (2,), MATCH)
    assert match.shape == (n - 1, 2 * 2 + 1 + 2 * len(MATCH))
    np.testing.assert_allclose(match, definition(x, (1, 4), (2,), MATCH), rtol=0, atol=1e-6)
    np.testing.assert_allclose(match_means(unit_rows(x, center=True), MATCH), match[:, 5:], rtol=0, atol=1e-6)


def test_match_by_hand():
    """Two set-ups A, B alternating in scene 1 (A B A B), a new one C in scene 2 (C C): at the cut between
    the scenes (t = 3) no shot after finds a partner before, while inside scene 1 (t = 1) every shot does."""
    a, b, c = np.eye(3)
    x = np.stack([a, b, a, b, c, c]) + 1.0  # an offset shared by every shot: centring removes it
    m = match_means(unit_rows(x, center=True), (2,))  # [5, 2]: after, before
    ca = unit_rows(x, center=True)
    cos = lambda i, j: float(ca[i] @ ca[j])
    assert m[1, 0] == pytest.approx(np.mean([max(cos(0, 2), cos(1, 2)), max(cos(0, 3), cos(1, 3))]))
    assert m[1, 0] == pytest.approx(1.0)  # shots 2, 3 repeat shots 0, 1
    assert m[3, 0] == pytest.approx(cos(3, 4)) and m[3, 0] < 0  # C matches neither A nor B
    assert m[3, 1] == pytest.approx(np.mean([max(cos(2, 4), cos(2, 5)), max(cos(3, 4), cos(3, 5))]))


def test_features_of_every_modality_and_of_one_shot():
    rng = np.random.default_rng(3)
    feats = {"place": rng.random((40, 16)).astype(np.float32), "cast": np.zeros((40, 4), np.float32)}
    f = transition_features(feats, (1, 4), (2,))
    assert f.shape == (39, 2 * 5)
    np.testing.assert_allclose(f[:, :5], definition(feats["place"], (1, 4), (2,)), rtol=0, atol=1e-6)
    assert np.all(f[:, 5:9] == 0) and np.all(f[:, 9] == 0)  # no face anywhere: every cosine 0
    one = transition_features({"place": np.ones((1, 16), np.float32)}, (1, 4), (2,))
    assert one.shape == (0, 5)


def test_nearly_cancelling_windows_are_summed_directly():
    """Two shots that almost cancel: the band's sums cannot resolve |before| ~ 1e-7, the direct sum can."""
    rng = np.random.default_rng(4)
    u = unit_rows(rng.standard_normal((12, 6)), center=False)
    u[5] = unit_rows((-u[4] + 1e-7 * rng.standard_normal(6))[None], center=False)[0]
    _, before_sq, _ = _window_terms(_band(u, 4)[0], (2,))
    assert before_sq[5, 0] < CANCEL  # shots 4 and 5 before the cut 5|6: taken from the direct formula
    cos = window_cosines(u, (1, 2))
    for t in range(11):
        for j, k in enumerate((1, 2)):
            assert cos[t, j] == pytest.approx(brute_cos(u, t, k), abs=1e-9), (t, k)


def test_zscore_columns():
    f = np.c_[np.arange(6.0), np.full(6, 2.5), [0, 1, 0, 1, 0, 1], 1e-7 * np.arange(6.0), 1e-6 * np.array([-1, 1] * 3)]
    assert f[:, 4].std() == 1e-6  # exactly at the bound: still counted as constant
    z = zscore_columns(f)
    np.testing.assert_allclose(z[:, 0], (np.arange(6) - 2.5) / np.arange(6.0).std(), rtol=1e-12)
    np.testing.assert_allclose(z[:, 2], [-1, 1, -1, 1, -1, 1], rtol=1e-12)  # std 0.5
    assert np.all(z[:, 1] == 0) and np.all(z[:, 3] == 0) and np.all(z[:, 4] == 0)  # constant, or too close to it


def labelled(imdb_id, n, seed, baseline=True):
    m = tiny_movie(imdb_id, n, seed)
    rng = np.random.default_rng(seed + 100)
    base = np.clip(0.6 * m.boundary + 0.5 * rng.random(n - 1), 0, 1).astype(np.float32) if baseline else None
    return Movie(m.imdb_id, m.features, m.boundary, m.shot_end_frame, base)


@pytest.fixture(scope="module")
def sets():
    train = [labelled("tt1", 60, 1), labelled("tt2", 45, 2)]
    val = [labelled("tt3", 50, 3), labelled("tt4", 40, 4)]
    return train, val


def test_stacked_features_columns(sets):
    m = sets[0][0]
    f = features(m, MODS, (1, 3), True)
    assert f.shape == (59, 5) and f.dtype == np.float64
    for i, mod in enumerate(MODS):  # per modality, each width: cosines of uncentred unit rows
        np.testing.assert_array_equal(f[:, 2 * i:2 * i + 2], window_cosines(unit_rows(m.features[mod], center=False), (1, 3)))
    np.testing.assert_array_equal(f[:, 4], m.baseline.astype(np.float64))
    np.testing.assert_array_equal(features(m, MODS, (1, 3), False), f[:, :4])


def hand_fit(movies, masks, widths, with_shipped, c=1.0):
    x = np.concatenate([features(m, MODS, widths, with_shipped)[masks[m.imdb_id] if masks else slice(None)] for m in movies])
    y = np.concatenate([np.asarray(m.boundary)[masks[m.imdb_id] if masks else slice(None)] for m in movies])
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y), x, y


def test_fit_stacked_fits_the_masked_train_transitions_and_thresholds_on_val(sets):
    train, val = sets
    rng = np.random.default_rng(0)
    masks = {m.imdb_id: rng.random(m.n_shots - 1) < 0.6 for m in train}
    vmasks = {m.imdb_id: rng.random(m.n_shots - 1) < 0.4 for m in val}
    ref = fit_stacked(train, masks, val, vmasks, MODS, (1, 2), c=0.05)
    assert (ref.modalities, ref.widths, ref.with_shipped) == (MODS, (1, 2), True)
    pipe, _, _ = hand_fit(train, masks, (1, 2), True, c=0.05)
    np.testing.assert_allclose(ref.pipeline[-1].coef_, pipe[-1].coef_, rtol=1e-6)
    np.testing.assert_allclose(ref.pipeline[0].mean_, pipe[0].mean_)
    loose, _, _ = hand_fit(train, masks, (1, 2), True, c=1.0)
    assert np.abs(loose[-1].coef_ - pipe[-1].coef_).max() > 0.05  # C reaches the regression
    unmasked, _, _ = hand_fit(train, None, (1, 2), True, c=0.05)
    assert np.abs(unmasked[-1].coef_ - pipe[-1].coef_).max() > 1e-3  # the masks matter
    # the threshold: pooled F1 on the masked validation transitions
    _, xv, yv = hand_fit(val, vmasks, (1, 2), True)
    pv = pipe.predict_proba(xv)[:, 1]
    assert ref.threshold == choose_threshold(yv, pv, "f1") != 0.5
    assert choose_threshold(np.concatenate([m.boundary for m in val]),
                            np.concatenate(list(ref.predict(val).values())), "f1") != ref.threshold
    # predict: the boundary class's probability of every transition
    prob = ref.predict(val)
    assert list(prob) == ["tt3", "tt4"]
    for m in val:
        np.testing.assert_allclose(prob[m.imdb_id], pipe.predict_proba(features(m, MODS, (1, 2), True))[:, 1], rtol=1e-6)
    # no masks: every transition
    full = fit_stacked(train, None, val, None, MODS, (1, 2), c=0.05)
    np.testing.assert_allclose(full.pipeline[-1].coef_, unmasked[-1].coef_, rtol=1e-6)


def test_fit_stacked_threshold_metrics_and_defaults(sets):
    train, val = sets
    other_val = [labelled("tt25", 80, 25), labelled("tt26", 60, 26)]  # where the Miou and F1 optima differ
    gt = {m.imdb_id: np.asarray(m.boundary, bool) for m in other_val}
    ends = {m.imdb_id: np.asarray(m.shot_end_frame) for m in other_val}
    miou = fit_stacked(train, None, other_val, None, MODS, threshold_metric="miou")
    assert miou.widths == (1, 2, 4, 8) and miou.pipeline[-1].coef_.shape == (1, 9)
    prob = miou.predict(other_val)
    assert miou.threshold == choose_threshold(gt, prob, "miou", shot_end_frame=ends) != choose_threshold(gt, prob, "f1")
    assert fit_stacked(train, None, val, None, MODS, threshold_metric="fixed").threshold == 0.5
    default = fit_stacked(train, None, val, None, MODS)
    pipe, _, _ = hand_fit(train, None, (1, 2, 4, 8), True)
    np.testing.assert_allclose(default.pipeline[-1].coef_, pipe[-1].coef_, rtol=1e-6)  # C=1 by default
    _, xv, yv = hand_fit(val, None, (1, 2, 4, 8), True)
    assert default.threshold == choose_threshold(yv, pipe.predict_proba(xv)[:, 1], "f1")


def test_fit_stacked_shipped_column_only_when_every_movie_has_one(sets):
    train, val = sets
    assert not fit_stacked(train, None, val, None, MODS, (1,), use_shipped=False).with_shipped
    bare_val = [val[0], labelled("tt5", 30, 5, baseline=False)]
    ref = fit_stacked(train, None, bare_val, None, MODS, (1,))
    assert not ref.with_shipped and ref.pipeline[-1].coef_.shape == (1, 2)
    bare_train = [train[0], labelled("tt6", 30, 6, baseline=False)]
    assert not fit_stacked(bare_train, None, val, None, MODS, (1,)).with_shipped


@pytest.mark.parametrize("label", [False, True])
def test_fit_stacked_needs_both_classes(sets, label):
    train, val = sets
    one = [Movie(m.imdb_id, m.features, np.full(m.n_shots - 1, label), m.shot_end_frame, m.baseline) for m in train]
    n = sum(m.n_shots - 1 for m in train)
    with pytest.raises(ValueError, match=f"^stacked reference: the training transitions need both classes, "
                                         f"found {n if label else 0} boundaries in {n}$"):
        fit_stacked(one, None, val, None, MODS, (1,))


def test_fit_stacked_takes_0_1_integer_labels(sets):
    """Labels stored as 0/1 integers are read as booleans (the threshold search needs booleans)."""
    train, val = sets

    def as_int(movies):
        return [Movie(m.imdb_id, m.features, np.asarray(m.boundary).astype(np.int8), m.shot_end_frame, m.baseline)
                for m in movies]

    for metric in ("f1", "miou"):
        a = fit_stacked(as_int(train), None, as_int(val), None, MODS, (1, 2), threshold_metric=metric)
        b = fit_stacked(train, None, val, None, MODS, (1, 2), threshold_metric=metric)
        np.testing.assert_array_equal(a.pipeline[-1].coef_, b.pipeline[-1].coef_)
        assert a.threshold == b.threshold
