"""Progress off a terminal is a few plain lines (no carriage returns); a terminal keeps the live bar."""

from __future__ import annotations

import io
import sys

from tqdm import tqdm

from sceneseg import progress as pg


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_bar_is_plain_lines_at_most_one_per_interval():
    log = io.StringIO()
    bar = pg.progress(total=1000, desc="train", unit="batch", stream=log, interval=3600)
    for i in range(1000):
        bar.update(1)
        bar.set_postfix(loss=f"{i:.1f}")
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("train: 0/1000 batch (0%)")  # the start, then only the end
    assert lines[-1].startswith("train: 1000/1000 batch (100%)") and "loss=999.0" in lines[-1]
    assert len(lines) <= 3


def test_a_bar_that_updates_often_writes_a_line_per_interval(monkeypatch):
    clock = iter(range(0, 10_000, 1))  # each write one second later
    monkeypatch.setattr(pg.time, "monotonic", lambda: float(next(clock)))
    log = io.StringIO()
    w = pg.LineWriter(log, interval=10)
    for i in range(100):
        w.write(f"\rstep {i}")
    w.write("\n")  # the bar ends
    lines = log.getvalue().splitlines()
    assert lines[0] == "step 0" and lines[-1] == "step 99"
    assert 9 <= len(lines) <= 12


def test_messages_pass_through_and_a_disabled_bar_writes_nothing():
    log = io.StringIO()
    w = pg.LineWriter(log, interval=3600)
    w.write("Downloading...\n")
    assert log.getvalue() == "Downloading...\n"
    quiet = io.StringIO()
    for _ in pg.progress(range(5), desc="x", stream=quiet, disable=True):
        pass
    assert quiet.getvalue() == ""


def test_a_terminal_keeps_the_live_bar():
    term = Terminal()
    bar = pg.progress(total=3, desc="train", unit="batch", stream=term)
    bar.update(3)
    bar.close()
    assert "\r" in term.getvalue() and "train" in term.getvalue()


def test_a_third_party_bar_on_stderr_becomes_lines(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with pg.plain_lines_on_stderr(interval=3600):
        bar = tqdm(total=100, unit="B")  # gdown's bar: file=sys.stderr at construction
        for _ in range(100):
            bar.update(1)
        bar.close()
    assert sys.stderr is log
    assert "\r" not in log.getvalue() and len(log.getvalue().splitlines()) <= 3
    assert "100/100" in log.getvalue().splitlines()[-1]


def test_close_all_ends_open_bars_first():
    log = io.StringIO()
    bar = pg.progress(total=10, desc="train", stream=log, interval=3600)
    bar.update(4)
    pg.close_all()
    assert log.getvalue().splitlines()[-1].startswith("train: 4/10")
    assert bar not in list(tqdm._instances)


def test_the_same_state_is_not_written_twice(monkeypatch):
    """A bar's last state, written by its last update and again when it closes, is one line."""
    clock = iter(range(0, 10_000, 100))  # every write past the interval
    monkeypatch.setattr(pg.time, "monotonic", lambda: float(next(clock)))
    log = io.StringIO()
    w = pg.LineWriter(log, interval=10)
    for n, rate in ((0, "?"), (1, "7.50"), (2, "7.46"), (2, "7.18")):  # closing refreshes with a new rate
        w.write(f"\rtrain: {n}/2 epoch [00:00<00:00, {rate}epoch/s, loss={n}]")
    w.write("\n")
    assert log.getvalue().splitlines() == [f"train: {n}/2 epoch [00:00<00:00, {r}epoch/s, loss={n}]"
                                           for n, r in ((0, "?"), (1, "7.50"), (2, "7.46"))]


def test_a_closing_bar_is_not_repeated_whatever_its_rate_format():
    from sceneseg.progress import _without_timing

    fast = ("train: 2/2 epoch (100%) [00:02<00:00, 7.46epoch/s, val=0.63]", "train: 2/2 epoch (100%) [00:02<00:00, 7.12epoch/s, val=0.63]")
    slow = ("train: 2/2 epoch (100%) [00:02<00:00,  1.12s/epoch, val=0.63]", "train: 2/2 epoch (100%) [00:02<00:00,  1.14s/epoch, val=0.63]")
    for a, b in (fast, slow):
        assert _without_timing(a) == _without_timing(b) == "train: 2/2 epoch (100%) [, val=0.63]"
    assert _without_timing(slow[0]) != _without_timing(slow[0].replace("val=0.63", "val=0.64"))
