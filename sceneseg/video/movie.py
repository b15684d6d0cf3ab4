"""A video file -> a :class:`~sceneseg.data.movies.Movie`: one decoding pass feeds the shot detector and
the feature extractors; the result is validated like every other movie and cached by file hash.

Cache: ``<cache_dir>/video/<key>/`` holds the per-shot arrays of one video (``.npy``, read with
``allow_pickle=False``); the key hashes the file's bytes and everything that changes the features
(detector settings, frame width, sampling, extractor and its weights' digest). It is written to a
temp folder and renamed, so a stopped run leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sceneseg.config import VideoParams
from sceneseg.data.movies import END_FRAME_KEY, END_TIME_KEY, EXTRACTOR_KEY, FPS_KEY, GT_KEY, Movie, replacing_folder
from sceneseg.data.validate import movie_from_dict
from sceneseg.video import extractors
from sceneseg.video.annotations import align, annotation_path, read_scene_starts
from sceneseg.video.decode import Audio, Frame, VideoReader
from sceneseg.video.shots import ShotCutter, shot_ends

VIDEO_MODALITIES = ("place", "action", "audio")  # what a video gives; cast (faces) is absent
CACHE_VERSION = 2  # bump when the arrays of an entry change meaning
BUFFER_FRAMES = 64  # recent frames kept so that a cut reported late still gets its first frame described


@dataclass(frozen=True)
class Shots:
    """Per-shot arrays of one video (what the cache holds)."""

    features: dict[str, np.ndarray]  # modality -> [N, D] float32
    shot_end_frame: np.ndarray  # [N] int64, last frame of each shot
    shot_end_time: np.ndarray  # [N] float64 s, when each shot ends (start of the next, end of the video)
    fps: float
    extractor: str
    n_frames: int
    duration_s: float

    def cut_times(self) -> np.ndarray:
        """[N-1]: start time of shots 1..N-1 (the cut after shot i)."""
        return self.shot_end_time[:-1]


def movie_id(path: Path) -> str:
    """A safe movie id from the video's file name: other characters become '_', at most 64."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).stem)[:64]
    return stem if stem[:1].isalnum() else f"v{stem}"[:64]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (keys the feature cache; names ResNet weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Place:
    """``place`` descriptors of the sampled frames and of each shot's first frame (weight-free or ResNet-50)."""

    def __init__(self, v: VideoParams, fps: float):
        self.stride = max(1, round(fps / v.sample_fps))
        self.recent: deque = deque(maxlen=BUFFER_FRAMES)  # (index, bgr)
        self.done: dict[int, np.ndarray] = {}
        self.net = None
        if v.extractor == "resnet50":
            from sceneseg.video.resnet import load_resnet50

            self.net = load_resnet50(Path(v.weights).expanduser())

    def describe(self, bgr: np.ndarray) -> np.ndarray:
        if self.net is None:
            return extractors.place_descriptor(bgr)
        from sceneseg.video.resnet import embed

        return embed(self.net, [bgr])[0]

    def frame(self, index: int, bgr: np.ndarray) -> None:
        self.recent.append((index, bgr))
        if index % self.stride == 0:
            self.done[index] = self.describe(bgr)

    def cuts(self, cuts: list[int]) -> None:
        """Describe the first frames of new shots (reported now, perhaps a few frames late)."""
        for i, img in self.recent:
            if i in cuts and i not in self.done:
                self.done[i] = self.describe(img)

    def per_shot(self, ends: np.ndarray) -> np.ndarray:
        """[N, D]: mean of the descriptors in each shot (the nearest described frame when it has none)."""
        idx = np.asarray(sorted(self.done))
        desc = np.stack([self.done[i] for i in idx.tolist()])
        starts = np.concatenate([[0], ends[:-1] + 1])
        out = np.empty((len(ends), desc.shape[1]), dtype=np.float32)
        for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
            lo, hi = np.searchsorted(idx, a), np.searchsorted(idx, b, side="right")
            out[k] = desc[lo:hi].mean(0) if hi > lo else desc[np.argmin(np.abs(idx - (a + b) / 2))]
        return out


def extractor_name(v: VideoParams) -> str:
    """What computed the features, as recorded with the movie and in checkpoints."""
    if v.extractor == "resnet50":
        weights = Path(v.weights).expanduser()
        if not weights.is_file():  # the loader says it in full
            from sceneseg.video.resnet import load_resnet50

            load_resnet50(weights)
        return f"resnet50-{file_digest(weights)[:12]}+{extractors.WEIGHT_FREE}"
    return extractors.WEIGHT_FREE


def detect_and_describe(path: Path, v: VideoParams, log: Callable[[str], None] | None = None) -> Shots:
    """Decode ``path`` once: shots (PySceneDetect) and per-shot place, action and audio features."""
    t0 = time.perf_counter()
    reader = VideoReader(path, v.frame_width, need_audio=True)
    shots = describe(reader.read(), reader.info.fps, v)
    if log is not None:
        dt = time.perf_counter() - t0
        n = shots.n_frames
        log(f"video: {path}: {n} frames ({reader.info.width}x{reader.info.height} decoded, {shots.fps:.3f} fps, "
            f"{shots.duration_s:.1f} s) -> {len(shots.shot_end_frame)} shots with PySceneDetect's {v.detector} detector "
            f"(threshold {'default' if v.threshold is None else v.threshold}); features: {shots.extractor} "
            f"({', '.join(VIDEO_MODALITIES)}; no cast); {dt:.1f} s, {n / dt:.0f} frames/s")
    return shots


def describe(items: Iterable[Frame | Audio], fps: float, v: VideoParams) -> Shots:
    """Shots and their features from decoded frames and audio in file order (a reader's, or stored ones)."""
    cutter = ShotCutter(v.detector, v.threshold, v.min_shot_frames, fps)
    place = _Place(v, fps)
    sound = extractors.LogMel()
    cuts: list[int] = []
    times: list[float] = []
    cells: list[np.ndarray] = []
    prev = None
    for item in items:
        if isinstance(item, Audio):
            sound.add(item.start_s, item.samples)
            continue
        times.append(item.time_s)
        prev, diff = extractors.motion_cells(prev, item.bgr)
        cells.append(diff.astype(np.float16))  # [256] per frame: 88 MB for a 2-hour movie
        place.frame(item.index, item.bgr)
        new = cutter.feed(item.index, item.bgr)
        if new:
            place.cuts(new)
            cuts += new
    late = cutter.finish()
    place.cuts(late)
    cuts += late
    n = len(times)
    ends = shot_ends(cuts, n)
    t = np.asarray(times, dtype=np.float64)
    frame_s = float(np.median(np.diff(t))) if n > 1 else 1.0 / fps
    starts_s = np.concatenate([[t[0]], t[ends[:-1] + 1]])
    ends_s = np.append(t[ends[:-1] + 1], t[-1] + frame_s)  # a shot ends when the next starts
    features = {"place": place.per_shot(ends),
                "action": extractors.action_features(np.stack(cells), ends),
                "audio": sound.per_shot(starts_s, ends_s)}
    return Shots(features, ends, ends_s, fps, extractor_name(v), n, float(ends_s[-1]))


def cache_key(digest: str, v: VideoParams, extractor: str) -> str:
    """Cache entry name: the file's content and every setting that changes its per-shot arrays."""
    settings = {k: val for k, val in asdict(v).items() if k not in ("tolerance_s", "weights")}  # labels only / digest
    doc = json.dumps({"file": digest, "settings": settings, "extractor": extractor, "version": CACHE_VERSION},
                     sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


def _save_shots(shots: Shots, folder: Path) -> None:
    with replacing_folder(folder) as tmp:
        for m, a in shots.features.items():
            np.save(tmp / f"{m}.npy", a)
        np.save(tmp / "shot_end_frame.npy", shots.shot_end_frame)
        np.save(tmp / "shot_end_time.npy", shots.shot_end_time)
        meta = {"fps": shots.fps, "extractor": shots.extractor, "n_frames": shots.n_frames, "duration_s": shots.duration_s}
        (tmp / "meta.json").write_text(json.dumps(meta) + "\n")


def _load_shots(folder: Path) -> Shots | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {m: np.load(folder / f"{m}.npy", allow_pickle=False) for m in VIDEO_MODALITIES}
        return Shots(arrays, np.load(folder / "shot_end_frame.npy", allow_pickle=False),
                     np.load(folder / "shot_end_time.npy", allow_pickle=False), float(meta["fps"]),
                     str(meta["extractor"]), int(meta["n_frames"]), float(meta["duration_s"]))
    except (OSError, ValueError, KeyError):  # missing or damaged entry: compute again
        return None


def video_shots(path: Path, v: VideoParams, cache_dir: Path | None, log: Callable[[str], None] | None = None) -> Shots:
    """:func:`detect_and_describe`, read from / written to the cache under ``cache_dir`` when given."""
    if cache_dir is None:
        return detect_and_describe(path, v, log)
    if not Path(path).is_file():
        raise ValueError(f"{path}: expected a video file, found nothing there")
    folder = Path(cache_dir) / "video" / cache_key(file_digest(path), v, extractor_name(v))
    cached = _load_shots(folder)
    if cached is not None:
        if log is not None:
            log(f"video: {path}: {len(cached.shot_end_frame)} shots and features ({cached.extractor}) from the "
                f"cache {folder}")
        return cached
    shots = detect_and_describe(path, v, log)
    _save_shots(shots, folder)
    return shots


def to_movie(shots: Shots, imdb_id: str, name: str, boundary: np.ndarray | None = None) -> Movie:
    """The movie of ``shots``, checked by the same validation as every data set's movie."""
    d = {"imdb_id": imdb_id, **shots.features, END_FRAME_KEY: shots.shot_end_frame, FPS_KEY: shots.fps,
         END_TIME_KEY: shots.shot_end_time, EXTRACTOR_KEY: shots.extractor}
    if boundary is not None:
        d[GT_KEY] = boundary
    return movie_from_dict(d, name, require_labels=boundary is not None, check_name=False, modalities=VIDEO_MODALITIES)


def annotated_movie(path: Path, v: VideoParams, cache_dir: Path | None,
                    log: Callable[[str], None] | None = None) -> tuple[Movie, list[str]]:
    """A labelled movie from a video and its ``<stem>.scenes.csv``; returns it and the alignment problems."""
    ann = annotation_path(path)
    if not ann.is_file():  # before decoding: a missing file is found at once
        read_scene_starts(ann, 0.0)
    shots = video_shots(path, v, cache_dir, log)
    starts = read_scene_starts(ann, shots.duration_s)
    boundary, problems = align(starts, shots.cut_times(), v.tolerance_s)
    problems = [f"{ann}: {p}" for p in problems]
    return to_movie(shots, movie_id(path), str(path), boundary), problems
