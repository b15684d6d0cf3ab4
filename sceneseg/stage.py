"""What every stage script shares: its arguments, params loading and clean failure."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from sceneseg.config import Params, load_params


def stage_args(description: str, paths: list[str]) -> argparse.Namespace:
    """Parse ``--params`` plus the ``--<path>`` options dvc.yaml passes to a stage."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--params", default="params.yaml", help="the pipeline parameters file")
    for p in paths:
        ap.add_argument(f"--{p}", required=True)
    return ap.parse_args()


def run(main: Callable[[argparse.Namespace, Params], None], args: argparse.Namespace) -> None:
    """Load and validate params (an unknown key stops here, before any work), then run ``main``.

    A ``ValueError`` (bad input) ends the process with one clear line and exit code 1.
    """
    try:
        params = load_params(args.params)
        main(args, params)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
