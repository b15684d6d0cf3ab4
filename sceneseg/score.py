"""``sceneseg score DIR``: a drop-in for the Eluvio challenge's ``evaluate_sceneseg.py``.

Reads every ``tt*.pkl`` of a folder (MovieScenes pickles with a
``scene_transition_boundary_prediction``) through the allow-list loader, never plain ``pickle``,
and prints the challenge's scores as JSON: AP, mAP, Miou, Precision, Recall, F1, AP_dict,
Miou_dict, then extra keys. The numbers equal the challenge script's (see ``sceneseg.metrics``).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np

from sceneseg import metrics
from sceneseg.movies import PRED_KEY


def read_folder(source: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Ground truth, predictions and shot end frames of every ``tt*.pkl`` in a folder (or a zip of them)."""
    from sceneseg.safeload import iter_movies  # the allow-list unpickler; imported on use only

    gt, prob, ends = {}, {}, {}
    for movie in iter_movies(Path(source), require_labels=True):  # validated: shapes, dtypes, [0, 1]
        if movie.baseline is None:
            raise ValueError(f"{source}: movie {movie.imdb_id} has no '{PRED_KEY}' to score")
        gt[movie.imdb_id] = np.asarray(movie.boundary, dtype=bool)
        prob[movie.imdb_id] = np.asarray(movie.baseline)
        ends[movie.imdb_id] = np.asarray(movie.shot_end_frame)
    if not gt:
        raise ValueError(f"{source}: expected MovieScenes pickles named tt*.pkl, found none")
    return gt, prob, ends


def score_folder(folder: Path, threshold: float = 0.5) -> dict:
    """Eluvio scores (plus Recall@3s and per-movie dicts) of the predictions stored in ``folder``."""
    gt, prob, ends = read_folder(folder)
    try:
        scores = metrics.evaluate(gt, prob, ends, threshold=threshold)
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    return {**scores, "threshold": threshold, "n_movies": len(gt)}


DESCRIPTION = (
    f"Print AP, mAP, Miou, Precision, Recall, F1 (and per-movie AP/Miou) of the {PRED_KEY} "
    "stored in every tt*.pkl of DIR, as JSON, with the numbers of the Eluvio evaluate_sceneseg.py."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="folder holding tt*.pkl files (or a zip archive of them)")
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
        scores = score_folder(args.dir, args.threshold)
    except (ValueError, pickle.UnpicklingError) as e:  # bad files; a refused global is an UnpicklingError
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(scores, indent=4))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sceneseg.score DIR``: the same command without the ``sceneseg`` front end."""
    p = argparse.ArgumentParser(prog="python -m sceneseg.score", description=DESCRIPTION)
    _add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
