"""What every stage script shares: its arguments, params loading, safe writes and clean failure."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from sceneseg.config import Params, load_params
from sceneseg.progress import close_all

# errors of a write that no retry fixes: the user must free space or fix the path
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, carrying the one line that says what was saved."""


def stage_args(description: str, paths: list[str]) -> argparse.Namespace:
    """Parse ``--params`` plus the ``--<path>`` options dvc.yaml passes to a stage."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--params", default="params.yaml", help="the pipeline parameters file")
    for p in paths:
        ap.add_argument(f"--{p}", required=True)
    return ap.parse_args()


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Within the block, a failed write (full disk, no permission, read-only file system) becomes
    one ``ValueError`` naming ``path``, the output as dvc.yaml names it (not a temp file's name)."""
    try:
        yield
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from None
    except RuntimeError as e:  # torch.save to a path reports a failed write as its own RuntimeError
        if "PytorchStreamWriter" not in str(e) and "inline_container" not in str(e):
            raise
        raise ValueError(f"cannot write {path}: the write failed (is the disk full?)") from None


def write_json(path: Path | str, doc: object) -> None:
    """Write ``doc`` as indented JSON atomically (temp file, then rename): a reader finds the whole
    file or none; a failed write names ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def os_error_line(e: OSError) -> str:
    """One line for an ``OSError`` no stage turned into a message: the file and the cause."""
    where = e.filename if e.filename is not None else "a file"
    if e.errno in _WRITE_ERRNOS:
        return f"cannot write {where}: {e.strerror}"
    return f"{where}: {e.strerror or e}"


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a stage like Ctrl-C: the same clean stop and message


def run(main: Callable[[argparse.Namespace, Params], None], args: argparse.Namespace) -> None:
    """Load and validate params (an unknown key stops here, before any work), then run ``main``.

    A ``ValueError`` (bad input, an output that cannot be written) or another ``OSError`` ends the
    process with one clear line and exit code 1; Ctrl-C or SIGTERM with one line (what was saved)
    and exit code 130. No stack trace in any of these cases.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        params = load_params(args.params)
        main(args, params)
    except ValueError as e:
        _stop(f"error: {e}", 1)
    except OSError as e:
        _stop(f"error: {os_error_line(e)}", 1)
    except KeyboardInterrupt as e:
        _stop(str(e) or "interrupted", 130)


def _stop(line: str, code: int) -> None:
    close_all()  # progress bars end before the last line
    print(line, file=sys.stderr)
    sys.exit(code)
