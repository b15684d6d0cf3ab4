import logging
import re

import numpy as np
import pytest
import torch

from sceneseg.data.movies import END_FRAME_KEY, GT_KEY, MODALITIES, PRED_KEY
from sceneseg.data.synthetic import generate_movie
from sceneseg.data.validate import check_set, load_manifest, manifest_differences, movie_from_dict

NAME = "data/tt0000001.pkl"


def _movie(n: int = 4) -> dict:
    return generate_movie(np.random.default_rng(0), "tt0000001", n)


def test_valid_movie_converts_to_numpy_bit_identical():
    d = _movie(5)
    m = movie_from_dict(d, NAME)
    assert m.imdb_id == "tt0000001" and m.n_shots == 5
    for k in MODALITIES:
        assert m.features[k].dtype == np.float32
        assert m.features[k].tobytes() == d[k].numpy().tobytes()
    assert m.boundary.dtype == bool and np.array_equal(m.boundary, d[GT_KEY].numpy())
    assert m.shot_end_frame.dtype == np.int64 and np.array_equal(m.shot_end_frame, d[END_FRAME_KEY].numpy())
    assert m.baseline.dtype == np.float32 and np.array_equal(m.baseline, d[PRED_KEY].numpy())


def test_numpy_arrays_and_integer_labels_are_accepted():
    d = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in _movie().items()}
    d[GT_KEY] = d[GT_KEY].astype(np.int64)
    m = movie_from_dict(d, NAME)
    assert m.boundary.dtype == bool


def test_labels_are_optional_without_require_labels():
    d = _movie()
    for k in (GT_KEY, END_FRAME_KEY, PRED_KEY):
        del d[k]
    m = movie_from_dict(d, NAME, require_labels=False)
    assert m.boundary is None and m.baseline is None and m.shot_end_frame is None
    with pytest.raises(ValueError, match=r"tt0000001.pkl: missing keys \['scene_transition_boundary_ground_truth', "
                                         r"'shot_end_frame'\]$"):
        movie_from_dict(d, NAME)


def test_a_data_set_movie_needs_no_shipped_prediction():
    """A user's own annotated movie: ground truth and end frames, no shipped prediction."""
    d = _movie()
    del d[PRED_KEY]
    m = movie_from_dict(d, NAME)
    assert m.baseline is None and m.boundary is not None and m.shot_end_frame is not None


def _set(key: str, value):
    def edit(d: dict) -> None:
        d[key] = value(d) if callable(value) else value
    return edit


def _nan_at(key: str, shot: int, value: float):
    def edit(d: dict) -> None:
        d[key] = d[key].clone()
        d[key][shot, 3] = value
    return edit


BAD = [
    (lambda d: d.pop("cast"), r"missing keys \['cast'\]"),
    (_set("subtitles", torch.zeros(4)), r"unexpected keys \['subtitles'\]"),
    (_set("place", torch.zeros(4, 512)), r"'place' expected shape \[N, 2048\], found \[4, 512\]"),
    (_set("audio", torch.zeros(4, 512, 1)), r"'audio' expected shape \[N, 512\], found \[4, 512, 1\]"),
    (_set("action", torch.zeros(4, 512, dtype=torch.int32)), r"'action' expected float32 features, found dtype int32"),
    (_set("cast", [[0.0] * 512] * 4), r"'cast' expected a torch tensor or numpy array, found list"),
    (_nan_at("place", 2, float("nan")), r"'place' expected finite values, found NaN/inf in 1 shots \(first: shot 2\)"),
    (_nan_at("audio", 1, float("inf")), r"'audio' expected finite values, found NaN/inf in 1 shots \(first: shot 1\)"),
    (_set("action", torch.zeros(3, 512)), r"feature lengths differ: 'place' has 4 shots, 'action' has 3"),
    (_set(GT_KEY, torch.zeros(4, dtype=torch.bool)), r"'scene_transition_boundary_ground_truth' expected shape \[N-1\] = \[3\] for 4 shots, found \[4\]"),
    (_set(GT_KEY, torch.tensor([0, 2, 1])), r"'scene_transition_boundary_ground_truth' expected bool"),
    (_set(PRED_KEY, torch.zeros(2)), r"'scene_transition_boundary_prediction' expected shape \[N-1\] = \[3\] for 4 shots, found \[2\]"),
    (_set(PRED_KEY, torch.tensor([0.1, 1.5, 0.2])), r"expected probabilities in \[0, 1\], found 1.5 at transition 1"),
    (_set(PRED_KEY, torch.tensor([0.1, float("nan"), 0.2])), r"expected probabilities in \[0, 1\], found nan at transition 1"),
    (_set(END_FRAME_KEY, torch.tensor([10, 20, 30])), r"'shot_end_frame' expected shape \[N\] = \[4\] for 4 shots, found \[3\]"),
    (_set(END_FRAME_KEY, torch.tensor([10, 20, 20, 30])), r"expected strictly increasing frames, found 20 then 20 at shots 1-2"),
    (_set(END_FRAME_KEY, torch.tensor([10.0, 20.0, 30.0, 40.0])), r"'shot_end_frame' expected integer frame numbers, found dtype float32"),
    (_set("imdb_id", "tt0000002"), r"'imdb_id' is 'tt0000002' but the file name says 'tt0000001'"),
    (_set("imdb_id", "../etc"), r"'imdb_id' expected an id such as 'tt0052357', found '../etc'"),
]


