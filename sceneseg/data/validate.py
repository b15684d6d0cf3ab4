"""Checks that a loaded movie dict, and a set of movies, are what MovieScenes promises.

Every problem is a ValueError that names the file and says what was expected and found.
Features pass through bit-identical (float32 in, the same float32 out).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Mapping
from importlib import resources

import numpy as np
import torch

from sceneseg.data.movies import (DATASET_FEATURES, END_FRAME_KEY, END_TIME_KEY, EXTRACTOR_KEY, FEATURE_DIMS, FPS_KEY,
                                  GT_KEY, MODALITIES, PRED_KEY, Movie)

log = logging.getLogger(__name__)

MANIFEST_FILE = "moviescenes_manifest.csv"
LABEL_KEYS: tuple[str, ...] = (GT_KEY, END_FRAME_KEY, PRED_KEY)
VIDEO_KEYS: tuple[str, ...] = (FPS_KEY, END_TIME_KEY, EXTRACTOR_KEY)  # movies made from a video file
REQUIRED_KEYS: tuple[str, ...] = ("imdb_id", *MODALITIES)
# A movie id becomes a folder name: keep it to a safe alphabet (no "/", "..", hidden names).
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _as_numpy(value: object, key: str, name: str) -> np.ndarray:
    """A torch tensor or numpy array as a CPU numpy array (no copy for a CPU tensor)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise ValueError(f"{name}: '{key}' expected a torch tensor or numpy array, found {type(value).__name__}")


def _check_features(d: Mapping, name: str, min_shots: int = 2) -> dict[str, np.ndarray]:
    features = {}
    n_shots = None
    for key in (m for m in MODALITIES if m in d):
        a = _as_numpy(d[key], key, name)
        dim = FEATURE_DIMS[key]
        if a.ndim != 2 or a.shape[1] != dim:
            raise ValueError(f"{name}: '{key}' expected shape [N, {dim}], found {list(a.shape)}")
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{name}: '{key}' expected float32 features, found dtype {a.dtype}")
        a = np.ascontiguousarray(a, dtype=np.float32)  # no copy (bit-identical) when already float32
        if n_shots is None:
            n_shots = a.shape[0]
        elif a.shape[0] != n_shots:
            raise ValueError(
                f"{name}: feature lengths differ: '{MODALITIES[0]}' has {n_shots} shots, '{key}' has {a.shape[0]}"
            )
        finite = np.isfinite(a).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(
                f"{name}: '{key}' expected finite values, found NaN/inf in {len(bad)} shots (first: shot {bad[0]})"
            )
        features[key] = a
    if n_shots is None:
        raise ValueError(f"{name}: expected at least one of the feature keys {list(MODALITIES)}, found none")
    if n_shots < min_shots:
        raise ValueError(f"{name}: expected at least {min_shots} shots{' (one transition)' if min_shots == 2 else ''}, "
                         f"found {n_shots}")
    return features


def _check_length(a: np.ndarray, key: str, expected: int, n_shots: int, name: str) -> None:
    if a.ndim != 1 or a.shape[0] != expected:
        what = "N" if expected == n_shots else "N-1"
        raise ValueError(
            f"{name}: '{key}' expected shape [{what}] = [{expected}] for {n_shots} shots, found {list(a.shape)}"
        )


def _check_ground_truth(value: object, n_shots: int, name: str) -> np.ndarray:
    a = _as_numpy(value, GT_KEY, name)
    _check_length(a, GT_KEY, n_shots - 1, n_shots, name)
    if a.dtype == bool:
        return a.copy()
    if np.issubdtype(a.dtype, np.integer) and np.isin(a, (0, 1)).all():
        return a.astype(bool)
    raise ValueError(f"{name}: '{GT_KEY}' expected bool (or 0/1 integers), found dtype {a.dtype}")


def _check_end_frames(value: object, n_shots: int, name: str) -> np.ndarray:
    a = _as_numpy(value, END_FRAME_KEY, name)
    _check_length(a, END_FRAME_KEY, n_shots, n_shots, name)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: '{END_FRAME_KEY}' expected integer frame numbers, found dtype {a.dtype}")
    a = a.astype(np.int64)
    if a[0] < 0:
        raise ValueError(f"{name}: '{END_FRAME_KEY}' expected non-negative frames, found {a[0]} at shot 0")
    steps = np.diff(a)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0])
        raise ValueError(
            f"{name}: '{END_FRAME_KEY}' expected strictly increasing frames, found {a[i]} then {a[i + 1]} "
            f"at shots {i}-{i + 1}"
        )
    return a


def _check_prediction(value: object, n_shots: int, name: str) -> np.ndarray:
    a = _as_numpy(value, PRED_KEY, name)
    _check_length(a, PRED_KEY, n_shots - 1, n_shots, name)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name}: '{PRED_KEY}' expected float probabilities, found dtype {a.dtype}")
    ok = np.isfinite(a) & (a >= 0) & (a <= 1)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"{name}: '{PRED_KEY}' expected probabilities in [0, 1], found {a[i]} at transition {i}")
    return a.astype(np.float32)


