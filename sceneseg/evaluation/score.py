"""``sceneseg score DIR``: a drop-in for the Eluvio challenge's ``evaluate_sceneseg.py``.

Reads every ``tt*.pkl`` of a folder or zip (MovieScenes pickles with a
``scene_transition_boundary_prediction``) through the allow-list loader, never plain ``pickle``,
or every converted movie folder of DIR (the pipeline's ``data/movies``: ``baseline.npy`` is the
shipped prediction), and prints the challenge's scores as JSON: AP, mAP, Miou, Precision, Recall,
F1, AP_dict, Miou_dict, then extra keys. The numbers equal the challenge script's (see
``sceneseg.evaluation.metrics``). With ``--predictions FILE`` (the JSON of ``sceneseg predict``, or the
evaluate stage's ``results/predictions.json``) the probabilities come from FILE and only DIR's
ground truth is read: the movies of FILE are scored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sceneseg.data.movies import PRED_KEY, Movie
from sceneseg.evaluation import metrics


def _movies(source: Path) -> Iterator[Movie]:
    """The movies of a zip or folder of pickles (validated, labels required), or of converted movie folders."""
    from sceneseg.data.safeload import iter_movies  # the allow-list unpickler; imported on use only
    from sceneseg.predict import MovieSource, find_movies, read_movie

    source = Path(source)
    converted: list[MovieSource] = []
    if source.is_dir():
        with contextlib.suppress(ValueError):  # no converted folders there: a folder of pickles
            converted = [s for s in find_movies(source) if s.kind == "folder"]
    if not converted:
        yield from iter_movies(source, require_labels=True)  # validated: shapes, dtypes, [0, 1]
        return
    for src in converted:
        movie = read_movie(src)
        missing = [k for k, v in (("boundary", movie.boundary), ("shot_end_frame", movie.shot_end_frame)) if v is None]
        if missing:
            raise ValueError(f"{src.path}: expected ground truth to score against, missing {', '.join(f'{k}.npy' for k in missing)}")
        yield movie


def read_folder(source: Path, predictions: dict[str, np.ndarray] | None = None,
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Ground truth, predictions and shot end frames of the movies of ``source``: every ``tt*.pkl`` of a
    folder (or a zip of them) or every converted movie folder. With ``predictions`` (imdb id ->
    probabilities) only those movies, with those probabilities; each must be in ``source``."""
    gt, prob, ends = {}, {}, {}
    for movie in _movies(source):
        if predictions is not None and movie.imdb_id not in predictions:
            continue
        p = movie.baseline if predictions is None else predictions[movie.imdb_id]
        if p is None:
            raise ValueError(f"{source}: movie {movie.imdb_id} carries no {PRED_KEY} (baseline.npy) to score; "
                             "give the probabilities with --predictions FILE")
        gt[movie.imdb_id] = np.asarray(movie.boundary, dtype=bool)
        prob[movie.imdb_id] = np.asarray(p)
        ends[movie.imdb_id] = np.asarray(movie.shot_end_frame)
    if predictions is not None and set(predictions) - set(gt):
        raise ValueError(f"{source}: expected the ground truth of every predicted movie, missing "
                         f"{' '.join(sorted(set(predictions) - set(gt)))}")
    if not gt:
        raise ValueError(f"{source}: expected converted movie folders or MovieScenes pickles named tt*.pkl, found none")
    return gt, prob, ends


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """imdb id -> probabilities from the JSON of ``sceneseg predict`` (or results/predictions.json)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{path}: cannot read the predictions ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    movies = doc.get("movies") if isinstance(doc, dict) else None
    if not isinstance(movies, list) or not movies:
        raise ValueError(f"{path}: expected the JSON of `sceneseg predict` (a 'movies' list), found no such list")
    out = {}
    for i, m in enumerate(movies):
        if not isinstance(m, dict) or not isinstance(m.get("imdb_id"), str) or not isinstance(m.get("boundary_prob"), list):
            raise ValueError(f"{path}: movies[{i}]: expected 'imdb_id' and a 'boundary_prob' list")
        prob = np.asarray(m["boundary_prob"], dtype=np.float64)
        if prob.ndim != 1 or not (np.isfinite(prob) & (prob >= 0) & (prob <= 1)).all():
            raise ValueError(f"{path}: movie {m['imdb_id']}: expected probabilities in [0, 1]")
        if m["imdb_id"] in out:
            raise ValueError(f"{path}: movie {m['imdb_id']} appears twice")
        out[m["imdb_id"]] = prob
    return out


def score_folder(folder: Path, threshold: float = 0.5, predictions: Path | None = None) -> dict:
    """Eluvio scores (plus Recall@3s and per-movie dicts) of the predictions stored in ``folder``, or
    of those in the ``predictions`` file against ``folder``'s ground truth."""
    gt, prob, ends = read_folder(folder, None if predictions is None else read_predictions(predictions))
    try:
        scores = metrics.evaluate(gt, prob, ends, threshold=threshold)
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    return {**scores, "threshold": threshold, "n_movies": len(gt)}


DESCRIPTION = (
    f"Print AP, mAP, Miou, Precision, Recall, F1 (and per-movie AP/Miou) of the {PRED_KEY} "
    "stored in every tt*.pkl of DIR (or of the converted movies of DIR, e.g. data/movies), as JSON, with "
    "the numbers of the Eluvio evaluate_sceneseg.py; with --predictions FILE, of FILE's probabilities."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="folder holding tt*.pkl files (or a zip archive of them), or converted "
                   "movie folders (data/movies)")
    p.add_argument("--predictions", type=Path, default=None, metavar="FILE",
                   help="score these probabilities (the JSON of `sceneseg predict`, or results/predictions.json "
                   "after `make run`) against DIR's ground truth, instead of the predictions stored in DIR")
    p.add_argument("--threshold", type=float, default=0.5, help="a transition is a boundary when prob >= this (default 0.5)")
    p.set_defaults(func=run)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``score`` on the ``sceneseg`` command line."""
    _add_arguments(subparsers.add_parser("score", help="score MovieScenes pickles like the Eluvio script", description=DESCRIPTION))


def run(args: argparse.Namespace) -> int:
    """Score ``args.dir`` and print JSON to stdout; on bad input print the reason and return 1."""
    try:
        if not 0.0 <= args.threshold <= 1.0:
            raise ValueError(f"--threshold: expected a number in [0, 1], found {args.threshold}")
        scores = score_folder(args.dir, args.threshold, args.predictions)
    except (ValueError, pickle.UnpicklingError) as e:  # bad files; a refused global is an UnpicklingError
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(scores, indent=4))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sceneseg.evaluation.score DIR``: the same command without the ``sceneseg`` front end."""
    p = argparse.ArgumentParser(prog="python -m sceneseg.evaluation.score", description=DESCRIPTION)
    _add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
