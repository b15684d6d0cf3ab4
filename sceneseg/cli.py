"""The `sceneseg` command: `sceneseg score ...`, `sceneseg predict ...`, `sceneseg video ...`."""

from __future__ import annotations

import argparse
import sys

from sceneseg import __version__


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it; bad input ends with one clear line and exit code 1."""
    from sceneseg import predict  # sub-commands register their own options
    from sceneseg.evaluation import score
    from sceneseg.video import command as video

    ap = argparse.ArgumentParser(prog="sceneseg", description="Movie scene segmentation on MovieScenes: predict scenes with a trained "
                                 "model (simseq by default, or LGSS), score predictions like the Eluvio evaluation, "
                                 "or go from a video file to shots, features and scenes.")
    ap.add_argument("--version", action="version", version=f"sceneseg {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    score.add_parser(sub)
    predict.add_parser(sub)
    video.add_parser(sub)
    args = ap.parse_args(argv)
    try:
        return int(args.func(args) or 0)  # each sub-command's add_parser sets func
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
