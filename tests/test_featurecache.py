"""The features stage's cache (sceneseg.data.featurecache): what it writes, that attached features are the
ones computed on the fly, that other widths are computed, and that bad or missing files name themselves."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sceneseg.data.featurecache as fc
from conftest import tiny_movie
from sceneseg.data.featurecache import FeatureSpec, attach, read_spec, similarity, write_features
from sceneseg.data.movies import load_movies, save_movie, write_index
from sceneseg.data.simfeatures import transition_features

SPEC = FeatureSpec(("place", "cast"), (1, 2, 4), (2,), (2,))


@pytest.fixture
def movies_dir(tmp_path):
    root = tmp_path / "movies"
    movies = [tiny_movie("tt0000002", 30, 2), tiny_movie("tt0000001", 12, 1), tiny_movie("tt0000003", 2, 3)]
    for m in movies:
        save_movie(m, root)
    write_index(root, movies)
    return root


def test_written_features_are_the_ones_computed_on_the_fly(movies_dir, tmp_path):
    out = tmp_path / "features"
    assert write_features(movies_dir, out, SPEC, show_progress=False) == 29 + 11 + 1
    assert sorted(p.name for p in out.iterdir()) == ["spec.json", "tt0000001.npy", "tt0000002.npy", "tt0000003.npy"]
    assert json.loads((out / "spec.json").read_text()) == {"modalities": ["place", "cast"], "widths": [1, 2, 4],
                                                           "cross_widths": [2], "match_widths": [2]}
    assert read_spec(out) == SPEC and SPEC.n_columns == 2 * (2 * 3 + 1 + 2 * 1)
    movies = load_movies(movies_dir)
    for plain, cached in zip(movies, attach(movies, out)):
        direct = transition_features({k: plain.features[k] for k in SPEC.modalities}, SPEC.widths, SPEC.cross_widths,
                                     SPEC.match_widths)
        assert direct.shape == (plain.n_shots - 1, 18)
        got = similarity(cached, SPEC)
        assert isinstance(got, np.memmap)  # read from the stage's file, not computed again
        np.testing.assert_array_equal(got, direct)
        np.testing.assert_array_equal(similarity(plain, SPEC), direct)  # nothing attached: computed
        # widths among the cached ones (as the boosted reference's are among simseq's): those columns
        sub = FeatureSpec(("place", "cast"), (4, 1), (2,), (2,))
        np.testing.assert_allclose(similarity(cached, sub), transition_features(
            {k: plain.features[k] for k in sub.modalities}, sub.widths, sub.cross_widths, sub.match_widths),
            rtol=0, atol=1e-12)
        assert similarity(cached, sub).shape[1] == 2 * 7
        for other in (FeatureSpec(("place", "cast"), (1, 3), (2,)), FeatureSpec(("cast", "place"), (1,), (2,)),
                      FeatureSpec(("place", "cast"), (1,), (4,))):  # a width or order not cached: computed now
            np.testing.assert_array_equal(similarity(cached, other), transition_features(
                {k: plain.features[k] for k in other.modalities}, other.widths, other.cross_widths))
    assert attach(movies, None) is movies


def test_a_failed_write_leaves_nothing(movies_dir, tmp_path, monkeypatch):
    out = tmp_path / "features"
    write_features(movies_dir, out, SPEC, show_progress=False)
    calls = []

    def failing(movie, spec):
        calls.append(movie.imdb_id)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return transition_features({k: movie.features[k] for k in spec.modalities}, spec.widths, spec.cross_widths)

    monkeypatch.setattr(fc, "similarity", failing)
    with pytest.raises(OSError):
        write_features(movies_dir, out, FeatureSpec(("place",), (1,), (2,)), show_progress=False)
    assert read_spec(out) == SPEC  # the previous output is untouched, no temp folder is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "movies"]


def test_missing_or_stale_cache_names_the_file(movies_dir, tmp_path):
    out = tmp_path / "features"
    movies = load_movies(movies_dir)
    with pytest.raises(ValueError, match=r"^.*features/spec.json: expected the spec of the cached features \(run the "
                                         r"features stage\), found nothing$"):
        attach(movies, out)
    write_features(movies_dir, out, SPEC, show_progress=False)
    (out / "tt0000001.npy").unlink()
    with pytest.raises(ValueError, match=r"tt0000001.npy: expected the cached features of movie tt0000001"):
        attach(movies, out)
    np.save(out / "tt0000001.npy", np.zeros((10, 18)))
    with pytest.raises(ValueError, match=r"tt0000001.npy: expected float64 \[11, 18\] for 12 shots, found float64 "
                                         r"\[10, 18\] \(rerun the features stage\)$"):
        attach(movies, out)
    (out / "spec.json").write_text('{"modalities": ["place"]}')
    with pytest.raises(ValueError, match=r"spec.json: expected modalities, widths and cross_widths"):
        attach(movies, out)


def test_columns_of_a_spec_inside_another():
    """Per modality: raw cos_k, centred cos_k, cross_k, match_k (after, before); other widths' columns in their order."""
    big = FeatureSpec(("place", "cast"), (1, 2, 4), (2, 8), (2, 4))  # 2 * 3 + 2 + 2 * 2 = 12 columns per modality
    assert big.columns_of(big).tolist() == list(range(24))
    sub = FeatureSpec(("place", "cast"), (4, 1), (8,), (4,))
    assert big.columns_of(sub).tolist() == [2, 0, 5, 3, 7, 10, 11, 14, 12, 17, 15, 19, 22, 23]
    assert big.columns_of(FeatureSpec(("place",), (1,), (2,))) is None  # other modalities
    assert big.columns_of(FeatureSpec(("place", "cast"), (1,), (2,), (8,))) is None  # a match width not cached


def test_the_references_read_the_cached_columns(movies_dir, tmp_path):
    """stacked's window cosines and boosted's features: taken from the features stage's columns when they hold
    them, equal to computing them (to 1e-12)."""
    from sceneseg.models.references.boosted import BoostedSpec
    from sceneseg.models.references.boosted import features as boosted_features
    from sceneseg.models.references.stacked import features as stacked_features

    write_features(movies_dir, tmp_path / "features", SPEC, show_progress=False)
    movies = load_movies(movies_dir)
    boosted = BoostedSpec(("place", "cast"), (1, 4), (2,), context=1)
    for plain, cached in zip(movies, attach(movies, tmp_path / "features")):
        assert cached.extra and not plain.extra
        for a, b in ((stacked_features(cached, ["place", "cast"], (4, 2), False),
                      stacked_features(plain, ["place", "cast"], (4, 2), False)),
                     (boosted_features(cached, boosted, False), boosted_features(plain, boosted, False))):
            assert a.shape == b.shape and a.shape[0] == plain.n_shots - 1
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
