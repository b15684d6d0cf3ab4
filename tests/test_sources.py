import json
import logging
import pickle

import numpy as np
import pytest

from sceneseg.data.movies import MODALITIES, load_movies, read_index
from sceneseg.data.sources import check_source, materialize
from sceneseg.data.synthetic import SyntheticSpec, write_synthetic_pickles

SPEC = SyntheticSpec(n_movies=3, min_shots=4, max_shots=12, seed=3)


def test_check_source_refuses_an_unknown_source():
    with pytest.raises(ValueError, match=r"^data.source: expected one of synthetic, moviescenes, local, video, found 'ftp'$"):
        check_source("ftp", "")


def test_check_source_needs_an_existing_local_path(tmp_path):
    with pytest.raises(ValueError, match=r"^data.path: expected a zip archive or a folder of tt\*.pkl for data.source: local, found ''$"):
        check_source("local", "")
    with pytest.raises(ValueError, match=rf"^data.path: expected a zip archive or a folder of tt\*.pkl, {tmp_path}/x.zip does not exist$"):
        check_source("local", str(tmp_path / "x.zip"))
    check_source("local", str(tmp_path))
    check_source("synthetic", "")


def test_synthetic_source_writes_the_converted_movies_and_index(tmp_path):
    out = tmp_path / "data" / "movies"
    summary = materialize("synthetic", out, cache_dir=tmp_path / "cache", synthetic=SPEC)
    pickles = write_synthetic_pickles(SPEC, tmp_path / "pickles")  # the same movies, as pickles
    index = read_index(out)
    assert index["source"] == "synthetic" and index["published_set"] is False and index["warnings"] == []
    assert index["synthetic"] == {"n_movies": 3, "min_shots": 4, "max_shots": 12, "seed": 3, "noise": 1.0,
                                  "min_setups": 1, "max_setups": 8, "scale_spread": 0.0, "length_scale": 1.0,
                                  "scene_scale": 1.0, "preset": "realistic"}
    assert [m["imdb_id"] for m in index["movies"]] == [p.stem for p in pickles]
    movies = load_movies(out)
    for movie, p in zip(movies, pickles, strict=True):
        with open(p, "rb") as f:
            d = pickle.load(f)
        for k in MODALITIES:
            assert movie.features[k].tobytes() == d[k].numpy().tobytes()
        assert np.array_equal(movie.boundary, d["scene_transition_boundary_ground_truth"].numpy())
    assert summary["n_movies"] == 3 and summary["n_shots"] == sum(m.n_shots for m in movies)
    assert summary["n_boundaries"] == sum(int(m.boundary.sum()) for m in movies)
    assert sorted(p.name for p in out.parent.iterdir()) == ["movies"]  # no temp leftovers


def test_synthetic_source_needs_a_spec(tmp_path):
    with pytest.raises(ValueError, match="synthetic: data.source synthetic needs a SyntheticSpec"):
        materialize("synthetic", tmp_path / "movies", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_local_set_other_than_published_is_accepted_with_warnings(tmp_path, caplog):
    write_synthetic_pickles(SPEC, tmp_path / "mine")
    with caplog.at_level(logging.WARNING):
        summary = materialize("local", tmp_path / "movies", path=str(tmp_path / "mine"), cache_dir=tmp_path / "cache")
    assert summary["published_set"] is False and summary["n_movies"] == 3
    assert len(summary["warnings"]) == 2
    assert "64 of the 64 published movies are missing" in summary["warnings"][0]
    assert "3 movies are not in the published set" in summary["warnings"][1]
    index = json.loads((tmp_path / "movies" / "index.json").read_text())
    assert index["warnings"] == summary["warnings"] and index["path"] == str(tmp_path / "mine")
    assert summary["warnings"][0] in caplog.text


def test_local_bad_movie_leaves_no_output_and_no_temp_folders(tmp_path):
    paths = write_synthetic_pickles(SPEC, tmp_path / "mine")
    paths[-1].write_bytes(paths[-1].read_bytes()[:1000])  # the last movie is cut short
    out = tmp_path / "data" / "movies"
    with pytest.raises(ValueError, match=rf"{paths[-1].name}: truncated or corrupted pickle"):
        materialize("local", out, path=str(tmp_path / "mine"), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_rerun_replaces_the_output_and_a_failed_run_keeps_the_previous_one(tmp_path):
    out = tmp_path / "movies"
    materialize("synthetic", out, cache_dir=tmp_path, synthetic=SPEC)
    materialize("synthetic", out, cache_dir=tmp_path, synthetic=SyntheticSpec(2, 4, 5, seed=4))
    assert len(read_index(out)["movies"]) == 2
    with pytest.raises(ValueError):
        materialize("local", out, path=str(tmp_path / "movies"), cache_dir=tmp_path)  # no pickles there
    assert len(read_index(out)["movies"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["movies"]


def test_check_source_needs_a_folder_of_videos(tmp_path):
    with pytest.raises(ValueError, match=r"^data.path: expected a folder of videos with their <name>.scenes.csv for "
                                         r"data.source: video, found ''$"):
        check_source("video", "")
    (tmp_path / "a.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"found {tmp_path}/a.mp4 \(a file\)$"):
        check_source("video", str(tmp_path / "a.mp4"))
    with pytest.raises(ValueError, match=rf"found {tmp_path}/none \(nothing there\)$"):
        check_source("video", str(tmp_path / "none"))
    check_source("video", str(tmp_path))
