"""Resume: a train stage interrupted (SIGINT, SIGTERM, SIGKILL) and rerun ends bit for bit where an
uninterrupted run ends; the store's key, fresh starts, damaged states and failed saves."""

from __future__ import annotations

import errno
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_pipeline import tiny_params

from sceneseg import resume
from sceneseg.resume import ResumeStore

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
DATA_ARGS = ["--movies", "data/movies", "--split", "data/split.json", "--windows", "data/windows"]


def run_stage(name: str, cwd: Path, *args: str) -> None:
    """Run a stage script in this process (no interpreter start-up), as dvc would run it in ``cwd``."""
    argv, handler, here = sys.argv, signal.getsignal(signal.SIGTERM), os.getcwd()
    sys.argv = [f"stages/{name}.py", "--params", "params.yaml", *args]
    sys.path.insert(0, str(ROOT / "stages"))  # as `python stages/x.py` has it (the stages import _venv)
    os.chdir(cwd)
    try:
        runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name="__main__")
    finally:
        sys.path.remove(str(ROOT / "stages"))
        sys.argv = argv
        os.chdir(here)
        signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Tiny data: the download, split and featurize stages on a small synthetic set."""
    d = tmp_path_factory.mktemp("resume")
    p = tiny_params()
    p["data"]["synthetic"].update(n_movies=5, min_shots=60, max_shots=90)
    p["train"].update(epochs=EPOCHS, batch_size=2, num_threads=1)
    p["simseq"]["patience"] = 0
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    run_stage("download", d, "--out", "data/movies")
    run_stage("split", d, "--movies", "data/movies", "--out", "data/split.json")
    run_stage("featurize", d, "--movies", "data/movies", "--split", "data/split.json", "--out", "data/windows")
    return d


def train_cmd(model: str, out: str) -> list[str]:
    return [sys.executable, str(ROOT / "stages/train.py"), "--params", f"params-{model}.yaml", *DATA_ARGS,
            "--model", f"{out}/model.pt", "--metrics", f"{out}/train.json", "--details", f"{out}/train_details.json",
            "--plots", f"{out}/plots"]


def saved_epoch(d: Path) -> int:
    states = list((d / ".cache/resume").glob("*/state.pt"))
    return int(torch.load(states[0], weights_only=True)["epoch"]) if states else 0


def state_mtime(d: Path) -> int | None:
    try:
        return next((d / ".cache/resume").glob("*/state.pt")).stat().st_mtime_ns
    except (StopIteration, FileNotFoundError):
        return None


def interrupt_after(d: Path, model: str, epoch: int, sig: int) -> tuple[subprocess.CompletedProcess, float]:
    """Run the train stage until the state of ``epoch`` (or a later one) is saved, then send ``sig``:
    the process is then inside a later epoch. Returns the process and seconds from signal to exit."""
    proc = subprocess.Popen(train_cmd(model, f"run-{model}"), cwd=d, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen, deadline = None, time.monotonic() + 300
    while True:
        mtime = state_mtime(d)
        if mtime != seen:  # load the state only when it changed
            seen = mtime
            if saved_epoch(d) >= epoch:
                break
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.01)
    proc.send_signal(sig)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - t0


def outputs(d: Path, out: str) -> dict:
    ckpt = torch.load(d / out / "model.pt", weights_only=True)
    tsv = {p.name: p.read_bytes() for p in sorted((d / out / "plots").rglob("*.tsv"))}
    return {"metrics": json.loads((d / out / "train_details.json").read_text()), "tsv": tsv,
            "weights": ckpt["state_dict"], "threshold": ckpt["threshold"]}


@pytest.mark.parametrize("model,first", [("simseq", signal.SIGINT), ("lgss", signal.SIGTERM)])
def test_interrupted_runs_resume_to_the_uninterrupted_result(data_dir, model, first):
    """Ctrl-C (or SIGTERM) after epoch 1, then SIGKILL after epoch 3, each resumed: the same
    checkpoint weights, metrics and loss curves, bit for bit, as an uninterrupted run."""
    d = data_dir
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["train"]["model"] = model
    (d / f"params-{model}.yaml").write_text(yaml.safe_dump(p))
    subprocess.run(train_cmd(model, f"ref-{model}"), cwd=d, env=ENV, check=True, capture_output=True)
    assert not list((d / ".cache/resume").glob("*/state.pt")), "a finished run leaves no state"
    resumed_from = 0
    for after, sig in ((1, first), (3, signal.SIGKILL)):
        r, seconds = interrupt_after(d, model, after, sig)
        k = saved_epoch(d)
        assert after <= k < EPOCHS
        if resumed_from:
            assert f"train: resuming after epoch {resumed_from} of {EPOCHS} (state in " in r.stdout
        if sig == signal.SIGKILL:
            assert r.returncode == -signal.SIGKILL
        else:  # a clean stop: one line, non-zero exit, no stack trace, within seconds
            assert r.returncode == 130, r.stderr
            assert r.stderr.strip().splitlines()[-1] == (
                f"interrupted during epoch {k + 1}; the state of epoch {k} is saved, run dvc repro to resume")
            assert "Traceback" not in r.stderr
            assert seconds < 15
        resumed_from = k
    r = subprocess.run(train_cmd(model, f"run-{model}"), cwd=d, env=ENV, capture_output=True, text=True, check=True)
    assert f"train: resuming after epoch {resumed_from} of {EPOCHS}" in r.stdout
    assert not list((d / ".cache/resume").glob("*/state.pt")), "the finished run removed its state"
    ref, run = outputs(d, f"ref-{model}"), outputs(d, f"run-{model}")
    assert run["metrics"] == ref["metrics"] and run["threshold"] == ref["threshold"]
    assert run["tsv"] == ref["tsv"] and len(ref["tsv"]) == 2
    assert run["weights"].keys() == ref["weights"].keys()
    for k, v in ref["weights"].items():
        assert torch.equal(run["weights"][k], v), k


# --- the store on its own -------------------------------------------------------------------------

PARTS = {"train params": "a", "simseq params": "b", "data": "c", "code": "d", "device": "cpu"}


def _objects() -> tuple[torch.nn.Linear, torch.optim.Optimizer, np.random.Generator]:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return net, opt, np.random.default_rng(5)


def test_a_saved_state_restores_weights_optimiser_and_every_generator(tmp_path, capsys):
    store = ResumeStore(tmp_path, PARTS)
    net, opt, rng = _objects()
    rng.random(3)
    store.save(2, {"net": net, "opt": opt}, {"rng": rng}, {"train_loss": [1.0, 0.5]})
    expected = (rng.random(4), np.random.random(2), torch.rand(2), __import__("random").random())
    assert torch.load(store.state_file, weights_only=True)["epoch"] == 2  # plain tensors and builtins

    net2, opt2, rng2 = torch.nn.Linear(3, 2), None, np.random.default_rng(99)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.1)
    done = ResumeStore(tmp_path, PARTS).restore({"net": net2, "opt": opt2}, {"rng": rng2}, epochs=10)
    assert (done.epoch, done.history, done.last) == (2, {"train_loss": [1.0, 0.5]}, False)
    assert torch.equal(net2.weight, net.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    again = (rng2.random(4), np.random.random(2), torch.rand(2), __import__("random").random())
    assert np.array_equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])
    assert torch.equal(again[2], expected[2]) and again[3] == expected[3]
    assert f"train: resuming after epoch 2 of 10 (state in {store.state_file})" in capsys.readouterr().out
    store.clear()
    assert not store.dir.exists()


def test_a_state_of_another_run_is_ignored_and_the_line_says_what_changed(tmp_path, capsys):
    net, opt, rng = _objects()
    ResumeStore(tmp_path, PARTS).save(3, {"net": net}, {}, {})
    other = ResumeStore(tmp_path, {**PARTS, "train params": "changed", "data": "new"})
    assert other.restore({"net": net}, {}, epochs=5) is None
    out = capsys.readouterr().out
    assert "train: starting afresh" in out and "(train params, data changed)" in out
    assert other.interrupted_message() == (
        "interrupted during epoch 1; no epoch had finished, so the next run starts afresh")


def test_a_damaged_state_starts_afresh(tmp_path, capsys):
    store = ResumeStore(tmp_path, PARTS)
    store.dir.mkdir(parents=True)
    store.state_file.write_bytes(b"not a state")
    assert store.restore({}, {}, epochs=3) is None
    assert "cannot be used" in capsys.readouterr().out


def test_the_key_changes_with_params_data_and_device(tmp_path):
    (tmp_path / "movies").mkdir()
    (tmp_path / "windows").mkdir()
    (tmp_path / "movies/a.npy").write_bytes(b"1")
    (tmp_path / "split.json").write_text("{}")
    data = resume.data_digest(tmp_path / "movies", tmp_path / "split.json", tmp_path / "windows")
    base = resume.key_parts({"train": {"lr": 0.1}}, data, resume.code_digest(), "cpu")
    assert base == resume.key_parts({"train": {"lr": 0.1}}, data, resume.code_digest(), "cpu")
    (tmp_path / "movies/a.npy").write_bytes(b"2")
    changed = resume.data_digest(tmp_path / "movies", tmp_path / "split.json", tmp_path / "windows")
    assert changed != data
    keys = {ResumeStore(tmp_path, p).key for p in (
        base, resume.key_parts({"train": {"lr": 0.2}}, data, resume.code_digest(), "cpu"),
        resume.key_parts({"train": {"lr": 0.1}}, changed, resume.code_digest(), "cpu"),
        resume.key_parts({"train": {"lr": 0.1}}, data, resume.code_digest(), "cuda:0"))}
    assert len(keys) == 4


def test_a_failed_save_is_said_once_and_training_goes_on(tmp_path, capsys, monkeypatch):
    store = ResumeStore(tmp_path, PARTS)
    net, _, _ = _objects()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(resume.torch, "save", full)
    store.save(1, {"net": net}, {}, {})
    store.save(2, {"net": net}, {}, {})
    out = capsys.readouterr().out
    assert out.count("cannot save the resume state") == 1 and "No space left on device" in out
    assert not list(store.dir.glob("*.tmp")) and not store.state_file.exists()
    assert store.saved_epoch == 0
