"""Split and window edges: the smallest sets each protocol accepts, the caps on test and validation
shares, empty window sets, dtypes, file formats and messages. Written against surviving mutants
(see bench/RESULTS_mutants.md)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sceneseg.data.split import load_split, save_split, split_all_windows, split_movies, split_windows
from sceneseg.data.windows import build_windows

IDS = [f"tt{i:02d}" for i in range(10)]


def sizes(split: dict) -> tuple[int, int, int]:
    return len(split["train"]), len(split["val"]), len(split["test"])


@pytest.mark.parametrize("n, test_fraction, val_fraction, val_by, expect", [
    (2, 0.1, 0.2, "window", (1, 0, 1)),  # the smallest set by window
    (3, 0.1, 0.2, "movie", (1, 1, 1)),  # the smallest set by movie
    (10, 0.01, 0.2, "window", (9, 0, 1)),  # at least one test movie, not more
    (10, 0.01, 0.01, "movie", (8, 1, 1)),  # at least one validation movie, not more
    (5, 0.9, 0.2, "window", (1, 0, 4)),  # test takes all but one train movie
    (5, 0.9, 0.2, "movie", (1, 1, 3)),  # ... all but one train and one val movie
    (10, 0.1, 0.99, "movie", (1, 8, 1)),  # validation takes all but one train movie
])
def test_split_sizes_at_the_edges(n, test_fraction, val_fraction, val_by, expect):
    split = split_movies(IDS[:n], test_fraction, "last", val_fraction, val_by, 0)
    assert sizes(split) == expect
    assert sorted(split["train"] + split["val"] + split["test"]) == IDS[:n]


@pytest.mark.parametrize("args, message", [
    ((["tt1", "tt1", "tt2", "tt3", "tt3", "tt3"], 0.1, "last", 0.2, "window", 0),
     "duplicate imdb ids in the movie list: ['tt1', 'tt3']"),
    ((IDS[:1], 0.1, "last", 0.2, "window", 0), "split: expected at least 2 movies, found 1"),
    ((IDS[:2], 0.1, "last", 0.2, "movie", 0), "split: expected at least 3 movies, found 2"),
    ((IDS, 0.1, "first", 0.2, "window", 0), "split.test_movies: expected 'last' or 'random', found 'first'"),
    ((IDS, 0.1, "last", 0.2, "shot", 0), "split.val_by: expected 'window' or 'movie', found 'shot'"),
])
def test_split_refusals(args, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        split_movies(*args)


def test_window_split_edges():
    w = build_windows(["a"], [3], 1)  # two windows of one transition
    tr, va = split_windows(w, 0.2, 0)
    assert (len(tr), len(va)) == (1, 1)
    w = build_windows(["a"], [21], 1)  # 20 windows
    assert [len(x) for x in split_windows(w, 0.001, 0)] == [19, 1]  # at least one validation window
    assert [len(x) for x in split_windows(w, 0.999, 0)] == [1, 19]  # at least one training window
    with pytest.raises(ValueError, match=re.escape("split: expected at least 2 train windows to split train/val, found 1")):
        split_windows(build_windows(["a"], [2], 1), 0.2, 0)


def test_split_file_format_and_refusals(tmp_path):
    split = {"train": ["tt1", "tt2"], "val": [], "test": ["tt3"]}
    save_split(split, tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text() == json.dumps(split, indent=2) + "\n"  # readable in diffs
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    path = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=f"^{re.escape(f'{path}: expected the movie split (run the split stage), found nothing')}$"):
        load_split(path)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=re.escape("list.json: expected a mapping of train/val/test movie ids, found list")):
        load_split(tmp_path / "list.json")
    (tmp_path / "partial.json").write_text('{"train": [], "test": []}')
    with pytest.raises(ValueError, match=re.escape("partial.json: expected key 'val', found keys ['test', 'train']")):
        load_split(tmp_path / "partial.json")


def test_no_movies_give_empty_windows_of_the_right_types():
    w = build_windows([], [], 5)
    assert len(w) == 0 and w.seq_len == 5
    assert w.movie.shape == (0,) and w.movie.dtype == np.int64
    assert w.start.shape == (0,) and w.start.dtype == np.int64
    assert w.own.shape == (0, 5) and w.own.dtype == np.bool_


def test_window_arrays_are_int64_whatever_the_input():
    w = build_windows(["a", "b"], np.array([12, 4], dtype=np.int32), 5)
    assert w.n_shots.dtype == np.int64 and w.movie.dtype == np.int64 and w.start.dtype == np.int64
    assert w.movie.tolist() == [0, 0, 0, 1] and w.start.tolist() == [0, 5, 6, 0]
    with pytest.raises(ValueError, match="^seq_len: expected >= 1, found 0$"):
        build_windows(["a"], [5], 0)


def test_split_all_windows_by_window_and_by_movie():
    split = {"train": ["tt1", "tt2"], "val": ["tt3"], "test": ["tt4"]}
    n_shots = {"tt1": 31, "tt2": 21, "tt3": 11, "tt4": 16}  # 3, 2, 1, 2 windows of 10 transitions
    by_window = split_all_windows(split, n_shots, 10, "window", 0.4, seed=5)
    assert by_window["train"].movie_ids == by_window["val"].movie_ids == ["tt1", "tt2"]  # val from train movies
    assert (len(by_window["train"]), len(by_window["val"])) == (3, 2)  # 40% of 5 windows
    pairs = lambda w: {(w.movie_ids[m], s) for m, s in zip(w.movie, w.start)}  # noqa: E731
    assert pairs(by_window["train"]) | pairs(by_window["val"]) == {("tt1", 0), ("tt1", 10), ("tt1", 20), ("tt2", 0), ("tt2", 10)}
    same_seed = split_all_windows(split, n_shots, 10, "window", 0.4, seed=5)["val"]
    assert pairs(same_seed) == pairs(by_window["val"])
    other = [pairs(split_all_windows(split, n_shots, 10, "window", 0.4, seed=s)["val"]) for s in range(6)]
    assert len({frozenset(p) for p in other}) > 1  # the seed reaches the draw
    by_movie = split_all_windows(split, n_shots, 10, "movie", 0.4, seed=5)
    assert by_movie["train"].movie_ids == ["tt1", "tt2"] and len(by_movie["train"]) == 5
    assert by_movie["val"].movie_ids == ["tt3"] and len(by_movie["val"]) == 1
    for w in (by_window, by_movie):
        assert w["test"].movie_ids == ["tt4"] and w["test"].n_shots.tolist() == [16] and w["test"].seq_len == 10
        assert w["test"].start.tolist() == [0, 5]
