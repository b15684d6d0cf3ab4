"""Speed of `sceneseg video` on a generated 1080p clip, and what it means for a 2-hour movie.

    .venv/bin/python bench/bench_video.py [--seconds 25] [--size 1920x1080] [--fps 24] [--resnet]

Writes a clip with sceneseg.video.synthetic (libx264, AAC; not timed), then times on it, each in its
own pass over the file: decoding alone (frames scaled to data.video.frame_width inside the decoder),
decoding + shot detection, and the whole of `sceneseg video` without a model (decoding, shots, the
weight-free features). Prints frames per second of each; then the compute of shot detection and of
the features alone, on the frames of the first pass kept in memory (in the real passes it runs while
the decoder's threads work, so a difference of wall times hides it): per frame, per shot and per
second of video; the SHA-256 rate of the file (the feature cache's key) and the projection for a 2-hour movie
of the same kind (every cost scaled by duration: decoding and the features are per frame or per
second; the clip has more shots per minute than a movie, which overstates the per-shot part).
``--resnet`` also times ResNet-50 place features (random weights: the speed is the same) per frame.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sceneseg.config import VIDEO_DEFAULTS
from sceneseg.video.decode import Frame, VideoReader
from sceneseg.video.movie import describe, detect_and_describe, file_digest
from sceneseg.video.shots import ShotCutter, shot_ends
from sceneseg.video.synthetic import write_video

MOVIE_S = 2 * 3600


def decode_only(path: Path, width: int) -> tuple[list, float, float]:
    """The decoded frames and audio (kept in memory), the seconds it took, the frame rate."""
    t0 = time.perf_counter()
    reader = VideoReader(path, width)
    items = list(reader.read())
    return items, time.perf_counter() - t0, reader.info.fps


def compute_only(items: list, fps: float) -> tuple[float, float, int]:
    """Seconds of shot detection alone and of shots + features, on frames decoded before (no decoder
    running beside them: the compute each costs), and the number of shots."""
    t0 = time.perf_counter()
    cutter = ShotCutter(VIDEO_DEFAULTS.detector, VIDEO_DEFAULTS.threshold, VIDEO_DEFAULTS.min_shot_frames, fps)
    for item in items:
        if isinstance(item, Frame):
            cutter.feed(item.index, item.bgr)
    cutter.finish()
    t_shots = time.perf_counter() - t0
    t0 = time.perf_counter()
    shots = describe(items, fps, VIDEO_DEFAULTS)
    return t_shots, time.perf_counter() - t0, len(shots.shot_end_frame)


def decode_and_shots(path: Path, width: int) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    reader = VideoReader(path, width)
    cutter = ShotCutter(VIDEO_DEFAULTS.detector, VIDEO_DEFAULTS.threshold, VIDEO_DEFAULTS.min_shot_frames, reader.info.fps)
    cuts = []
    for item in reader.read():
        if isinstance(item, Frame):
            cuts += cutter.feed(item.index, item.bgr)
    cuts += cutter.finish()
    return reader.n_frames, len(shot_ends(cuts, reader.n_frames)), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--resnet", action="store_true", help="also time ResNet-50 place features")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    v = VIDEO_DEFAULTS
    with tempfile.TemporaryDirectory() as d:
        n_scenes = max(2, round(args.seconds / 4))  # ~4 s scenes of 2-4 shots of 1-2 s
        t0 = time.perf_counter()
        g = write_video(Path(d) / "clip.mp4", seed=0, n_scenes=n_scenes, shots_per_scene=(2, 3),
                        shot_frames=(args.fps, 2 * args.fps), size=(w, h), fps=args.fps, codec="libx264",
                        annotate=False)
        clip_s = (g.shot_end_frame[-1] + 1) / args.fps
        size_mb = os.path.getsize(g.path) / 1e6
        print(f"clip: {w}x{h}, {args.fps} fps, {clip_s:.1f} s, {g.shot_end_frame[-1] + 1} frames, "
              f"{len(g.shot_end_frame)} shots, {size_mb:.1f} MB (libx264 ultrafast + AAC), written in "
              f"{time.perf_counter() - t0:.0f} s (not timed below)")
        t0 = time.perf_counter()
        file_digest(g.path)
        hash_mb_s = size_mb / (time.perf_counter() - t0)
        items, t_dec, fps = decode_only(g.path, v.frame_width)
        n = sum(isinstance(item, Frame) for item in items)
        c_shots, c_all, n_shots = compute_only(items, fps)
        n2, _, t_shots = decode_and_shots(g.path, v.frame_width)
        t0 = time.perf_counter()
        shots = detect_and_describe(g.path, v)
        t_all = time.perf_counter() - t0
        exact = shots.shot_end_frame.tolist() == g.shot_end_frame.tolist()
        print(f"decode (scaled to {v.frame_width} px wide in the decoder): {n / t_dec:.0f} frames/s ({t_dec:.1f} s)")
        print(f"decode + shots ({v.detector} detector): {n2 / t_shots:.0f} frames/s ({t_shots:.1f} s); "
              f"{n_shots} shots found, shot ends equal the generated ones: {exact}")
        print(f"sceneseg video, weight-free features: {n / t_all:.0f} frames/s ({t_all:.1f} s)")
        feat = c_all - c_shots
        print(f"compute alone, on frames decoded before: shots {1000 * c_shots / n:.2f} ms per frame; features "
              f"{feat:.2f} s = {1000 * feat / n_shots:.0f} ms per shot ({1000 * feat / n:.2f} ms per frame, "
              f"{feat / clip_s:.3f} s per second of video)")
        print(f"sha256 of the file (cache key): {hash_mb_s:.0f} MB/s")
        scale = MOVIE_S / clip_s
        print(f"projection for a 2-hour {w}x{h} movie at {args.fps} fps: decode + shots {t_shots * scale / 60:.1f} min, "
              f"with the weight-free features {t_all * scale / 60:.1f} min (goal: under 30 min)")
        if args.resnet:
            import torch

            from sceneseg.video.resnet import ResNet50

            weights = Path(d) / "resnet50.pt"
            torch.save(ResNet50().state_dict(), weights)
            t0 = time.perf_counter()
            res = detect_and_describe(g.path, v.__class__(**{**vars(v), "extractor": "resnet50", "weights": str(weights)}))
            t_res = time.perf_counter() - t0
            print(f"sceneseg video with ResNet-50 place features ({torch.get_num_threads()} torch threads): {t_res:.1f} s "
                  f"({len(res.shot_end_frame)} shots); projection for 2 hours at sample_fps {v.sample_fps:g}: "
                  f"{t_res * scale / 60:.1f} min")


if __name__ == "__main__":
    main()