def _check_video_keys(d: Mapping, n_shots: int, name: str) -> dict:
    """fps, shot_end_time and extractor of a movie made from a video (each optional)."""
    out = {}
    if FPS_KEY in d:
        fps = d[FPS_KEY]
        if isinstance(fps, bool) or not isinstance(fps, (int, float, np.floating, np.integer)) or not 0 < fps < 1e4:
            raise ValueError(f"{name}: '{FPS_KEY}' expected a frame rate > 0, found {fps!r}")
        out["fps"] = float(fps)
    if END_TIME_KEY in d:
        a = _as_numpy(d[END_TIME_KEY], END_TIME_KEY, name)
        _check_length(a, END_TIME_KEY, n_shots, n_shots, name)
        a = a.astype(np.float64)
        if not np.isfinite(a).all() or a[0] <= 0 or (np.diff(a) <= 0).any():
            raise ValueError(f"{name}: '{END_TIME_KEY}' expected positive, strictly increasing seconds, found "
                             f"{a[:4].tolist()}...")
        out["shot_end_time"] = a
    if EXTRACTOR_KEY in d:
        ex = d[EXTRACTOR_KEY]
        if not isinstance(ex, str) or not ex or ex == DATASET_FEATURES:
            raise ValueError(f"{name}: '{EXTRACTOR_KEY}' expected the name of a feature extractor, found {ex!r}")
        out["extractor"] = ex
    return out


def movie_from_dict(d: dict, name: str, require_labels: bool = True, check_name: bool = True,
                    modalities: tuple[str, ...] = MODALITIES) -> Movie:
    """Validate one MovieScenes movie dict (as unpickled) and convert it to a numpy ``Movie``.

    ``name`` is the file it came from (``.../tt0052357.pkl``): its stem must equal ``imdb_id``
    (unless not ``check_name``: a user's own file may have any name, the id inside is the movie's).
    With ``require_labels`` (a data set) all four modalities, the ground truth and shot end frames
    must be present and a movie needs 2 shots; the shipped prediction is optional (a user's own
    annotated movies have none) but checked when present. Without (a user's own movie for
    ``sceneseg predict``), labels and modalities are optional but checked when present, and one
    shot is enough. ``modalities``: those a data set's movie must have (a movie made from a video has
    no ``cast``). A movie made from a video also carries fps, shot end times and its extractor's name.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"{name}: expected a dict of arrays, found {type(d).__name__}")
    keys = set(d)
    required = {"imdb_id", *modalities, GT_KEY, END_FRAME_KEY} if require_labels else {"imdb_id"}
    missing = sorted(required - keys, key=str)
    extra = sorted(keys - set(REQUIRED_KEYS) - set(LABEL_KEYS) - set(VIDEO_KEYS), key=str)
    if missing:
        raise ValueError(f"{name}: missing keys {missing}")
    if extra:
        raise ValueError(f"{name}: unexpected keys {extra}; expected only {[*REQUIRED_KEYS, *LABEL_KEYS, *VIDEO_KEYS]}")

    imdb_id = d["imdb_id"]
    if not isinstance(imdb_id, str) or not _SAFE_ID.fullmatch(imdb_id):
        raise ValueError(f"{name}: 'imdb_id' expected an id such as 'tt0052357', found {imdb_id!r}")
    stem = re.split(r"[\\/!]", name)[-1].removesuffix(".pkl")  # also "archive.zip!tt1.pkl"
    if check_name and stem != imdb_id:
        raise ValueError(f"{name}: 'imdb_id' is {imdb_id!r} but the file name says {stem!r}")

    features = _check_features(d, name, min_shots=2 if require_labels else 1)
    n = next(iter(features.values())).shape[0]
    return Movie(
        imdb_id=imdb_id,
        features=features,
        boundary=_check_ground_truth(d[GT_KEY], n, name) if GT_KEY in d else None,
        shot_end_frame=_check_end_frames(d[END_FRAME_KEY], n, name) if END_FRAME_KEY in d else None,
        baseline=_check_prediction(d[PRED_KEY], n, name) if PRED_KEY in d else None,
        **_check_video_keys(d, n, name),
    )


def load_manifest() -> dict[str, int]:
    """The published set: imdb id -> shot count (64 movies, 106,041 shots), from package data."""
    text = resources.files("sceneseg.data").joinpath(MANIFEST_FILE).read_text()
    return {row["imdb_id"]: int(row["n_shots"]) for row in csv.DictReader(text.splitlines())}


def manifest_differences(counts: Mapping[str, int], manifest: Mapping[str, int]) -> list[str]:
    """Human-readable differences between a set of movies (id -> shots) and the manifest; [] when equal."""
    diffs = []
    missing = sorted(set(manifest) - set(counts))
    extra = sorted(set(counts) - set(manifest))
    if missing:
        diffs.append(f"{len(missing)} of the {len(manifest)} published movies are missing: {_shorten(missing)}")
    if extra:
        diffs.append(f"{len(extra)} movies are not in the published set: {_shorten(extra)}")
    for imdb_id in sorted(set(counts) & set(manifest)):
        if counts[imdb_id] != manifest[imdb_id]:
            diffs.append(f"{imdb_id} has {counts[imdb_id]} shots, the published movie has {manifest[imdb_id]}")
    return diffs


def _shorten(ids: list[str], most: int = 8) -> str:
    return " ".join(ids[:most]) + (f" ... (+{len(ids) - most} more)" if len(ids) > most else "")


def check_set(counts: Mapping[str, int], where: str, strict: bool, manifest: Mapping[str, int] | None = None) -> list[str]:
    """Compare a converted set (id -> shots) from ``where`` with the published manifest.

    strict (``moviescenes``): any difference is a ValueError. Otherwise (``local``): the
    differences are logged as warnings and returned, to be recorded in index.json.
    """
    if not counts:
        raise ValueError(f"{where}: expected movie pickles tt*.pkl, found none")
    manifest = load_manifest() if manifest is None else manifest
    diffs = manifest_differences(counts, manifest)
    if diffs and strict:
        raise ValueError(f"{where}: not the published MovieScenes set: " + "; ".join(diffs))
    warnings = [f"{where}: not the published MovieScenes set (format checks passed): {d}" for d in diffs]
    for w in warnings:
        log.warning(w)
    return warnings
