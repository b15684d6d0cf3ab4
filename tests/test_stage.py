"""The stage runner: one line and exit 1 for a full disk or an unwritable output (and no partial file
left), one line and exit 130 for Ctrl-C or SIGTERM; no error advises loading a file unsafely."""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import pickle
import runpy
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sceneseg import cli
from sceneseg.data.safeload import read_movie_pickle
from sceneseg.stage import Interrupted, run, write_json, writing

ROOT = Path(__file__).resolve().parents[1]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def stop_line(main, capsys, params: Path = ROOT / "params.yaml") -> tuple[int, str]:
    """Run ``main`` through the stage runner: its exit code and standard error."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stop:
            run(main, argparse.Namespace(params=str(params)))
    finally:
        signal.signal(signal.SIGTERM, handler)
    return stop.value.code, capsys.readouterr().err


def test_write_json_is_atomic_and_a_full_disk_names_the_output(tmp_path, monkeypatch):
    out = tmp_path / "metrics" / "eval.json"
    write_json(out, {"AP": 0.5})
    assert json.loads(out.read_text()) == {"AP": 0.5}
    real = Path.write_text

    def half_then_full(self, text, *a, **k):
        real(self, text[: len(text) // 2])
        raise ENOSPC

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(ValueError, match=rf"^cannot write {out}: No space left on device$"):
        write_json(out, {"AP": 0.75})
    assert json.loads(out.read_text()) == {"AP": 0.5}, "the earlier whole file stays, never a truncated one"
    assert sorted(p.name for p in out.parent.iterdir()) == ["eval.json"]


def test_an_unwritable_output_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root writes anywhere: take sysfs, which even root may not write
        folder = Path("/sys")
    try:
        code, err = stop_line(lambda args, params: write_json(folder / "m.json", {}), capsys)
    finally:
        (tmp_path / "ro").chmod(0o700)
    assert code == 1 and err.startswith(f"error: cannot write {folder / 'm.json'}: "), err
    assert err.rstrip().endswith(("Permission denied", "Operation not permitted", "Read-only file system"))
    assert not (folder / "m.json").exists()


@pytest.mark.parametrize("error,line", [
    (OSError(errno.EACCES, "Permission denied", "models/model.pt"), "error: cannot write models/model.pt: Permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "x.json"), "error: cannot write x.json: Read-only file system"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "data/x"), "error: data/x: No such file or directory"),
])
def test_an_os_error_anywhere_is_one_line_and_exit_1(capsys, error, line):
    def main(args, params):
        raise error

    assert stop_line(main, capsys) == (1, line + "\n")


def test_a_failed_torch_save_names_the_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"^cannot write models/model.pt: the write failed \(is the disk full\?\)$"):
        with writing("models/model.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    with pytest.raises(RuntimeError, match="a bug"):  # other runtime errors are not writes
        with writing("models/model.pt"):
            raise RuntimeError("a bug")


def test_featurize_on_a_full_disk_leaves_no_windows(tmp_path, monkeypatch, capsys):
    """The real featurize stage: np.savez fails half-way; one line names the file, nothing is left."""
    from sceneseg.data.movies import Movie, save_movie, write_index
    from sceneseg.data.split import save_split

    rng = np.random.default_rng(0)
    movies = [Movie(f"tt000000{i}", {m: rng.normal(size=(20, 4)).astype(np.float32)
                                     for m in ("place", "cast", "action", "audio")},
                    rng.random(19) < 0.2, np.arange(1, 21) * 24) for i in range(3)]
    for m in movies:
        save_movie(m, tmp_path / "movies")
    write_index(tmp_path / "movies", movies)
    save_split({"train": ["tt0000000", "tt0000001"], "val": [], "test": ["tt0000002"]}, tmp_path / "split.json")
    real = np.savez

    def full(file, *a, **k):
        real(file, *a, **k)
        with open(file, "r+b") as f:  # a truncated file, then the error
            f.truncate(10)
        raise ENOSPC

    monkeypatch.setattr(np, "savez", full)
    monkeypatch.syspath_prepend(str(ROOT / "stages"))  # as `python stages/featurize.py` has it (it imports _venv)
    monkeypatch.setattr(sys, "argv", ["featurize.py", "--params", str(ROOT / "params.yaml"), "--movies",
                                      str(tmp_path / "movies"), "--split", str(tmp_path / "split.json"),
                                      "--out", str(tmp_path / "windows")])
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(ROOT / "stages/featurize.py"), run_name="__main__")
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert stop.value.code == 1
    assert capsys.readouterr().err == f"error: cannot write {tmp_path / 'windows' / 'train.npz'}: No space left on device\n"
    assert not (tmp_path / "windows" / "train.npz").exists()


@pytest.mark.parametrize("error,line", [
    (KeyboardInterrupt(), "interrupted"),
    (Interrupted("interrupted during epoch 7; the state of epoch 6 is saved, run dvc repro to resume"),
     "interrupted during epoch 7; the state of epoch 6 is saved, run dvc repro to resume"),
])
def test_ctrl_c_is_one_line_and_exit_130(capsys, error, line):
    def main(args, params):
        raise error

    assert stop_line(main, capsys) == (130, line + "\n")


def test_sigterm_stops_like_ctrl_c(capsys):
    def main(args, params):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler interrupts this at once
        raise AssertionError("not interrupted")

    t0 = time.monotonic()
    assert stop_line(main, capsys) == (130, "interrupted\n")
    assert time.monotonic() - t0 < 5


# --- no error passes on advice to load an untrusted file unsafely (torch suggests weights_only=False) ---

class _RunsCode:
    def __reduce__(self):
        return os.system, ("true",)


def _storage_of(payload: bytes):
    class Evil:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (payload,)
    return Evil()


def _unsafe_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    buf = io.BytesIO()
    torch.save(_RunsCode(), buf, _use_new_zipfile_serialization=False)
    movie = {"imdb_id": "tt0000001", "place": _storage_of(buf.getvalue())}
    files["movie with code in a storage"] = tmp_path / "a" / "tt0000001.pkl"
    garbage = {"imdb_id": "tt0000002", "place": _storage_of(b"\x80\x02not torch")}
    files["movie with a damaged storage"] = tmp_path / "b" / "tt0000002.pkl"
    for (name, path), doc in zip(files.items(), (movie, garbage)):
        path.parent.mkdir()
        path.write_bytes(pickle.dumps(doc))
    ckpt = tmp_path / "code.pt"
    torch.save({"format": "sceneseg/2", "x": _RunsCode()}, ckpt)
    files["checkpoint with code"] = ckpt
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not a zip")
    files["damaged checkpoint"] = tmp_path / "junk.pt"
    return files


def test_no_error_advises_weights_only_false(tmp_path, capsys):
    files = _unsafe_files(tmp_path)
    for name, path in files.items():
        if path.suffix == ".pkl":  # what predict and the download stage read a user's movie with
            with pytest.raises(ValueError) as refused:
                read_movie_pickle(path, path.name, require_labels=False)
            err = f"error: {refused.value}"
        else:
            rc = cli.main(["predict", str(files["movie with code in a storage"].parent), "--model", str(path)])
            err = capsys.readouterr().err
            assert rc == 1, (name, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (name, err)
        assert "weights_only" not in err and "torch.load" not in err, (name, err)
