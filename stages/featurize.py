"""Stage featurize: LGSS windows (indices into per-movie arrays) for train, val and test."""

from pathlib import Path

from sceneseg.movies import read_index
from sceneseg.split import load_split, split_windows
from sceneseg.stage import run, stage_args
from sceneseg.windows import build_windows, save_windows


def main(args, params) -> None:
    f, s = params.featurize, params.split
    n_shots = {m["imdb_id"]: m["n_shots"] for m in read_index(Path(args.movies))["movies"]}
    split = load_split(Path(args.split))

    def windows(ids):
        return build_windows(ids, [n_shots[i] for i in ids], f.seq_len)

    train = windows(split["train"])
    if s.val_by == "window":
        train, val = split_windows(train, s.val_fraction, s.seed)
    else:
        val = windows(split["val"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, w in (("train", train), ("val", val), ("test", windows(split["test"]))):
        save_windows(w, out / f"{name}.npz")
        print(f"featurize: {name}: {len(w)} windows of {f.seq_len} transitions, "
              f"{int(w.own.sum())} transitions over {len(set(w.movie.tolist()))} movies")


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["movies", "split", "out"]))
