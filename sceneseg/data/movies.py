"""The converted movie format that every stage after `download` reads.

A movie is a folder ``<root>/<imdb_id>/`` of plain ``.npy`` arrays, loadable with
``allow_pickle=False`` and memory-mappable, so no later stage ever unpickles:

- ``place.npy`` float32 [N, 2048], ``cast.npy`` / ``action.npy`` / ``audio.npy`` float32 [N, 512]
- ``boundary.npy`` bool [N-1]: ground truth, entry i = a scene ends after shot i (optional)
- ``shot_end_frame.npy`` int64 [N]: last frame of each shot (optional)
- ``baseline.npy`` float32 [N-1]: the dataset's shipped prediction (optional)
- movies made from a video file (:mod:`sceneseg.video`) also hold ``fps.npy`` float64 [] (the stream's
  frame rate), ``shot_end_time.npy`` float64 [N] (when each shot ends, in seconds, from the frames'
  timestamps) and ``extractor.npy`` str [] (which extractor computed the features); a movie without
  ``extractor.npy`` has the features its data set came with. Modalities an extractor cannot give
  (``cast`` from a video) are absent.

``<root>/index.json`` lists the movies in order with their shot counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODALITIES: tuple[str, ...] = ("place", "cast", "action", "audio")
FEATURE_DIMS: dict[str, int] = {"place": 2048, "cast": 512, "action": 512, "audio": 512}
# Keys of the MovieScenes pickles.
GT_KEY = "scene_transition_boundary_ground_truth"
PRED_KEY = "scene_transition_boundary_prediction"
END_FRAME_KEY = "shot_end_frame"
FPS_KEY = "fps"
END_TIME_KEY = "shot_end_time"
EXTRACTOR_KEY = "extractor"
DATASET_FEATURES = "dataset"  # the extractor name of features that came with the data set (MovieScenes, synthetic)
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class Movie:
    """One movie: per-shot features and per-transition labels, as numpy arrays."""

    imdb_id: str
    features: dict[str, np.ndarray]  # modality -> [N, D] float32
    boundary: np.ndarray | None = None  # [N-1] bool
    shot_end_frame: np.ndarray | None = None  # [N] int64
    baseline: np.ndarray | None = None  # [N-1] float32
    fps: float | None = None  # frames per second of the video, when known
    shot_end_time: np.ndarray | None = None  # [N] float64 seconds, when known
    extractor: str = DATASET_FEATURES  # what computed the features
    extra: dict = field(default_factory=dict)

    @property
    def n_shots(self) -> int:
        return int(next(iter(self.features.values())).shape[0])


def present_modalities(configured: list[str], movies: list[Movie], key: str) -> tuple[list[str], str]:
    """The modalities of ``configured`` (a model's ``key``, e.g. simseq.modalities) that every movie has,
    in that order, and '' or a sentence saying which were left out; none present is a ValueError."""
    used = [m for m in configured if all(m in mv.features for mv in movies)]
    if not used:
        have = sorted({m for mv in movies for m in mv.features})
        raise ValueError(f"params key '{key}': none of {list(configured)} is present in every movie (found {have})")
    absent = [m for m in configured if m not in used]
    note = f"{key}: {absent} absent from the movies, using {used}" if absent else ""
    return used, note


@contextlib.contextmanager
def replacing_folder(final: Path) -> Iterator[Path]:
    """A temp folder next to ``final`` to write into: renamed to ``final`` (replacing it) when the block
    ends, removed if it fails, so a reader finds the whole folder or the previous one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a data folder is not
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_movie(movie: Movie, root: Path) -> Path:
    """Write ``movie`` under ``root/<imdb_id>/`` atomically (temp folder, then rename)."""
    final = Path(root) / movie.imdb_id
    with replacing_folder(final) as tmp:
        for name, arr in movie.features.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr, dtype=np.float32))
        if movie.boundary is not None:
            np.save(tmp / "boundary.npy", np.asarray(movie.boundary, dtype=bool))
        if movie.shot_end_frame is not None:
            np.save(tmp / "shot_end_frame.npy", np.asarray(movie.shot_end_frame, dtype=np.int64))
        if movie.baseline is not None:
            np.save(tmp / "baseline.npy", np.asarray(movie.baseline, dtype=np.float32))
        if movie.fps is not None:
            np.save(tmp / f"{FPS_KEY}.npy", np.float64(movie.fps))
        if movie.shot_end_time is not None:
            np.save(tmp / f"{END_TIME_KEY}.npy", np.asarray(movie.shot_end_time, dtype=np.float64))
        if movie.extractor != DATASET_FEATURES:
            np.save(tmp / f"{EXTRACTOR_KEY}.npy", np.str_(movie.extractor))
    return final


