"""The seed's protocol: 90% of movies train, 10% test; train windows 80/20 train/val.

Movies go to test either as the last ids in sorted order (the seed's choice: with
the 64 MovieScenes movies, its 7 test movies) or at random with a seed. Validation
is either random windows of the train movies (the seed's way) or whole movies.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from sceneseg.data.windows import Windows, build_windows


def split_movies(movie_ids: list[str], test_fraction: float, test_movies: str, val_fraction: float,
                 val_by: str, seed: int) -> dict[str, list[str]]:
    """Assign each movie to train, val (only when ``val_by == 'movie'``) or test.

    As in the seed, train takes ``floor(len * (1 - test_fraction))`` movies (57 of 64) and test the
    rest (7); at least 1 movie each.
    """
    ids = sorted(movie_ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate imdb ids in the movie list: {sorted({i for i in ids if ids.count(i) > 1})}")
    n_val_needed = 1 if val_by == "movie" else 0
    if len(ids) < 2 + n_val_needed:
        raise ValueError(f"split: expected at least {2 + n_val_needed} movies, found {len(ids)}")
    n_test = min(max(1, len(ids) - int(math.floor(len(ids) * (1 - test_fraction) + 1e-9))), len(ids) - 1 - n_val_needed)
    rng = np.random.default_rng(seed)
    if test_movies == "last":
        test, rest = ids[-n_test:], ids[:-n_test]
    elif test_movies == "random":
        order = rng.permutation(len(ids))
        test = sorted(ids[i] for i in order[:n_test])
        rest = [i for i in ids if i not in set(test)]
    else:
        raise ValueError(f"split.test_movies: expected 'last' or 'random', found {test_movies!r}")
    val: list[str] = []
    if val_by == "movie":
        n_val = min(max(1, int(math.floor(len(rest) * val_fraction + 0.5))), len(rest) - 1)
        pick = rng.permutation(len(rest))[:n_val]
        val = sorted(rest[i] for i in pick)
        rest = [i for i in rest if i not in set(val)]
    elif val_by != "window":
        raise ValueError(f"split.val_by: expected 'window' or 'movie', found {val_by!r}")
    return {"train": rest, "val": val, "test": test}


def split_windows(w: Windows, val_fraction: float, seed: int) -> tuple[Windows, Windows]:
    """Random train/val split of windows (the seed's way): returns (train, val), each in original order."""
    if len(w) < 2:
        raise ValueError(f"split: expected at least 2 train windows to split train/val, found {len(w)}")
    n_val = min(max(1, int(math.floor(len(w) * val_fraction + 0.5))), len(w) - 1)
    perm = np.random.default_rng(seed).permutation(len(w))
    val_rows = np.sort(perm[:n_val])
    train_rows = np.sort(perm[n_val:])
    return w.subset(train_rows), w.subset(val_rows)


def split_all_windows(split: dict[str, list[str]], n_shots: dict[str, int], seq_len: int, val_by: str,
                      val_fraction: float, seed: int) -> dict[str, Windows]:
    """Train / val / test windows of a movie split: with ``val_by: window`` the val windows are a
    random share of the train movies' windows (the seed's way), otherwise the val movies' windows."""

    def windows(ids: list[str]) -> Windows:
        return build_windows(ids, [n_shots[i] for i in ids], seq_len)

    train = windows(split["train"])
    if val_by == "window":
        train, val = split_windows(train, val_fraction, seed)
    else:
        val = windows(split["val"])
    return {"train": train, "val": val, "test": windows(split["test"])}


def save_split(split: dict, path: Path) -> None:
    """Write the split JSON atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(split, indent=2) + "\n")
    os.replace(tmp, path)


def load_split(path: Path) -> dict[str, list[str]]:
    """Read a split written by :func:`save_split`."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: expected the movie split (run the split stage), found nothing")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (rerun the split stage): {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of train/val/test movie ids, found {type(doc).__name__}")
    for key in ("train", "val", "test"):
        if key not in doc:
            raise ValueError(f"{path}: expected key '{key}', found keys {sorted(doc)}")
    return doc
