"""Stage split: assign movies to train / val / test (the seed's protocol)."""

import _venv  # noqa: F401  (first: one line, not a traceback, when .venv is not active)

from pathlib import Path

from sceneseg.data.movies import read_index
from sceneseg.data.split import save_split, split_movies
from sceneseg.stage import run, stage_args, writing


def main(args, params) -> None:
    s = params.split
    ids = [m["imdb_id"] for m in read_index(Path(args.movies))["movies"]]
    split = split_movies(ids, s.test_fraction, s.test_movies, s.val_fraction, s.val_by, s.seed)
    with writing(args.out):
        save_split(split, Path(args.out))
    # with val_by: window the validation transitions are windows of the train movies, not movies of their own
    n_train, n_test = len(split["train"]), len(split["test"])
    counts = (f"{n_train} train, {len(split['val'])} val, {n_test} test movies" if s.val_by == "movie" else
              f"{n_train} train movies (validation: {s.val_fraction:.0%} of their windows), {n_test} test movies")
    print(f"split: {counts}; test = {' '.join(split['test'])}")


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["movies", "out"]))
