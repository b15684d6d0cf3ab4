"""Stage evaluate: predict every transition of every test movie; Eluvio metrics of the model,
the shipped predictions and a chance baseline; PR curve data and pictures."""

import json
from pathlib import Path

from sceneseg.checkpoint import load_checkpoint
from sceneseg.evaluate import boundary_rate, draw, pr_points, score_systems
from sceneseg.inference import ShotBank, pick_device, predict_windows
from sceneseg.movies import load_movies
from sceneseg.split import load_split
from sceneseg.stage import run, stage_args
from sceneseg.windows import load_windows


def write_json(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def main(args, params) -> None:
    e = params.evaluate
    device = pick_device(params.train.device)
    ckpt = load_checkpoint(Path(args.model), device)
    test = load_windows(Path(args.windows) / "test.npz")
    if test.seq_len != ckpt.seq_len:
        raise ValueError(f"{args.windows}/test.npz: windows of {test.seq_len} transitions, but the model in "
                         f"{args.model} was trained on {ckpt.seq_len}: rerun featurize and train")
    movies = load_movies(Path(args.movies), test.movie_ids)
    bank = ShotBank(movies, list(ckpt.config.feature_dims), device, ckpt.config.shot_num)
    prob = predict_windows(ckpt.model, bank, test, params.train.eval_batch_size)
    train_rate = boundary_rate(load_movies(Path(args.movies), load_split(Path(args.split))["train"]))
    summary, per_movie, systems = score_systems(movies, prob, ckpt.threshold, e.fps, e.recall_window_s,
                                                e.chance_seed, train_rate)
    write_json(Path(args.metrics), summary)
    write_json(Path(args.per_movie), per_movie)
    plots = Path(args.plots)
    gt = {m.imdb_id: m.boundary for m in movies}
    for name in ("model", "shipped"):
        if name in systems:
            write_json(plots / f"pr_{name}.json", pr_points(gt, systems[name]))
    draw(movies, systems, summary, per_movie, ckpt.threshold, Path(args.figures), e.timeline_movies,
         e.fps)
    for name, res in summary.items():
        print(f"evaluate: {name:12s} " + "  ".join(f"{k} {v:.4f}" for k, v in res.items()))


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["movies", "split", "windows", "model", "metrics", "per_movie", "plots", "figures"]))
