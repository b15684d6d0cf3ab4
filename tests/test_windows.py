import numpy as np
import pytest

from sceneseg.data.windows import build_windows, load_windows, movie_windows, save_windows, shot_index, transition_index


@pytest.mark.parametrize("n_shots,seq_len", [(2, 10), (5, 10), (11, 10), (12, 10), (25, 10), (101, 10), (7, 1), (30, 3)])
def test_windows_tile_every_transition_exactly_once(n_shots, seq_len):
    w = build_windows(["m"], [n_shots], seq_len)
    trans = transition_index(w)
    owned = np.sort(trans[w.own])
    assert owned.tolist() == list(range(n_shots - 1))  # every transition once, edges included
    assert trans.min() >= 0 and trans.max() <= n_shots - 2


def test_window_counts_and_last_window_shift():
    starts, own = movie_windows(25, 10)  # 24 transitions
    assert starts.tolist() == [0, 10, 14]
    assert own.sum(axis=1).tolist() == [10, 10, 4]
    assert own[2].tolist() == [False] * 6 + [True] * 4  # transitions 20..23
    starts, own = movie_windows(5, 10)  # shorter than a window: one, padded by repetition
    assert starts.tolist() == [0] and own[0].tolist() == [True] * 4 + [False] * 6


def test_shot_index_centres_on_transition_and_repeats_edges():
    trans = np.array([0, 1, 5, 8])
    shots = shot_index(trans, np.array(10), 4)  # transition t sees t-1, t, t+1, t+2
    assert shots.tolist() == [[0, 0, 1, 2], [0, 1, 2, 3], [4, 5, 6, 7], [7, 8, 9, 9]]
    assert shot_index(np.array([2]), np.array(10), 2).tolist() == [[2, 3]]
    assert shot_index(np.array([0]), np.array(2), 6).tolist() == [[0, 0, 0, 1, 1, 1]]


def test_movie_with_one_shot_is_rejected():
    with pytest.raises(ValueError, match="at least 2 shots"):
        movie_windows(1, 10)


def test_multi_movie_indices_and_round_trip(tmp_path):
    w = build_windows(["a", "b", "c"], [23, 2, 11], 10)
    assert w.movie.tolist() == [0, 0, 0, 1, 2]
    assert int(w.own.sum()) == 22 + 1 + 10
    save_windows(w, tmp_path / "w.npz")
    r = load_windows(tmp_path / "w.npz")
    assert r.movie_ids == ["a", "b", "c"]
    for k in ("n_shots", "movie", "start", "own"):
        assert np.array_equal(getattr(r, k), getattr(w, k))
    with pytest.raises(ValueError, match="run the featurize stage"):
        load_windows(tmp_path / "missing.npz")


def test_a_corrupt_windows_file_names_the_file(tmp_path):
    bad = tmp_path / "train.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="train.npz: not a readable windows file"):
        load_windows(bad)
