"""Scene annotations of a video: a CSV of scene start times, aligned to the detected cuts.

Format (``<video stem>.scenes.csv`` beside the video): a header line ``start_s`` then one start time
per scene in seconds from the start of the video, increasing; the first scene's 0 may be omitted;
blank lines and lines starting with ``#`` are skipped. For example::

    start_s
    0
    12.48
    47.0

A start is matched to the nearest detected cut (the start time of a shot); within ``tolerance_s`` it
makes that cut a scene boundary, otherwise it is reported and not used.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

HEADER = "start_s"
SUFFIX = ".scenes.csv"


def annotation_path(video: Path) -> Path:
    """Where the scene starts of ``video`` are read from: ``<stem>.scenes.csv`` beside it."""
    return Path(video).with_name(Path(video).stem + SUFFIX)


def read_scene_starts(path: Path, duration_s: float) -> np.ndarray:
    """[K] float64 increasing start times (s) from ``path``; an error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: expected the scene start times of the video beside it (a CSV with header "
                         f"{HEADER!r}), found nothing")
    lines = [(i + 1, line.strip()) for i, line in enumerate(path.read_text().splitlines())]
    lines = [(n, s) for n, s in lines if s and not s.startswith("#")]
    if not lines or lines[0][1].lower() != HEADER:
        found = lines[0][1] if lines else "an empty file"
        raise ValueError(f"{path}: expected the header line {HEADER!r}, found {found!r}")
    starts = []
    for n, s in lines[1:]:
        try:
            t = float(s.split(",")[0])
        except ValueError:
            raise ValueError(f"{path} line {n}: expected a start time in seconds, found {s!r}") from None
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"{path} line {n}: expected a start time >= 0 s, found {s!r}")
        if starts and t <= starts[-1]:
            raise ValueError(f"{path} line {n}: expected increasing start times, found {t:g} after {starts[-1]:g}")
        if t >= duration_s:
            raise ValueError(f"{path} line {n}: scene start {t:g} s is past the end of the video ({duration_s:.3f} s)")
        starts.append(t)
    return np.asarray(starts, dtype=np.float64)


def align(starts_s: np.ndarray, cut_times_s: np.ndarray, tolerance_s: float) -> tuple[np.ndarray, list[str]]:
    """Scene boundaries from scene starts: ``cut_times_s`` [N-1] is the start time of shots 1..N-1
    (transition i is the cut before shot i+1). Returns (bool [N-1], one message per start not used).

    A start within ``tolerance_s`` of the video's first frame opens the first scene (no boundary).
    """
    boundary = np.zeros(len(cut_times_s), dtype=bool)
    problems = []
    for t in np.asarray(starts_s, dtype=np.float64).tolist():
        if t <= tolerance_s:
            continue  # the first scene
        if len(cut_times_s) == 0:
            problems.append(f"scene start {t:.3f} s: no cut detected in the video")
            continue
        j = int(np.argmin(np.abs(cut_times_s - t)))
        gap = float(cut_times_s[j] - t)
        if abs(gap) > tolerance_s:
            problems.append(f"scene start {t:.3f} s: nearest cut at {cut_times_s[j]:.3f} s ({gap:+.3f} s), "
                            f"beyond the tolerance of {tolerance_s:g} s: not used")
        elif boundary[j]:
            problems.append(f"scene start {t:.3f} s: its nearest cut ({cut_times_s[j]:.3f} s) already starts a "
                            f"scene: not used")
        else:
            boundary[j] = True
    return boundary, problems
