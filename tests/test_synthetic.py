import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from sceneseg.movies import END_FRAME_KEY, FEATURE_DIMS, GT_KEY, MODALITIES, PRED_KEY
from sceneseg.synthetic import SyntheticSpec, generate_movie, synthetic_ids, write_synthetic_pickles
from sceneseg.validate import movie_from_dict


def test_movie_has_exactly_the_real_pickle_format():
    d = generate_movie(np.random.default_rng(0), "tt1234567", 50)
    assert set(d) == {"imdb_id", *MODALITIES, GT_KEY, END_FRAME_KEY, PRED_KEY}
    assert d["imdb_id"] == "tt1234567"
    for m in MODALITIES:
        assert isinstance(d[m], torch.Tensor) and d[m].dtype == torch.float32
        assert tuple(d[m].shape) == (50, FEATURE_DIMS[m])
    assert d["place"].min() >= 0  # pooled ResNet features are non-negative
    assert d[GT_KEY].dtype == torch.bool and tuple(d[GT_KEY].shape) == (49,)
    assert d[END_FRAME_KEY].dtype == torch.int64 and tuple(d[END_FRAME_KEY].shape) == (50,)
    steps = np.diff(np.concatenate([[-1], d[END_FRAME_KEY].numpy()]))
    assert steps.min() >= 24 and steps.max() <= 240  # 1-10 s at 24 fps
    assert d[PRED_KEY].dtype == torch.float32 and 0 <= d[PRED_KEY].min() and d[PRED_KEY].max() <= 1
    assert movie_from_dict(d, "tt1234567.pkl").n_shots == 50


def test_some_shots_have_no_face():
    cast = generate_movie(np.random.default_rng(1), "tt1234567", 300)["cast"].numpy()
    no_face = (np.abs(cast).sum(axis=1) == 0).mean()
    assert 0.05 < no_face < 0.5


def _contents(paths) -> list[dict]:
    """Each pickle's values as raw bytes (torch's pickle bytes embed storage addresses, so differ)."""
    out = []
    for p in paths:
        with open(p, "rb") as f:
            d = pickle.load(f)
        out.append({k: v if isinstance(v, str) else (str(v.dtype), v.numpy().tobytes()) for k, v in d.items()})
    return out


def test_same_spec_gives_bit_identical_movies_and_another_seed_does_not(tmp_path):
    spec = SyntheticSpec(n_movies=3, min_shots=5, max_shots=30, seed=7)
    a = _contents(write_synthetic_pickles(spec, tmp_path / "a"))
    b = _contents(write_synthetic_pickles(spec, tmp_path / "b"))
    c = _contents(write_synthetic_pickles(SyntheticSpec(3, 5, 30, seed=8), tmp_path / "c"))
    assert a == b
    assert a[0]["imdb_id"] != c[0]["imdb_id"] and a[0]["place"] != c[0]["place"]


def test_pickles_are_named_by_fake_imdb_ids_with_shot_counts_in_range(tmp_path):
    spec = SyntheticSpec(n_movies=12, min_shots=3, max_shots=9, seed=0)
    paths = write_synthetic_pickles(spec, tmp_path)
    ids = synthetic_ids(12, 0)
    assert [p.name for p in paths] == [f"{i}.pkl" for i in ids]
    assert len(set(ids)) == 12 and all(len(i) == 9 and i[:2] == "tt" and i[2:].isdigit() for i in ids)
    counts = []
    for p in paths:
        with open(p, "rb") as f:
            d = pickle.load(f)
        assert d["imdb_id"] == p.stem
        counts.append(d["place"].shape[0])
    assert min(counts) >= 3 and max(counts) <= 9 and len(set(counts)) > 1


@pytest.mark.parametrize("kwargs", [dict(n_movies=0, min_shots=2, max_shots=3), dict(n_movies=1, min_shots=1, max_shots=3),
                                    dict(n_movies=1, min_shots=5, max_shots=4)])
def test_bad_spec_is_refused(kwargs):
    with pytest.raises(ValueError, match="synthetic"):
        SyntheticSpec(seed=0, **kwargs)


