"""Stage evaluate: predict every transition of every test movie; Eluvio metrics of the model,
the boosted and stacked references, the shipped predictions and a chance baseline; PR curve data and pictures.
The headline numbers go to --metrics (DVC metrics, one column each in `dvc exp show`); every number of
every system to --details, per-movie AP and Miou to --per_movie, the model's probabilities to --predictions."""

import _venv  # noqa: F401  (first: one line, not a traceback, when .venv is not active)

from pathlib import Path

from sceneseg.data.featurecache import attach
from sceneseg.data.movies import load_movies, missing_shipped
from sceneseg.data.split import load_split
from sceneseg.data.windows import load_windows
from sceneseg.evaluation.report import PR_SYSTEMS, boundary_rate, draw, headline, pr_points, predictions_doc, score_systems
from sceneseg.models.base import owned_transitions
from sceneseg.models.checkpoint import load_checkpoint
from sceneseg.models.references.boosted import boosted_spec, fit_boosted
from sceneseg.models.references.stacked import fit_stacked
from sceneseg.stage import run, stage_args, write_json, writing
from sceneseg.training.device import pick_device


def main(args, params) -> None:
    e = params.evaluate
    device = pick_device(params.train.device)
    ckpt = load_checkpoint(Path(args.model), device)
    wins = {n: load_windows(Path(args.windows) / f"{n}.npz") for n in ("train", "val", "test")}
    seq_len = ckpt.config.get("seq_len")
    if seq_len is not None and wins["test"].seq_len != seq_len:
        raise ValueError(f"{args.windows}/test.npz: windows of {wins['test'].seq_len} transitions, but the model in "
                         f"{args.model} was trained on {seq_len}: rerun featurize and train")
    split = load_split(Path(args.split))

    def load(ids: list[str]):  # with the features stage's similarity features attached
        return attach(load_movies(Path(args.movies), ids), Path(args.features))

    movies = load(wins["test"].movie_ids)
    print(f"evaluate: predicting the {len(movies)} test movies with the {ckpt.kind.name} model", flush=True)
    prob = ckpt.predict(movies, device)
    train_movies = load(split["train"])
    # the stacked reference: fitted on the transitions the model trained on, threshold on its validation ones
    whole_val = wins["val"].movie_ids != wins["train"].movie_ids
    print(f"evaluate: fitting the stacked reference on {len(wins['train'].movie_ids)} train movies", flush=True)
    fit_on = (load(wins["train"].movie_ids), owned_transitions(wins["train"]),
              load(wins["val"].movie_ids), None if whole_val else owned_transitions(wins["val"]))
    # the references read the shipped prediction only when every movie of the set has it
    absent = missing_shipped(fit_on[0] + fit_on[2] + movies)
    if absent:
        print(f"evaluate: {absent}: the references read the features alone")
    ref = fit_stacked(*fit_on, list(ckpt.feature_dims), tuple(e.stacked_widths), e.stacked_c,
                      params.train.threshold_metric, use_shipped=not absent)
    print(f"evaluate: fitting the boosted reference on {len(wins['train'].movie_ids)} train movies", flush=True)
    boost = fit_boosted(*fit_on, boosted_spec(e, list(ckpt.feature_dims), use_shipped=not absent),
                        params.train.threshold_metric)
    summary, per_movie, systems = score_systems(movies, prob, ckpt.threshold, e.fps, e.recall_window_s,
                                                e.chance_seed, boundary_rate(train_movies), references={
                                                    "boosted": (boost.predict(movies), boost.threshold),
                                                    "stacked": (ref.predict(movies), ref.threshold)})
    write_json(Path(args.metrics), headline(summary))
    write_json(Path(args.details), summary)
    write_json(Path(args.per_movie), per_movie)
    write_json(Path(args.predictions), predictions_doc(movies, prob, ckpt.threshold, args.model))
    plots = Path(args.plots)
    gt = {m.imdb_id: m.boundary for m in movies}
    for name in PR_SYSTEMS:  # every declared plot file is written: an absent system's curve is empty
        write_json(plots / f"pr_{name}.json", pr_points(gt, systems[name]) if name in systems else [])
    with writing(args.figures):
        draw(movies, systems, summary, per_movie, ckpt.threshold, Path(args.figures), e.timeline_movies,
             e.fps)
    for name, res in summary.items():
        print(f"evaluate: {name:12s} " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
                                                   for k, v in res.items()))


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["movies", "split", "windows", "features", "model", "metrics", "details", "per_movie",
                                   "predictions", "plots", "figures"]))
