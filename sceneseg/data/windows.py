"""Window geometry: which shots and transitions each LGSS input sequence covers.

A movie of N shots has T = N-1 transitions; transition t lies between shot t and t+1.
A *window* (one BiLSTM input sequence) is ``seq_len`` consecutive transitions; each
transition looks at ``shot_num`` shots around it (for 4: t-1, t, t+1, t+2).
Windows are stored as indices (movie, first transition), never as copies of features,
so memory stays proportional to the number of shots. Shots past a movie edge repeat
the edge shot; a movie shorter than ``seq_len`` transitions repeats its last
transition. The windows of a movie tile all its transitions: the last one is shifted
back to end at the movie's end, and ``own`` marks which transitions each window
answers for, so every transition is counted exactly once in losses and predictions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Windows:
    """A set of windows over a list of movies."""

    movie_ids: list[str]  # the movies the windows index into
    n_shots: np.ndarray  # [M] int64 shots per movie
    movie: np.ndarray  # [W] int64 index into movie_ids
    start: np.ndarray  # [W] int64 first transition of the window
    own: np.ndarray  # [W, S] bool: transition k of the window is answered for by this window

    @property
    def seq_len(self) -> int:
        return int(self.own.shape[1])

    def __len__(self) -> int:
        return int(self.movie.shape[0])

    def subset(self, rows: np.ndarray) -> Windows:
        """The windows at ``rows`` (same movie list)."""
        return Windows(self.movie_ids, self.n_shots, self.movie[rows], self.start[rows], self.own[rows])


def movie_windows(n_shots: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts [W] and ownership masks [W, seq_len] tiling the N-1 transitions of one movie."""
    if n_shots < 2:
        raise ValueError(f"a movie needs at least 2 shots to have a transition, found {n_shots}")
    n_trans = n_shots - 1
    starts = np.arange(0, n_trans, seq_len, dtype=np.int64)
    if n_trans >= seq_len:
        starts[-1] = n_trans - seq_len  # shift the last window back instead of padding
    pos = starts[:, None] + np.arange(seq_len)[None, :]  # [W, S] transition index
    own = pos < n_trans
    if len(starts) > 1:
        prev_end = starts[-2] + seq_len  # first transition not yet owned by an earlier window
        own[-1] &= pos[-1] >= prev_end
    return starts, own


def build_windows(movie_ids: list[str], n_shots: list[int] | np.ndarray, seq_len: int) -> Windows:
    """All windows of all movies, in movie order."""
    if seq_len < 1:
        raise ValueError(f"seq_len: expected >= 1, found {seq_len}")
    movie, start, own = [], [], []
    for i, n in enumerate(n_shots):
        s, o = movie_windows(int(n), seq_len)
        movie.append(np.full(len(s), i, dtype=np.int64))
        start.append(s)
        own.append(o)
    return Windows(
        list(movie_ids),
        np.asarray(n_shots, dtype=np.int64),
        np.concatenate(movie) if movie else np.zeros(0, np.int64),
        np.concatenate(start) if start else np.zeros(0, np.int64),
        np.concatenate(own) if own else np.zeros((0, seq_len), bool),
    )


def transition_index(w: Windows) -> np.ndarray:
    """Transition of each window position, clamped to the movie: [W, S] int64."""
    pos = w.start[:, None] + np.arange(w.seq_len)[None, :]
    return np.minimum(pos, (w.n_shots[w.movie] - 2)[:, None])


def shot_index(trans: np.ndarray, n_shots: np.ndarray, shot_num: int) -> np.ndarray:
    """Shots seen by each transition, edge shots repeated: [...] -> [..., shot_num].

    ``n_shots`` broadcasts against ``trans`` (the shot count of each transition's movie).
    """
    half = shot_num // 2
    offsets = np.arange(-half + 1, half + 1)  # shot_num 4: -1, 0, 1, 2
    shots = trans[..., None] + offsets
    return np.clip(shots, 0, np.asarray(n_shots)[..., None] - 1)


def save_windows(w: Windows, path: Path) -> None:
    """Write windows to an ``.npz`` (plain arrays, no pickles) atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, movie_ids=np.asarray(w.movie_ids, dtype=str), n_shots=w.n_shots,
             movie=w.movie, start=w.start, own=w.own)
    os.replace(tmp, path)


def load_windows(path: Path) -> Windows:
    """Read windows written by :func:`save_windows`."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: expected a windows file (run the featurize stage), found nothing")
    try:
        with np.load(path, allow_pickle=False) as z:
            return Windows([str(x) for x in z["movie_ids"]], z["n_shots"], z["movie"], z["start"], z["own"])
    except (OSError, ValueError, KeyError) as e:  # not an npz, truncated, or a key missing
        raise ValueError(f"{path}: not a readable windows file (rerun the featurize stage): {e}") from None
