"""Progress that suits where it is shown: a live bar on a terminal, a few plain lines in a log.

Under ``dvc repro``, ``dvc exp run``, the queue or CI, standard error is a file or a pipe, and
tqdm's carriage-return updates pile up there as thousands of lines. Off a terminal, progress is
one plain line at most every ``interval`` seconds, plus one at the end.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO

from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm as live_tqdm

LOG_INTERVAL_S = 30.0  # off a terminal: at most one progress line per 30 s
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]"


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is shown live to a person (a tty), rather than written to a log."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _without_timing(line: str) -> str:
    """A bar's line without its times and rate (``[00:03<00:00, 7.46epoch/s, loss=...]`` -> ``[, loss=...]``):
    a bar that closes refreshes its last state with a new rate, which is not news."""
    # the rate is "7.46epoch/s", or "1.12s/epoch" when a step takes longer than a second
    return re.sub(r"\[[^\[\]]*?(?:/s\b|s/[A-Za-z]+)", "[", line, count=1)


class LineWriter:
    """A text stream for progress bars off a terminal: each carriage-return update replaces the
    pending line, and a pending line is written out at most once per ``interval`` seconds and when
    the bar ends (a plain newline). Text without a carriage return passes through at once."""

    def __init__(self, stream: TextIO, interval: float = LOG_INTERVAL_S) -> None:
        self.stream, self.interval = stream, interval
        self.pending = ""
        self.last = -float("inf")  # when the last line was written
        self.last_text = ""  # and what it said: the same state is not written twice

    def write(self, s: str) -> int:
        if "\r" not in s:  # a message, or the newline that ends a bar
            if s.strip() == "" and self.pending:
                self._emit()
            elif s.strip():
                self.stream.write(s)
            return len(s)
        text = s.rsplit("\r", 1)[-1].strip() or s.replace("\r", "").strip()
        if text:
            self.pending = text
            if time.monotonic() - self.last >= self.interval:
                self._emit()
        return len(s)

    def _emit(self) -> None:
        state = _without_timing(self.pending)
        if state != self.last_text:
            self.stream.write(self.pending + "\n")
            self.stream.flush()
            self.last_text = state
        self.pending, self.last = "", time.monotonic()

    def flush(self) -> None:
        self.stream.flush()

    def close_line(self) -> None:
        """Write out the line still pending (the bar's last state)."""
        if self.pending:
            self._emit()


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, initial: float = 0, interval: float = LOG_INTERVAL_S,
             stream: TextIO | None = None) -> plain_tqdm:
    """A tqdm bar on ``stream`` (standard error by default): the live bar on a terminal, otherwise
    one plain line at most every ``interval`` seconds and one at the end."""
    stream = stream if stream is not None else sys.stderr
    if is_terminal(stream):
        return live_tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial,
                         dynamic_ncols=True, file=stream)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return plain_tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial,
                   file=LineWriter(stream, interval), mininterval=interval, maxinterval=interval,
                   bar_format=LINE_FORMAT if total else LINE_FORMAT_NO_TOTAL)


def close_all() -> None:
    """Close every open bar now (their last lines come out before a final error or interruption
    line, not after it when the interpreter exits)."""
    for bar in list(plain_tqdm._instances):
        bar.close()


@contextlib.contextmanager
def plain_lines_on_stderr(interval: float = LOG_INTERVAL_S) -> Iterator[None]:
    """Within the block, a third-party progress bar on standard error (gdown's) is written as plain
    lines at most every ``interval`` seconds when standard error is not a terminal."""
    if is_terminal(sys.stderr):
        yield
        return
    real, writer = sys.stderr, LineWriter(sys.stderr, interval)
    sys.stderr = writer
    try:
        yield
    finally:
        writer.close_line()
        sys.stderr = real