def _movies(n: int = 6, shots: int = 800) -> list[dict]:
    return [generate_movie(np.random.default_rng(k), "tt0000001", shots) for k in range(n)]


def test_scene_statistics_look_like_moviescenes():
    gt = [m[GT_KEY].numpy() for m in _movies()]
    rate = np.concatenate(gt).mean()
    assert 0.06 < rate < 0.095  # real: 7.65%
    lengths = np.concatenate([np.diff(np.flatnonzero(np.concatenate([[True], g, [True]]))) for g in gt])
    assert 10 < lengths.mean() < 16  # real: 13 shots per scene
    assert 0.7 < (lengths < 20).mean() < 0.92  # real: 82%
    assert lengths.max() > 60  # heavy tail


def _window_score(d: dict) -> np.ndarray:
    """Untrained 4-shot cue: how unlike the two shots after a transition are to the two before."""
    score = 0.0
    for m, w in (("place", 1.0), ("action", 0.5), ("audio", 0.5), ("cast", 0.5)):
        f = d[m].numpy()
        f = f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-6)
        i = np.arange(len(f) - 1)
        before, after = (np.maximum(i - 1, 0), i), (i + 1, np.minimum(i + 2, len(f) - 1))
        score = score - w * np.max([np.sum(f[a] * f[b], axis=1) for a in before for b in after], axis=0)
    return score


def test_shipped_prediction_is_informative_but_a_4_shot_window_does_better():
    movies = _movies()
    gt = np.concatenate([m[GT_KEY].numpy() for m in movies])
    shipped = average_precision_score(gt, np.concatenate([m[PRED_KEY].numpy() for m in movies]))
    window = average_precision_score(gt, np.concatenate([_window_score(m) for m in movies]))
    assert 0.25 < shipped < 0.55  # chance is the boundary rate, ~0.08
    assert window > shipped + 0.05


def test_generator_settings(tmp_path):
    base = SyntheticSpec(n_movies=2, min_shots=60, max_shots=80, seed=5)
    a = [pickle.load(open(p, "rb")) for p in write_synthetic_pickles(base, tmp_path / "a")]
    # other feature scales: each modality of each movie scaled by its own factor in [0.1, 10];
    # labels, frames and the shipped prediction (made from the raw features) do not change
    scaled = SyntheticSpec(2, 60, 80, seed=5, scale_spread=1.0)
    b = [pickle.load(open(p, "rb")) for p in write_synthetic_pickles(scaled, tmp_path / "b")]
    factors = []
    for x, y in zip(a, b):
        for key in ("scene_transition_boundary_ground_truth", "shot_end_frame", "scene_transition_boundary_prediction"):
            assert torch.equal(x[key], y[key])
        for m in ("place", "cast", "action", "audio"):
            ratio = (y[m].double().norm() / x[m].double().norm()).item()
            assert 0.1 <= ratio <= 10
            np.testing.assert_allclose(y[m].numpy(), x[m].numpy() * ratio, rtol=1e-5, atol=1e-6)
            factors.append(ratio)
    assert len({round(f, 6) for f in factors}) == len(factors)  # one factor per movie and modality
    # more noise: same scenes, noisier action features around the same scene means
    noisy = [pickle.load(open(p, "rb")) for p in write_synthetic_pickles(
        SyntheticSpec(2, 60, 80, seed=5, noise=3.0), tmp_path / "c")]
    assert torch.equal(noisy[0]["scene_transition_boundary_ground_truth"], a[0]["scene_transition_boundary_ground_truth"])
    assert noisy[0]["action"].std() > 2.0 * a[0]["action"].std()
    # one camera set-up per scene is allowed
    one = [pickle.load(open(p, "rb")) for p in write_synthetic_pickles(
        SyntheticSpec(2, 60, 80, seed=5, min_setups=1, max_setups=1), tmp_path / "d")]
    assert one[0]["place"].shape[0] == a[0]["place"].shape[0]
    with pytest.raises(ValueError, match="min_setups"):
        SyntheticSpec(2, 60, 80, seed=5, min_setups=3, max_setups=2)
