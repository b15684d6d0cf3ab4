import numpy as np
import pytest

from sceneseg.data.split import load_split, save_split, split_movies, split_windows
from sceneseg.data.windows import build_windows

SEED_TEST = ["tt1205489", "tt1375666", "tt1412386", "tt1707386", "tt2024544", "tt2488496", "tt2582846"]


def manifest_ids():
    from importlib.resources import files
    import csv
    import io
    text = files("sceneseg.data").joinpath("moviescenes_manifest.csv").read_text()
    return [r["imdb_id"] for r in csv.DictReader(io.StringIO(text))]


def test_seed_protocol_gives_the_seeds_seven_test_movies():
    ids = manifest_ids()
    assert len(ids) == 64
    s = split_movies(ids[::-1], 0.1, "last", 0.2, "window", 0)
    assert s["test"] == SEED_TEST
    assert len(s["train"]) == 57 and s["val"] == []
    assert not set(s["train"]) & set(s["test"])


def test_random_split_is_seeded_and_disjoint():
    ids = [f"tt{i:07d}" for i in range(20)]
    a = split_movies(ids, 0.1, "random", 0.2, "movie", 3)
    b = split_movies(ids, 0.1, "random", 0.2, "movie", 3)
    c = split_movies(ids, 0.1, "random", 0.2, "movie", 4)
    assert a == b and a != c
    assert len(a["test"]) == 2 and len(a["val"]) == 4 and len(a["train"]) == 14
    assert sorted(a["train"] + a["val"] + a["test"]) == ids


def test_split_errors():
    with pytest.raises(ValueError, match="duplicate imdb ids"):
        split_movies(["a", "a", "b"], 0.1, "last", 0.2, "window", 0)
    with pytest.raises(ValueError, match="at least 2 movies"):
        split_movies(["a"], 0.1, "last", 0.2, "window", 0)


def test_window_split_is_80_20_seeded(tmp_path):
    w = build_windows(["a", "b"], [501, 500], 10)  # 50 + 50 windows
    tr, va = split_windows(w, 0.2, 0)
    assert len(tr) == 80 and len(va) == 20
    keys = lambda x: set(zip(x.movie.tolist(), x.start.tolist()))  # noqa: E731
    assert not keys(tr) & keys(va) and len(keys(tr) | keys(va)) == 100
    tr2, va2 = split_windows(w, 0.2, 0)
    assert np.array_equal(va.start, va2.start) and np.array_equal(va.movie, va2.movie)
    save_split({"train": ["a"], "val": [], "test": ["b"]}, tmp_path / "s.json")
    assert load_split(tmp_path / "s.json")["test"] == ["b"]


def test_a_corrupt_split_file_names_the_file(tmp_path):
    (tmp_path / "split.json").write_text("{oops")
    with pytest.raises(ValueError, match="split.json: not valid JSON"):
        load_split(tmp_path / "split.json")