def load_movie(path: Path, mmap: bool = True) -> Movie:
    """Read one converted movie folder (never unpickles; memory-maps by default)."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: expected a converted movie folder, found nothing there")
    mode = "r" if mmap else None

    def read(name: str) -> np.ndarray | None:
        f = path / f"{name}.npy"
        return np.load(f, mmap_mode=mode, allow_pickle=False) if f.exists() else None

    features = {m: a for m in MODALITIES if (a := read(m)) is not None}
    if not features:
        raise ValueError(f"{path}: expected at least one of {', '.join(f'{m}.npy' for m in MODALITIES)}, found none")
    return Movie(
        imdb_id=path.name,
        features=features,
        boundary=read("boundary"),
        shot_end_frame=read("shot_end_frame"),
        baseline=read("baseline"),
        fps=None if (fps := read(FPS_KEY)) is None else float(fps),
        shot_end_time=read(END_TIME_KEY),
        extractor=DATASET_FEATURES if (ex := read(EXTRACTOR_KEY)) is None else str(ex),
    )


def write_index(root: Path, movies: list[Movie], info: dict | None = None) -> None:
    """Write ``index.json``: the movie order and shot counts, plus free-form source info."""
    doc = {
        "movies": [{"imdb_id": m.imdb_id, "n_shots": m.n_shots} for m in movies],
        **(info or {}),
    }
    tmp = Path(root) / f".{INDEX_FILE}.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, Path(root) / INDEX_FILE)


def read_index(root: Path) -> dict:
    """Read ``index.json`` of a converted data folder."""
    f = Path(root) / INDEX_FILE
    if not f.exists():
        raise ValueError(f"{f}: expected the index of converted movies (run the download stage), found nothing")
    try:
        doc = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: not valid JSON (rerun the download stage): {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("movies"), list):
        raise ValueError(f"{f}: expected a 'movies' list of converted movies, found {str(doc)[:80]!r}")
    return doc


def load_movies(root: Path, ids: list[str] | None = None, mmap: bool = True) -> list[Movie]:
    """Load the movies of a converted folder in index order (or the given ``ids``, in that order)."""
    root = Path(root)
    if ids is None:
        ids = [m["imdb_id"] for m in read_index(root)["movies"]]
    return [load_movie(root / i, mmap=mmap) for i in ids]


def missing_shipped(movies: list[Movie], what: str = "movies") -> str:
    """'' when every movie carries the shipped prediction; otherwise one phrase saying which lack it,
    e.g. 'no shipped prediction in 2 of the 5 movies (tt1 tt2)'. Models and references read the
    shipped input only when every movie of the set has it, so that all movies are read alike."""
    ids = sorted({m.imdb_id for m in movies})
    lacking = sorted({m.imdb_id for m in movies if m.baseline is None})
    if not lacking:
        return ""
    if len(lacking) == len(ids):
        return f"no shipped prediction in any of the {len(ids)} {what}"
    shown = " ".join(lacking[:8]) + (f" ... (+{len(lacking) - 8} more)" if len(lacking) > 8 else "")
    return f"no shipped prediction in {len(lacking)} of the {len(ids)} {what} ({shown})"
