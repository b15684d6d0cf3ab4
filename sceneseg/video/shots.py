"""Shot detection with PySceneDetect's detectors, fed the frames that :mod:`sceneseg.video.decode`
decodes once (no second pass over the file, no OpenCV capture).

A detector reports cuts as the index of the first frame of a new shot, possibly a few frames after
it saw that frame (the adaptive detector looks ahead); :func:`shot_ends` turns the cuts into the
last frame of every shot, the pipeline's ``shot_end_frame``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scenedetect import FrameTimecode
from scenedetect.detectors import AdaptiveDetector, ContentDetector, HashDetector, HistogramDetector, ThresholdDetector

# name -> (class, the keyword of its threshold); a threshold of None keeps the detector's own default
DETECTORS = {
    "content": (ContentDetector, "threshold"),  # HSV difference of consecutive frames (default 27)
    "adaptive": (AdaptiveDetector, "adaptive_threshold"),  # content score over its rolling mean (default 3)
    "hash": (HashDetector, "threshold"),  # perceptual hash distance (default 0.35)
    "histogram": (HistogramDetector, "threshold"),  # YUV histogram difference (default 0.2)
    "threshold": (ThresholdDetector, "threshold"),  # fades to and from black (default 12)
}


class ShotCutter:
    """Feed frames in order with :meth:`feed`; every call returns the cuts found so far (first frames of new shots)."""

    def __init__(self, detector: str, threshold: float | None, min_shot_frames: int, fps: float):
        if detector not in DETECTORS:
            raise ValueError(f"data.video.detector: expected one of {', '.join(DETECTORS)}, found {detector!r}")
        cls, key = DETECTORS[detector]
        kwargs = {"min_scene_len": int(min_shot_frames)}
        if threshold is not None:
            kwargs[key] = float(threshold)
        self.detector = cls(**kwargs)
        self.rate = Fraction(fps).limit_denominator(1001 * 1000)
        self.last = -1

    def _code(self, index: int) -> FrameTimecode:
        # frame numbers, not times: the detector's minimum shot length counts frames, and a cut maps back exactly
        return FrameTimecode(index, fps=self.rate)

    def feed(self, index: int, bgr: np.ndarray) -> list[int]:
        assert index == self.last + 1, "frames must come in order"
        self.last = index
        return [int(c.frame_num) for c in self.detector.process_frame(self._code(index), bgr)]

    def finish(self) -> list[int]:
        """Cuts the detector still holds once the last frame was fed."""
        return [int(c.frame_num) for c in self.detector.post_process(self._code(self.last))]


def shot_ends(cuts: list[int], n_frames: int) -> np.ndarray:
    """[N] int64: the last frame of each shot, from the first frames of the new shots (``cuts``)."""
    starts = sorted({c for c in cuts if 0 < c < n_frames})
    return np.asarray([s - 1 for s in starts] + [n_frames - 1], dtype=np.int64)
