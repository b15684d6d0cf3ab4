"""The boosted reference (sceneseg.models.references.boosted): its columns, which transitions it fits, its threshold,
and the banded cross_max / with_context it reads (against brute force)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from conftest import tiny_movie
from sceneseg.data.movies import Movie
from sceneseg.data.simfeatures import cross_max, transition_features, unit_rows, window_cosines, with_context
from sceneseg.evaluation.metrics import choose_threshold
from sceneseg.models.references.boosted import BoostedSpec, boosted_spec, features, fit_boosted

MODS = ("place", "cast")


def labelled(imdb_id, n, seed, baseline=True):
    m = tiny_movie(imdb_id, n, seed)
    rng = np.random.default_rng(seed + 100)
    base = np.clip(0.6 * m.boundary + 0.5 * rng.random(n - 1), 0, 1).astype(np.float32) if baseline else None
    return Movie(m.imdb_id, m.features, m.boundary, m.shot_end_frame, base)


def test_cross_max_band_equals_the_full_gram_matrix_on_longer_movies():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 7))
    x[[3, 17]] = 0.0
    u = unit_rows(x, center=True)
    gram = u @ u.T
    widths = (2, 4, 8, 16, 32)  # 32: wider than the movie's half
    got = cross_max(u, widths)
    for t in range(39):
        for j, k in enumerate(widths):
            before, after = range(max(0, t - k + 1), t + 1), range(t + 1, min(40, t + 1 + k))
            assert got[t, j] == pytest.approx(max(gram[i, a] for i in before for a in after), abs=1e-12)


def test_with_context_and_transition_features_columns():
    f = np.arange(12.0).reshape(4, 3)  # 4 transitions, 3 features
    c = with_context(f, 1)
    np.testing.assert_array_equal(c[0], [0, 1, 2, 0, 1, 2, 3, 4, 5])  # self, t-1 (edge: itself), t+1
    np.testing.assert_array_equal(c[3], [9, 10, 11, 6, 7, 8, 9, 10, 11])
    np.testing.assert_array_equal(with_context(f, 0), f)
    m = labelled("tt1", 30, 1)
    tf = transition_features({k: m.features[k] for k in MODS}, (1, 3), (2,))
    assert tf.shape == (29, 2 * (2 + 2 + 1))
    raw, cen = unit_rows(m.features["cast"], False), unit_rows(m.features["cast"], True)
    # second modality: raw, centred, cross (one band of centred products vs the unit rows: equal to rounding)
    np.testing.assert_allclose(tf[:, 5:7], window_cosines(raw, (1, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(tf[:, 7:9], window_cosines(cen, (1, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(tf[:, 9:10], cross_max(cen, (2,)), rtol=0, atol=1e-12)


def test_boosted_features_and_shipped_column():
    m = labelled("tt1", 30, 1)
    spec = BoostedSpec(MODS, (1, 2), (2,), context=2)
    f = features(m, spec, shipped_column=True)
    assert f.shape == (29, 5 * 2 * 5 + 1)
    np.testing.assert_array_equal(f[:, -1], m.baseline.astype(np.float64))
    assert np.isnan(features(m, spec, shipped_column=True, use_shipped=False)[:, -1]).all()
    np.testing.assert_array_equal(features(m, spec, shipped_column=False), f[:, :-1])


def test_fit_boosted_fits_the_masked_transitions_and_chooses_its_threshold_on_validation():
    train = [labelled("tt1", 80, 1), labelled("tt2", 70, 2)]
    val = [labelled("tt3", 60, 3), labelled("tt4", 50, 4)]
    masks = {m.imdb_id: np.arange(m.n_shots - 1) % 3 != 0 for m in train}
    spec = BoostedSpec(MODS, (1, 2), (2,), context=1, max_iter=20, learning_rate=0.05)
    ref = fit_boosted(train, masks, val, None, spec)
    assert ref.with_shipped
    # the same classifier fitted by hand on exactly the masked rows: spec.max_iter trees at spec.learning_rate,
    # none held out for early stopping (the default stops early from 10,000 rows on)
    x = np.concatenate([features(m, spec, True)[masks[m.imdb_id]] for m in train])
    y = np.concatenate([m.boundary[masks[m.imdb_id]] for m in train])
    hand = HistGradientBoostingClassifier(max_iter=20, learning_rate=0.05, early_stopping=False, random_state=0).fit(x, y)
    assert ref.model.get_params()["early_stopping"] is False and ref.model.n_iter_ == 20
    for m in val:
        np.testing.assert_allclose(ref.predict([m])[m.imdb_id], hand.predict_proba(features(m, spec, True))[:, 1])
    yv = np.concatenate([m.boundary for m in val])
    pv = np.concatenate([hand.predict_proba(features(m, spec, True))[:, 1] for m in val])
    assert ref.threshold == choose_threshold(yv, pv, "f1")
    # with validation masks, the threshold is chosen on the masked validation transitions only
    vmasks = {m.imdb_id: np.arange(m.n_shots - 1) < 25 for m in val}
    on_masked = choose_threshold(np.concatenate([m.boundary[:25] for m in val]),
                                 np.concatenate([hand.predict_proba(features(m, spec, True))[:25, 1] for m in val]), "f1")
    assert on_masked != ref.threshold and fit_boosted(train, masks, val, vmasks, spec).threshold == on_masked
    # it learns: the tiny movies' boundaries are plain in the features
    assert ref.predict(val)["tt3"][val[0].boundary].mean() > 0.5 > ref.predict(val)["tt3"][~val[0].boundary].mean()
    # without the shipped input on some movie, it is left out everywhere
    bare = fit_boosted(train + [labelled("tt5", 40, 5, baseline=False)], None, val, None, spec)
    assert not bare.with_shipped
    assert fit_boosted(train, None, val, None, spec, "fixed").threshold == 0.5


def test_fit_boosted_refuses_one_class():
    m = labelled("tt1", 30, 1)
    none = Movie(m.imdb_id, m.features, np.zeros(29, bool), m.shot_end_frame, m.baseline)
    with pytest.raises(ValueError, match="boosted reference: the training transitions need both classes, found 0"):
        fit_boosted([none], None, [none], None, BoostedSpec(MODS))


def test_the_spec_comes_from_the_evaluate_params():
    from types import SimpleNamespace

    e = SimpleNamespace(boosted_widths=[1, 3], boosted_cross_widths=[2, 6], boosted_context=4, boosted_max_iter=7,
                        boosted_lr=0.2)
    assert boosted_spec(e, ["place", "cast"], use_shipped=False) == BoostedSpec(("place", "cast"), (1, 3), (2, 6), 4, 7,
                                                                                0.2, False, 0)
    assert boosted_spec(e, ["place"]).use_shipped is True
