"""``sceneseg predict INPUT... --model CHECKPOINT``: scenes of your own movies from a trained model.

Each INPUT is one MovieScenes-format movie (a ``.pkl`` pickle of any file name, read only through
the allow-list loader of :mod:`sceneseg.data.safeload`; or a converted movie folder of ``.npy`` files,
see :mod:`sceneseg.data.movies`) or a folder holding such pickles and/or converted folders (for example
the pipeline's ``data/movies``). Ground truth is not needed; when a movie carries it, its scene
count, precision/recall/F1 and Miou are reported next to the prediction, and the AP, mAP, Miou
and F1 of all such movies together.

For each movie the output lists its scenes (first and last shot, first and last frame when
``shot_end_frame`` is known, the probability of the boundary that opened the scene) and the
probability of every transition. A transition is a boundary when ``prob >= threshold`` (the
Eluvio convention); probabilities are rounded to 6 decimals and the decision is made on the
rounded value, so the written scenes always follow from the written probabilities.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sceneseg.data.movies import MODALITIES, Movie, load_movie

if TYPE_CHECKING:  # torch-based modules are imported on use, so `sceneseg --help` stays fast
    import torch

    from sceneseg.models.checkpoint import Checkpoint

DECIMALS = 6  # probabilities are written (and thresholded) at this precision
SCENE_FIELDS = ("imdb_id", "scene", "first_shot", "last_shot", "first_frame", "last_frame", "boundary_prob", "start_s",
                "end_s")
PROB_FIELDS = ("imdb_id", "transition", "prob", "boundary")


@dataclass(frozen=True)
class MovieSource:
    """Where one input movie lives: a pickle file or a converted movie folder."""

    path: Path
    kind: str  # "pickle" | "folder"


@dataclass(frozen=True)
class Scene:
    """One predicted scene: shots [first_shot, last_shot] inclusive, frames when known."""

    index: int
    first_shot: int
    last_shot: int
    first_frame: int | None
    last_frame: int | None
    boundary_prob: float | None  # probability of the boundary that opened it; None for the first scene
    start_s: float | None = None  # seconds, when the movie's shot end times are known (made from a video)
    end_s: float | None = None

    def record(self) -> dict:
        """As written to JSON: the times only when known."""
        d = vars(self).copy()
        if self.start_s is None:
            del d["start_s"], d["end_s"]
        return d


# ----------------------------------------------------------------------------- finding and reading movies


def _is_movie_folder(path: Path) -> bool:
    return path.is_dir() and any((path / f"{m}.npy").is_file() for m in MODALITIES)


def find_movies(path: Path) -> list[MovieSource]:
    """The movies of INPUT: a ``.pkl`` file, a converted movie folder, or a folder of both kinds.

    A folder's movies are its ``*.pkl`` files and its sub-folders holding ``<modality>.npy``
    (hidden entries are skipped), sorted by name.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".pkl":
            raise ValueError(f"{path}: expected a MovieScenes pickle (.pkl), a converted movie folder "
                             f"or a folder of them, found a file of another kind")
        return [MovieSource(path, "pickle")]
    if _is_movie_folder(path):
        return [MovieSource(path, "folder")]
    if not path.is_dir():
        raise ValueError(f"{path}: expected a MovieScenes pickle (.pkl), a converted movie folder "
                         f"or a folder of them, found nothing there")
    found = []
    for p in sorted(path.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix == ".pkl":
            found.append(MovieSource(p, "pickle"))
        elif _is_movie_folder(p):
            found.append(MovieSource(p, "folder"))
    if not found:
        raise ValueError(f"{path}: no movies found: expected .pkl pickles or converted movie folders "
                         f"(holding {', '.join(f'{m}.npy' for m in MODALITIES)}), found none")
    return found


def read_movie(src: MovieSource, check_name: bool = True) -> Movie:
    """Load one movie: a pickle only through the allow-list loader (labels optional), a folder memory-mapped.

    ``check_name``: a pickle's file name must be its imdb id (as in the data set); without, the id
    inside the pickle names the movie whatever the file is called.
    """
    if src.kind == "pickle":
        from sceneseg.data.safeload import read_movie_pickle

        try:
            return read_movie_pickle(src.path, str(src.path), require_labels=False, check_name=check_name)
        except pickle.UnpicklingError as e:  # a refused global: report it like any other bad file
            raise ValueError(str(e)) from None
    return load_movie(src.path)


def check_movie(movie: Movie, source: Path, feature_dims: dict[str, int]) -> int:
    """Check that ``movie`` carries every modality the model needs at the model's dimension; return N shots.

    Modalities the model was trained without may be absent or of any shape.
    """
    name = f"movie {movie.imdb_id} ({source})"
    missing = [m for m in feature_dims if m not in movie.features]
    if missing:
        raise ValueError(f"{name}: the model needs the modalities {list(feature_dims)}; missing {missing}, "
                         f"found only {sorted(movie.features)}")
    n_shots = None
    for mod, dim in feature_dims.items():
        shape = tuple(movie.features[mod].shape)
        if len(shape) != 2 or shape[1] != dim:
            raise ValueError(f"{name}: '{mod}' features expected shape [N, {dim}] (the model's dimension), "
                             f"found {list(shape)}")
        if n_shots is None:
            n_shots = shape[0]
        elif shape[0] != n_shots:
            raise ValueError(f"{name}: feature lengths differ: {n_shots} shots in "
                             f"'{next(iter(feature_dims))}', {shape[0]} in '{mod}'")
        if not np.isfinite(movie.features[mod]).all():
            raise ValueError(f"{name}: '{mod}' features expected finite values, found NaN or inf")
    if not n_shots:
        raise ValueError(f"{name}: expected at least one shot, found none")
    for label, arr, n in (("shot_end_frame", movie.shot_end_frame, n_shots), ("boundary", movie.boundary, n_shots - 1)):
        if arr is not None and tuple(arr.shape) != (n,):
            raise ValueError(f"{name}: '{label}' expected shape [{n}] for {n_shots} shots, found {list(arr.shape)}")
    return n_shots


# ----------------------------------------------------------------------------- prediction


def predict_movie(ckpt: Checkpoint, movie: Movie, n_shots: int, device: torch.device,
                  batch_size: int | None) -> np.ndarray:
    """Boundary probability of each of the N-1 transitions of one checked movie: [N-1] float64."""
    import torch

    if n_shots < 2:
        return np.zeros(0, dtype=np.float64)  # one shot: no transition, no model call
    with torch.inference_mode():  # no autograd bookkeeping at all (no_grad still keeps version counters)
        return ckpt.predict([movie], device, batch_size)[movie.imdb_id]


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` CPU threads for torch and for numpy's BLAS (the similarity features'
    matrix products); 0 leaves both as they are. Both settings are restored afterwards."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        with threadpool_limits(n or None, user_api="blas"):  # None: no limit
            yield
    finally:
        torch.set_num_threads(before)  # callers of main() in the same process keep their setting


def scenes_from_probs(prob: np.ndarray, threshold: float, shot_end_frame: np.ndarray | None = None,
                      shot_end_time: np.ndarray | None = None) -> list[Scene]:
    """Cut a movie at every transition with ``prob >= threshold``: [N-1] -> scenes covering all N shots.

    Frames follow the Eluvio Miou definition: a scene starts one frame after the previous scene's
    last frame (0 for the first) and ends at ``shot_end_frame`` of its last shot. Times likewise:
    a scene starts when the previous one ends (0 for the first) and ends at ``shot_end_time`` of its last shot.
    """
    n_shots = len(prob) + 1
    cuts = np.flatnonzero(prob >= threshold)  # [K] scene k ends after shot cuts[k]
    last = np.append(cuts, n_shots - 1)  # [K+1] last shot of each scene
    first = np.concatenate(([0], cuts + 1))  # [K+1] first shot of each scene
    scenes = []
    for k, (a, b) in enumerate(zip(first.tolist(), last.tolist())):
        first_frame = last_frame = None
        if shot_end_frame is not None:
            first_frame = 0 if k == 0 else int(shot_end_frame[a - 1]) + 1
            last_frame = int(shot_end_frame[b])
        opened_by = None if k == 0 else float(prob[a - 1])
        start_s = end_s = None
        if shot_end_time is not None:
            start_s = 0.0 if k == 0 else round(float(shot_end_time[a - 1]), 3)
            end_s = round(float(shot_end_time[b]), 3)
        scenes.append(Scene(k, a, b, first_frame, last_frame, opened_by, start_s, end_s))
    return scenes


def compare_with_truth(movie: Movie, prob: np.ndarray, threshold: float) -> dict | None:
    """Scene count, precision/recall/F1 and (with frames) Miou against the movie's own ground truth, if any."""
    if movie.boundary is None or len(prob) == 0:
        return None
    from sceneseg.evaluation import metrics

    gt = np.asarray(movie.boundary, dtype=bool)
    pred = prob >= threshold
    p, r, f1 = metrics.precision_recall_f1(gt, pred)
    out = {"n_scenes": int(gt.sum()) + 1, "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}
    if movie.shot_end_frame is not None:
        out["miou"] = round(metrics.miou(gt, pred, np.asarray(movie.shot_end_frame)), 4)
    return out


def predict_one(ckpt: Checkpoint, src: MovieSource, threshold: float, device: torch.device, batch_size: int | None,
                plot_dir: Path | None = None, seen: dict[str, Path] | None = None, ignore_shipped: bool = False,
                truth: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, log=None) -> dict:
    """Read, check and predict one movie; draw its timeline when asked. Returns its output record.

    ``seen`` (imdb id -> source) refuses a movie read before, before any work or picture.
    ``ignore_shipped``: predict as if the movie had no shipped prediction (from the features alone).
    ``truth`` collects (ground truth, shot end frames) of the movies that carry both, for the overall scores.
    A pickle whose file name is not its imdb id is read under the id inside, said once through ``log``.
    """
    movie = read_movie(src, check_name=False)
    if src.kind == "pickle" and src.path.stem != movie.imdb_id and log is not None:
        log(f"predict: {src.path} holds movie {movie.imdb_id} (the id inside the pickle names it, not the file name)")
    if ignore_shipped:
        movie = dataclasses.replace(movie, baseline=None)
    if seen is not None:
        if movie.imdb_id in seen:
            raise ValueError(f"{src.path}: movie {movie.imdb_id} was already read from {seen[movie.imdb_id]}")
        seen[movie.imdb_id] = src.path
    if movie.extractor != ckpt.extractor and log is not None:
        log(f"predict: warning: movie {movie.imdb_id}'s features come from {movie.extractor!r}, the model was "
            f"trained on features from {ckpt.extractor!r}: its probabilities may mean little")
    n_shots = check_movie(movie, src.path, ckpt.feature_dims)
    prob = np.round(predict_movie(ckpt, movie, n_shots, device, batch_size), DECIMALS)
    ends = None if movie.shot_end_frame is None else np.asarray(movie.shot_end_frame)
    times = None if movie.shot_end_time is None else np.asarray(movie.shot_end_time)
    scenes = scenes_from_probs(prob, threshold, ends, times)
    record = {
        "imdb_id": movie.imdb_id,
        "source": str(src.path),
        "n_shots": n_shots,
        "n_scenes": len(scenes),
        "inputs": ckpt.kind.inputs_used(ckpt.config, movie),
        "features": movie.extractor,
        **({"fps": movie.fps} if movie.fps is not None else {}),
        "scenes": [s.record() for s in scenes],
        "boundary_prob": prob.tolist(),
    }
    compared = compare_with_truth(movie, prob, threshold)
    if compared is not None:
        record["ground_truth"] = compared
        if truth is not None and ends is not None:
            truth[movie.imdb_id] = (np.asarray(movie.boundary, dtype=bool), ends)
    if plot_dir is not None and n_shots >= 2:
        from sceneseg.evaluation.plots import plot_timeline

        gt = None if movie.boundary is None else np.asarray(movie.boundary, dtype=bool)
        plot_timeline(movie.imdb_id, gt, prob, threshold, Path(plot_dir) / f"timeline_{movie.imdb_id}.png",
                      shot_end_frame=ends, **({"fps": movie.fps} if movie.fps else {}))
    return record


def overall_scores(truth: dict[str, tuple[np.ndarray, np.ndarray]], prob: dict[str, np.ndarray],
                   threshold: float) -> dict:
    """AP, mAP, Miou, Precision, Recall and F1 of all movies with ground truth and frames together (Eluvio)."""
    from sceneseg.evaluation import metrics

    res = metrics.evaluate({k: g for k, (g, _) in truth.items()}, {k: prob[k] for k in truth},
                           {k: e for k, (_, e) in truth.items()}, threshold=threshold)
    return {"n_movies": len(truth), **{k: round(float(res[k]), 4) for k in ("AP", "mAP", "Miou", "Precision", "Recall", "F1")}}


def summary_line(rec: dict) -> str:
    """One stderr line per movie: shots, scenes, the comparison with its ground truth when present, inputs."""
    gt = rec.get("ground_truth")
    vs = "" if gt is None else (f" ({gt['n_scenes']} true; F1 {gt['f1']:.3f}" +
                                (f", Miou {gt['miou']:.3f}" if "miou" in gt else "") + ")")
    return (f"predict: {rec['imdb_id']}: {rec['n_shots']} shots -> {rec['n_scenes']} scenes{vs} "
            f"(inputs: {', '.join(rec['inputs'])})")


def predict_input(inputs: Path | list[Path], model_path: Path, threshold: float | None = None, device_name: str = "auto",
                  batch_size: int | None = None, plot_dir: Path | None = None, log=None, ignore_shipped: bool = False) -> dict:
    """Predict every movie of ``inputs`` (one or several paths) with the checkpoint at ``model_path``
    (one movie in memory at a time); a movie given twice is refused.

    ``threshold`` None uses the threshold stored in the checkpoint. Returns the output document; when
    movies carry ground truth with frames, its ``ground_truth`` scores them together.
    """
    from sceneseg.models.checkpoint import load_checkpoint
    from sceneseg.training.device import pick_device

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold: expected a number in [0, 1], found {threshold}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive number of sequences, found {batch_size}")
    sources = [src for path in ([inputs] if isinstance(inputs, (str, Path)) else inputs) for src in find_movies(path)]
    device = pick_device(device_name)
    ckpt = load_checkpoint(Path(model_path), device)
    if threshold is None:
        threshold, threshold_source = ckpt.threshold, f"checkpoint ({ckpt.threshold_metric} on validation)"
    else:
        threshold_source = "--threshold"
    movies, seen, truth = [], {}, {}
    for src in sources:
        rec = predict_one(ckpt, src, threshold, device, batch_size, plot_dir, seen, ignore_shipped, truth, log)
        movies.append(rec)
        if log is not None:
            log(summary_line(rec))
    doc = {
        "model": str(model_path),
        "model_kind": ckpt.kind.name,
        "modalities": list(ckpt.feature_dims),
        "model_features": ckpt.extractor,
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "device": str(device),
        "movies": movies,
    }
    scored = [k for k, (g, _) in truth.items() if len(g) > 0]
    if scored:
        doc["ground_truth"] = overall_scores({k: truth[k] for k in scored},
                                             {m["imdb_id"]: np.asarray(m["boundary_prob"]) for m in movies}, threshold)
        if log is not None:
            gt = doc["ground_truth"]
            log(f"predict: {gt['n_movies']} movies with ground truth: AP {gt['AP']:.3f}, mAP {gt['mAP']:.3f}, "
                f"Miou {gt['Miou']:.3f}, F1 {gt['F1']:.3f} (threshold {threshold:g})")
    return doc


# ----------------------------------------------------------------------------- output


def format_json(doc: dict) -> str:
    """Standard JSON laid out for reading: one line per scene, a movie's probabilities on one line."""
    def movie_text(m: dict) -> str:
        lines = []
        for k, v in m.items():
            if k == "scenes":
                body = ",\n".join(f"        {json.dumps(s)}" for s in v)
                lines.append(f'      "scenes": [\n{body}\n      ]')
            else:
                lines.append(f"      {json.dumps(k)}: {json.dumps(v)}")
        return "    {\n" + ",\n".join(lines) + "\n    }"

    head = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items() if k != "movies"]
    movies = ",\n".join(movie_text(m) for m in doc["movies"])
    return "{\n" + ",\n".join(head + [f'  "movies": [\n{movies}\n  ]']) + "\n}\n"


def probs_path(out: Path) -> Path:
    """Where ``--format csv`` writes the per-transition probabilities: FILE stem + ``_probs.csv``."""
    return out.with_name(f"{out.stem}_probs.csv")


def write_csv(doc: dict, out: Path, threshold: float) -> tuple[Path, Path]:
    """One row per scene in ``out``; one row per transition in :func:`probs_path` of ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SCENE_FIELDS)
        for m in doc["movies"]:
            for s in m["scenes"]:
                w.writerow([m["imdb_id"], s["index"], s["first_shot"], s["last_shot"],
                            *("" if s.get(k) is None else s[k]
                              for k in ("first_frame", "last_frame", "boundary_prob", "start_s", "end_s"))])
    probs = probs_path(out)
    with open(probs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PROB_FIELDS)
        for m in doc["movies"]:
            for t, p in enumerate(m["boundary_prob"]):
                w.writerow([m["imdb_id"], t, p, int(p >= threshold)])
    return out, probs


# ----------------------------------------------------------------------------- command line


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``predict`` on the ``sceneseg`` command line."""
    p = subparsers.add_parser(
        "predict",
        help="predict the scenes of MovieScenes-format movies with a trained checkpoint",
        description=(
            "Predict scene boundaries of each INPUT: one movie (a MovieScenes .pkl of any file name, loaded with an "
            "allow-list, never plain pickle; or a converted movie folder of .npy files) or a folder of them (e.g. "
            "data/movies). Ground truth is not needed; where movies carry it, their scores together are printed "
            "and added as 'ground_truth'. Output per movie: its scenes (first/last shot; "
            "first/last frame when shot_end_frame is present; the probability of the boundary that opened "
            "the scene) and the probability of every transition (transition t lies between shot t and t+1). "
            "A transition is a boundary when prob >= threshold."
        ),
    )
    p.add_argument("input", type=Path, nargs="+", metavar="INPUT",
                   help="a .pkl movie, a converted movie folder, or a folder of them; several may be given")
    p.add_argument("--model", type=Path, required=True, metavar="CHECKPOINT",
                   help="checkpoint written by the train stage (e.g. models/model.pt)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="write here instead of stdout (required with --format csv)")
    p.add_argument("--format", choices=("json", "csv"), default="json",
                   help="json: one document with scenes and probabilities per movie. csv: FILE gets one row "
                   f"per scene ({', '.join(SCENE_FIELDS)}); the probabilities go to a second file beside it, "
                   f"FILE stem + '_probs.csv' ({', '.join(PROB_FIELDS)}). Default: json")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="decision threshold in [0, 1] (default: the one stored in the checkpoint, chosen on validation)")
    p.add_argument("--plot", type=Path, default=None, metavar="DIR",
                   help="also draw DIR/timeline_<imdb_id>.png per movie (probabilities, threshold, scenes; "
                   "ground truth when present)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="auto (default) = CUDA, else Apple MPS, else CPU")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="sequences of transitions per inference batch (default: the checkpoint's; LGSS: its run's "
                        "lgss.eval_batch_size)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads for torch and numpy's BLAS; 0 = their defaults. Default 1: on a busy 2-core "
                   "machine two threads ran 3-15x slower than one (on an idle one, about 25%% faster)")
    p.add_argument("--ignore-shipped", action="store_true",
                   help="predict from the features alone, even where a movie carries the dataset's shipped prediction")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``sceneseg predict``; bad input raises ValueError (the ``sceneseg`` front end prints it, exit 1)."""
    if args.format == "csv" and args.out is None:
        raise ValueError("--format csv writes two files (scenes and probabilities): give --out FILE.csv")
    if args.threads < 0:
        raise ValueError(f"--threads: expected 0 (torch's default) or a positive number, found {args.threads}")
    with cpu_threads(args.threads):
        doc = predict_input(args.input, args.model, args.threshold, args.device, args.batch_size, args.plot,
                            log=lambda msg: print(msg, file=sys.stderr), ignore_shipped=args.ignore_shipped)
    if args.format == "csv":
        scenes, probs = write_csv(doc, args.out, doc["threshold"])
        print(f"predict: scenes in {scenes}, probabilities in {probs}", file=sys.stderr)
    elif args.out is None:
        sys.stdout.write(format_json(doc))
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(format_json(doc))
        print(f"predict: wrote {args.out}", file=sys.stderr)
    return 0
