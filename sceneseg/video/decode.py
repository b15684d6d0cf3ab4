"""Decode a video file once with PyAV: video frames scaled by FFmpeg's scaler as they leave the
decoder (BGR, a few hundred pixels wide), each with its own presentation time, and the audio track
resampled to mono 16 kHz, both from one pass over the file.

Frame ``i`` is the i-th frame the decoder presents; its time is its timestamp (``pts * time_base``,
so variable frame rates are handled), not ``i / fps``. Every problem with the file (missing, not a
video, no video or audio stream, damaged) is one ``ValueError`` that names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

AUDIO_RATE = 16_000  # Hz: the log-mel features need no more


@dataclass(frozen=True)
class StreamInfo:
    """What the container says about its streams, before decoding."""

    width: int  # of the decoded (scaled) frames
    height: int
    fps: float  # the stream's average frame rate (frame numbers and times come from the timestamps)
    declared_frames: int  # 0 when the container does not say
    duration_s: float  # 0 when the container does not say


@dataclass(frozen=True)
class Frame:
    index: int
    time_s: float
    bgr: np.ndarray  # [H, W, 3] uint8


@dataclass(frozen=True)
class Audio:
    start_s: float  # time of the first sample
    samples: np.ndarray  # [n] float32 mono at AUDIO_RATE


def _open(path: Path):
    if not path.is_file():
        raise ValueError(f"{path}: expected a video file, found nothing there")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise ValueError(f"{path}: not a video file FFmpeg can read ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or type(e).__name__


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) for frames ``target_width`` wide (never upscaled), aspect kept, both even."""
    w = min(target_width, width)
    h = max(2, round(height * w / width / 2) * 2)
    return max(2, w // 2 * 2), h


class VideoReader:
    """One pass over a video file: :meth:`read` yields :class:`Frame` and :class:`Audio` items in file order.

    ``need_audio``: a file without an audio stream is refused (the audio features need one).
    """

    def __init__(self, path: Path, frame_width: int, need_audio: bool = True):
        self.path = Path(path)
        self.container = _open(self.path)
        video = self.container.streams.video
        audio = self.container.streams.audio
        if not video:
            kinds = sorted({s.type for s in self.container.streams}) or ["none"]
            self.container.close()
            raise ValueError(f"{self.path}: expected a video stream, found only {', '.join(kinds)}")
        if need_audio and not audio:
            self.container.close()
            raise ValueError(f"{self.path}: expected an audio stream (the audio features need one), found none")
        self.video = video[0]
        self.audio = audio[0] if audio else None
        self.video.thread_type = "AUTO"  # frame and slice threads of the decoder
        ctx = self.video.codec_context
        if not ctx.width or not ctx.height:
            self.container.close()
            raise ValueError(f"{self.path}: the video stream has no frame size (damaged header?)")
        w, h = scaled_size(ctx.width, ctx.height, frame_width)
        rate = self.video.average_rate or self.video.guessed_rate
        duration = 0.0
        if self.video.duration is not None and self.video.time_base is not None:
            duration = float(self.video.duration * self.video.time_base)
        elif self.container.duration is not None:
            duration = self.container.duration / av.time_base
        self.info = StreamInfo(w, h, float(rate) if rate else 0.0, int(self.video.frames or 0), duration)
        if self.info.fps <= 0:
            self.container.close()
            raise ValueError(f"{self.path}: the video stream has no frame rate (damaged header?)")

    def read(self) -> Iterator[Frame | Audio]:
        """Frames (scaled to ``info.width`` x ``info.height``) and audio chunks, in file order."""
        w, h = self.info.width, self.info.height
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE) if self.audio else None
        streams = [s for s in (self.video, self.audio) if s is not None]
        index, audio_t = 0, None
        last = (None, "")
        try:
            for packet in self.container.demux(*streams):
                last = (packet.pts, packet.stream.type)
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        t = frame.time if frame.time is not None else index / self.info.fps
                        # area-averaged by FFmpeg's scaler to the small size, still YUV, then to BGR: 2.3 ms a
                        # 1080p frame against 4.4 ms for FFmpeg scaling straight to BGR (measured, one core)
                        yuv = frame.to_ndarray(width=w, height=h, format="yuv420p", interpolation="AREA")
                        yield Frame(index, float(t), cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420))
                        index += 1
                    else:
                        if audio_t is None:
                            audio_t = float(frame.time or 0.0)
                        for out in resampler.resample(frame):
                            yield Audio(audio_t, out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                            audio_t += out.samples / AUDIO_RATE
            if resampler is not None:
                for out in resampler.resample(None):
                    yield Audio(audio_t or 0.0, out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        except av.FFmpegError as e:
            raise ValueError(f"{self.path}: damaged video: decoding failed after {index} frames "
                             f"(at a {last[1]} packet, {_reason(e)})") from None
        finally:
            self.container.close()
        self.n_frames = index
        if index == 0:
            raise ValueError(f"{self.path}: expected video frames, decoded none (damaged file?)")
        declared = self.info.declared_frames
        if declared and index < declared - max(2, declared // 100):  # an edit list may hide a few frames
            raise ValueError(f"{self.path}: damaged video: the container declares {declared} frames, "
                             f"only {index} could be decoded")
