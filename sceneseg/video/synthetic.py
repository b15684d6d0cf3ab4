"""Small synthetic videos with known shots and scenes, written with PyAV's own encoders (no ffmpeg binary):
for the tests and the speed bench.

A scene takes place in one "location" (a random colour texture larger than the frame); its shots
are camera set-ups on it (crops at other positions and zooms), each panning slowly; consecutive
shots switch set-up with a hard cut. The audio track plays one tone per scene (plus a little noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from sceneseg.video.annotations import HEADER, annotation_path


@dataclass(frozen=True)
class GeneratedVideo:
    path: Path
    shot_end_frame: np.ndarray  # [N] int64: last frame of each shot
    shot_scene: np.ndarray  # [N] int64: scene of each shot
    scene_start_s: np.ndarray  # [S] float64
    fps: int
    frame_time_s: np.ndarray  # [F] float64: when each frame is shown


def location(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """[h, w, 3] uint8 BGR texture: blurred colour noise around a location's own hue, with stripes."""
    base = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3) * 4  # structure a few px wide
    stripes = np.sin(2 * np.pi * (np.arange(w)[None, :] * np.cos(a := rng.uniform(0, np.pi))
                                  + np.arange(h)[:, None] * np.sin(a)) / rng.uniform(10, 30))
    def blob(sigma):  # smooth field of zero mean, unit std: objects and walls of the place
        f = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), sigma)
        return (f - f.mean()) / (f.std() + 1e-6)

    hue = (rng.uniform(0, 180) + 25 * blob(6)) % 180
    lum = np.clip(128 + 45 * (base - base.mean()) / (base.std() + 1e-6) + 40 * stripes, 0, 255)
    sat = np.clip(rng.uniform(120, 200) + 60 * blob(6), 0, 255)
    hsv = np.stack([hue, sat, lum], axis=-1).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def plan(rng: np.random.Generator, n_scenes: int, shots_per_scene: tuple[int, int], shot_frames: tuple[int, int]):
    """Per shot: (scene, set-up, frames); consecutive shots of a scene use different set-ups."""
    shots = []
    for s in range(n_scenes):
        n = int(rng.integers(shots_per_scene[0], shots_per_scene[1] + 1))
        setup = -1
        for _ in range(n):
            setup = (setup + int(rng.integers(1, 3))) % 3  # 3 set-ups per location, never the same twice in a row
            shots.append((s, setup, int(rng.integers(shot_frames[0], shot_frames[1] + 1))))
    return shots


def write_video(path: Path, seed: int = 0, n_scenes: int = 4, shots_per_scene: tuple[int, int] = (1, 3),
                shot_frames: tuple[int, int] = (12, 24), size: tuple[int, int] = (96, 64), fps: int = 12,
                codec: str = "mpeg4", audio: bool = True, annotate: bool = True, vfr: bool = False) -> GeneratedVideo:
    """Write a video (and, with ``annotate``, its ``<stem>.scenes.csv``) and return its true shots and scenes.

    ``vfr``: a variable frame rate, frames shown alternately for 1 and 1.5 frame periods (timestamps in ms)."""
    rng = np.random.default_rng(seed)
    w, h = size
    shots = plan(rng, n_scenes, shots_per_scene, shot_frames)
    locs = [location(rng, 2 * h, 2 * w) for _ in range(n_scenes)]
    # set-up k of a location: a crop origin and a zoom; the crops overlap little
    setups = [[(int(rng.integers(0, w // 3)) + (k % 2) * (w // 2), int(rng.integers(0, h // 3)) + (k // 2) * (h // 2),
                1.0 + 0.25 * k) for k in range(3)] for _ in range(n_scenes)]
    tones = rng.uniform(200, 2000, n_scenes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = av.open(str(path), "w")
    vs = out.add_stream(codec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    tick = Fraction(1, 1000) if vfr else Fraction(1, fps)  # the video's time base
    if vfr:
        vs.codec_context.time_base = tick
    if codec == "mpeg4":
        vs.bit_rate = 200 * w * h  # near-lossless: the tests compare exact cut frames
    elif codec == "libx264":
        vs.options = {"preset": "ultrafast", "crf": "23"}
    rate = 16_000
    aus = out.add_stream("aac", rate=rate) if audio else None
    frame_no, sample_no = 0, 0
    ends, scene_of, shown = [], [], []
    t_next = Fraction(0)
    for scene, setup, n in shots:
        x0, y0, zoom = setups[scene][setup]
        for k in range(n):
            cw, ch = int(w / zoom), int(h / zoom)
            x = min(x0 + k, 2 * w - cw)  # a slow pan, one pixel per frame
            crop = locs[scene][y0:y0 + ch, x:x + cw]
            img = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf.pts, vf.time_base = round(t_next / tick), tick
            shown.append(float(vf.pts * tick))
            t_next += Fraction(2 + frame_no % 2, 2 * fps) if vfr else Fraction(1, fps)
            for packet in vs.encode(vf):
                out.mux(packet)
            frame_no += 1
            if aus is not None:  # the audio of this frame: the scene's tone
                until = int(t_next * rate)
                t = np.arange(sample_no, until) / rate
                wave = 0.3 * np.sin(2 * np.pi * tones[scene] * t) + 0.01 * rng.standard_normal(len(t))
                af = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None, :], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = rate, sample_no, Fraction(1, rate)
                for packet in aus.encode(af):
                    out.mux(packet)
                sample_no = until
        ends.append(frame_no - 1)
        scene_of.append(scene)
    for s in (vs, aus):
        if s is not None:
            for packet in s.encode(None):
                out.mux(packet)
    out.close()
    ends_a = np.asarray(ends, dtype=np.int64)
    scene_a = np.asarray(scene_of, dtype=np.int64)
    first_shot = np.flatnonzero(np.diff(np.concatenate([[-1], scene_a])) != 0)  # first shot of each scene
    times = np.asarray(shown, dtype=np.float64)
    starts = np.where(first_shot > 0, times[np.minimum(ends_a[first_shot - 1] + 1, len(times) - 1)], 0.0)
    if annotate:
        annotation_path(path).write_text(HEADER + "\n" + "".join(f"{t:.4f}\n" for t in starts))
    return GeneratedVideo(path, ends_a, scene_a, starts.astype(np.float64), fps, times)
