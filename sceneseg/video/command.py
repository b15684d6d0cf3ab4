"""``sceneseg video MOVIE [--model CHECKPOINT] --out DIR``: scenes of a video file.

Detects the shots, computes their features and writes the movie in the pipeline's converted format
(``DIR/<id>/``, the folder ``sceneseg predict`` and the pipeline read); with ``--model`` it then
predicts the scenes with the code of ``sceneseg predict`` (``DIR/scenes.json``, ``DIR/scenes.csv``
and ``DIR/scenes_probs.csv``, ``DIR/timeline_<id>.png``). Everything is built in a temp folder inside
DIR and moved into place at the end: a failure leaves DIR as it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from sceneseg.config import VIDEO_DEFAULTS, VIDEO_DETECTORS, VIDEO_EXTRACTORS, check_video


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``video`` on the ``sceneseg`` command line."""
    d = VIDEO_DEFAULTS
    p = subparsers.add_parser(
        "video", help="shots, features and (with --model) scenes of a video file",
        description="Detect the shots of MOVIE (PySceneDetect on frames decoded once by PyAV), compute per-shot "
        "place, action and audio features (weight-free by default; --extractor resnet50 --weights FILE for a "
        "ResNet-50 place embedding) and write the movie to DIR/<id>/ in the pipeline's converted format. With "
        "--model, also predict its scenes (DIR/scenes.json, DIR/scenes.csv with start/end frames and seconds, "
        "DIR/scenes_probs.csv, DIR/timeline_<id>.png). The options mirror params.yaml's data.video keys. "
        "See docs/video.md.")
    p.add_argument("movie", type=Path, metavar="MOVIE", help="a video file (anything FFmpeg reads, with an audio track)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the movie and the scenes")
    p.add_argument("--model", type=Path, default=None, metavar="CHECKPOINT",
                   help="a trained checkpoint (models/model.pt); without it, stop after the features")
    p.add_argument("--detector", choices=VIDEO_DETECTORS, default=d.detector, help=f"shot detector (default {d.detector})")
    p.add_argument("--cut-threshold", type=float, default=d.threshold, metavar="T",
                   help=f"the detector's threshold (default {d.threshold:g} for content; each detector's own scale)")
    p.add_argument("--min-shot-frames", type=int, default=d.min_shot_frames, metavar="N",
                   help=f"shortest shot (default {d.min_shot_frames})")
    p.add_argument("--frame-width", type=int, default=d.frame_width, metavar="W",
                   help=f"frames are scaled to this width while decoding (default {d.frame_width})")
    p.add_argument("--sample-fps", type=float, default=d.sample_fps, metavar="F",
                   help=f"frames per second described for place (default {d.sample_fps:g})")
    p.add_argument("--extractor", choices=VIDEO_EXTRACTORS, default=d.extractor,
                   help=f"place features (default {d.extractor}); resnet50 needs --weights")
    p.add_argument("--weights", type=str, default=d.weights, metavar="FILE",
                   help="ResNet-50 weights (torchvision ImageNet state_dict or Places365 checkpoint); never downloaded")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="reuse / keep the features in this cache folder (keyed by the file's hash and the settings)")
    p.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="decision threshold on boundary probabilities (default: the checkpoint's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="CPU threads for the model (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``sceneseg video``; bad input raises ValueError (printed as one line by the front end, exit 1)."""
    v = replace(VIDEO_DEFAULTS, detector=args.detector, threshold=args.cut_threshold,
                min_shot_frames=args.min_shot_frames, frame_width=args.frame_width, sample_fps=args.sample_fps,
                extractor=args.extractor, weights=args.weights)
    check_video(v)
    if args.model is not None and not Path(args.model).is_file():  # before minutes of decoding
        raise ValueError(f"{args.model}: expected a sceneseg checkpoint file, found nothing")
    from sceneseg.data.movies import save_movie
    from sceneseg.video.movie import movie_id, to_movie, video_shots

    def say(msg: str) -> None:
        print(msg, file=sys.stderr)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".video.", dir=out))
    try:
        shots = video_shots(Path(args.movie), v, args.cache, log=say)
        movie = to_movie(shots, movie_id(args.movie), str(args.movie))
        save_movie(movie, tmp)
        written = [tmp / movie.imdb_id]
        if args.model is not None:
            written += _predict(tmp / movie.imdb_id, args, tmp, say)
        for f in written:  # all done: move into place
            final = out / f.name
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(f, final)
        say(f"video: movie {movie.imdb_id} ({len(shots.shot_end_frame)} shots) in {out / movie.imdb_id}"
            + (f"; scenes in {out / 'scenes.json'} and {out / 'scenes.csv'}" if args.model is not None else
               " (no --model: stopped after the features; `sceneseg predict` reads that folder)"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _predict(folder: Path, args: argparse.Namespace, tmp: Path, say) -> list[Path]:
    """Scenes of the converted movie ``folder`` with ``sceneseg predict``'s code; the files written in ``tmp``."""
    from sceneseg.predict import cpu_threads, format_json, predict_input, write_csv

    if args.threads < 0:
        raise ValueError(f"--threads: expected 0 (torch's default) or a positive number, found {args.threads}")
    with cpu_threads(args.threads):
        doc = predict_input(folder, args.model, args.threshold, args.device, plot_dir=tmp, log=say)
    for m in doc["movies"]:
        m["source"] = str(args.movie)  # not the temp folder it was read from
    (tmp / "scenes.json").write_text(format_json(doc))
    scenes, probs = write_csv(doc, tmp / "scenes.csv", doc["threshold"])
    pictures = sorted(tmp.glob("timeline_*.png"))
    return [tmp / "scenes.json", scenes, probs, *pictures]
