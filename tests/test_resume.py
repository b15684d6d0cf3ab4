"""Resume: a train stage interrupted (SIGINT, SIGTERM, SIGKILL) and rerun ends bit for bit where an
uninterrupted run ends, for one process and two (the store alone: test_resume_store.py)."""

from __future__ import annotations

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


ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
DATA_ARGS = ["--movies", "data/movies", "--split", "data/split.json", "--windows", "data/windows",
             "--features", "data/features"]


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


def run_data_stages(d: Path) -> None:
    """The stages before train (download, split, featurize, features) in ``d``, on its params.yaml."""
    run_stage("download", d, "--out", "data/movies")
    run_stage("split", d, "--movies", "data/movies", "--out", "data/split.json")
    run_stage("featurize", d, "--movies", "data/movies", "--split", "data/split.json", "--out", "data/windows")
    run_stage("features", d, "--movies", "data/movies", "--out", "data/features")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Tiny data: the download, split and featurize stages on a small synthetic set."""
    d = tmp_path_factory.mktemp("resume")
    p = tiny_params()
    p["data"]["synthetic"].update(n_movies=5, min_shots=60, max_shots=90)
    p["train"].update(epochs=EPOCHS, batch_size=2, num_threads=1)
    p["simseq"]["patience"] = 0
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    run_data_stages(d)
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


@pytest.mark.parametrize("model", ["simseq", "lgss"])
def test_an_interrupted_two_process_run_resumes_to_the_uninterrupted_result(data_dir, model):
    """train.world_size 2 (simseq with dropout: the ranks draw their own dropout masks): a run stopped
    (SIGINT) after epoch 2 and resumed, each rank from its own saved generators, ends where the
    uninterrupted run ends: every parameter and loss within 1e-6."""
    d, name = data_dir, f"{model}-2"
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["train"].update(model=model, world_size=2)
    if model == "simseq":
        p["simseq"].update(dropout=0.3, tree_iters=10)
    (d / f"params-{name}.yaml").write_text(yaml.safe_dump(p))
    subprocess.run(train_cmd(name, f"ref-{name}"), cwd=d, env=ENV, check=True, capture_output=True)
    r, _ = interrupt_after(d, name, 2, signal.SIGINT)
    k = saved_epoch(d)
    assert r.returncode == 130 and 2 <= k < EPOCHS, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"interrupted during epoch {k + 1}; the state of epoch {k} is saved, run dvc repro to resume")
    state = torch.load(next((d / ".cache/resume").glob("*/state.pt")), weights_only=True)
    assert len(state["rng"]) == 2
    if model == "simseq":  # LGSS draws nothing per rank: its ranks' generators stay alike
        assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    r = subprocess.run(train_cmd(name, f"run-{name}"), cwd=d, env=ENV, capture_output=True, text=True, check=True)
    assert f"train: resuming after epoch {k} of {EPOCHS}" in r.stdout
    ref, run = outputs(d, f"ref-{name}"), outputs(d, f"run-{name}")
    assert run["metrics"] == pytest.approx(ref["metrics"], abs=1e-6) and run["threshold"] == ref["threshold"]
    for f, text in ref["tsv"].items():  # every epoch's losses, those after the resume included
        assert np.loadtxt(run["tsv"][f].decode().splitlines()[1:], usecols=1) == pytest.approx(
            np.loadtxt(text.decode().splitlines()[1:], usecols=1), abs=1e-6), f
    assert run["weights"].keys() == ref["weights"].keys()
    for key, v in ref["weights"].items():
        torch.testing.assert_close(run["weights"][key], v, rtol=0, atol=1e-6, msg=key)


# --- the store on its own -------------------------------------------------------------------------