@pytest.mark.parametrize("edit,message", BAD)
def test_bad_movie_is_refused_with_a_message_naming_the_file(edit, message):
    d = _movie(4)
    edit(d)
    with pytest.raises(ValueError, match=f"^{re.escape(NAME)}: .*{message}"):
        movie_from_dict(d, NAME)


def test_fewer_than_two_shots_is_refused():
    d = _movie(2)
    d = {k: (v[:1] if isinstance(v, torch.Tensor) and v.ndim == 2 else v) for k, v in d.items()}
    d = {k: v for k, v in d.items() if k not in ("scene_transition_boundary_ground_truth",
                                                  "scene_transition_boundary_prediction", "shot_end_frame")}
    d.update({"scene_transition_boundary_ground_truth": torch.zeros(0, dtype=torch.bool),
              "scene_transition_boundary_prediction": torch.zeros(0), "shot_end_frame": torch.tensor([9])})
    with pytest.raises(ValueError, match=r"tt0000001.pkl: expected at least 2 shots \(one transition\), found 1"):
        movie_from_dict(d, NAME)


def test_a_users_movie_may_have_one_shot_and_fewer_modalities():
    d = _movie(2)
    d = {k: v[:1] for k, v in d.items() if k in ("place", "cast")} | {"imdb_id": d["imdb_id"]}
    m = movie_from_dict(d, NAME, require_labels=False)
    assert m.n_shots == 1 and sorted(m.features) == ["cast", "place"] and m.boundary is None
    with pytest.raises(ValueError, match=r"missing keys \['action', 'audio'"):
        movie_from_dict(d, NAME)
    with pytest.raises(ValueError, match="expected at least one of the feature keys"):
        movie_from_dict({"imdb_id": d["imdb_id"]}, NAME, require_labels=False)


def test_not_a_dict_is_refused():
    with pytest.raises(ValueError, match=r"tt0000001.pkl: expected a dict of arrays, found list"):
        movie_from_dict([1, 2], NAME)


def test_manifest_is_the_published_set():
    manifest = load_manifest()
    assert len(manifest) == 64 and sum(manifest.values()) == 106_041
    assert min(manifest.values()) == 607 and max(manifest.values()) == 3096
    assert "tt2488496" in manifest


MANIFEST = {"tt0000001": 10, "tt0000002": 20, "tt0000003": 30}


def test_exact_set_has_no_differences():
    assert manifest_differences(dict(MANIFEST), MANIFEST) == []
    assert check_set(dict(MANIFEST), "data.zip", strict=True, manifest=MANIFEST) == []


def test_strict_set_check_names_the_movie_and_what_differs():
    counts = {"tt0000001": 10, "tt0000002": 21, "tt0000009": 5}
    with pytest.raises(ValueError) as e:
        check_set(counts, "data.zip", strict=True, manifest=MANIFEST)
    msg = str(e.value)
    assert msg.startswith("data.zip: not the published MovieScenes set: ")
    assert "1 of the 3 published movies are missing: tt0000003" in msg
    assert "1 movies are not in the published set: tt0000009" in msg
    assert "tt0000002 has 21 shots, the published movie has 20" in msg


def test_lenient_set_check_warns_and_returns_the_warnings(caplog):
    with caplog.at_level(logging.WARNING, logger="sceneseg.data.validate"):
        warnings = check_set({"tt0000001": 10}, "mine/", strict=False, manifest=MANIFEST)
    assert warnings == ["mine/: not the published MovieScenes set (format checks passed): "
                        "2 of the 3 published movies are missing: tt0000002 tt0000003"]
    assert warnings[0] in caplog.text


def test_empty_set_is_an_error_even_when_lenient():
    with pytest.raises(ValueError, match=r"^mine/: expected movie pickles tt\*.pkl, found none$"):
        check_set({}, "mine/", strict=False, manifest=MANIFEST)
