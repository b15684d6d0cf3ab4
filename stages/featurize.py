"""Stage featurize: LGSS windows (indices into per-movie arrays) for train, val and test."""

import _venv  # noqa: F401  (first: one line, not a traceback, when .venv is not active)

from pathlib import Path

from sceneseg.data.movies import read_index
from sceneseg.data.split import load_split, split_all_windows
from sceneseg.data.windows import save_windows
from sceneseg.stage import run, stage_args, writing


def main(args, params) -> None:
    f, s = params.featurize, params.split
    n_shots = {m["imdb_id"]: m["n_shots"] for m in read_index(Path(args.movies))["movies"]}
    split = load_split(Path(args.split))
    wins = split_all_windows(split, n_shots, f.seq_len, s.val_by, s.val_fraction, s.seed)
    out = Path(args.out)
    for name, w in wins.items():
        with writing(out / f"{name}.npz"):
            out.mkdir(parents=True, exist_ok=True)
            save_windows(w, out / f"{name}.npz")
        print(f"featurize: {name}: {len(w)} windows of {f.seq_len} transitions, "
              f"{int(w.own.sum())} transitions over {len(set(w.movie.tolist()))} movies")


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["movies", "split", "out"]))
