"""Stage split: assign movies to train / val / test (the seed's protocol)."""

from pathlib import Path

from sceneseg.movies import read_index
from sceneseg.split import save_split, split_movies
from sceneseg.stage import run, stage_args, writing


def main(args, params) -> None:
    s = params.split
    ids = [m["imdb_id"] for m in read_index(Path(args.movies))["movies"]]
    split = split_movies(ids, s.test_fraction, s.test_movies, s.val_fraction, s.val_by, s.seed)
    with writing(args.out):
        save_split(split, Path(args.out))
    print(f"split: {len(split['train'])} train, {len(split['val'])} val, {len(split['test'])} test movies; "
          f"test = {' '.join(split['test'])}")


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["movies", "out"]))
