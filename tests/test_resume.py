"""Resume: a train stage interrupted (SIGINT, SIGTERM, SIGKILL) and rerun ends bit for bit where an
uninterrupted run ends; the store's key, fresh starts, damaged states and failed saves."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
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

from sceneseg.training import resume
from sceneseg.training.resume import ResumeStore

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
    # by hand: sha256 of each part's file names and bytes, then of the three digests joined by spaces
    parts = [hashlib.sha256(b"a.npy\0" + b"1" + b"\0").hexdigest(),
             hashlib.sha256(b"split.json\0" + b"{}" + b"\0").hexdigest(), hashlib.sha256(b"").hexdigest()]
    assert data == hashlib.sha256(" ".join(parts).encode()).hexdigest()
    base = resume.key_parts({"train": {"lr": 0.1}}, data, "c0de" * 16, "cpu")
    assert base == {"train params": hashlib.sha256(b'{"lr": 0.1}').hexdigest()[:16], "data": data[:16],
                    "code": "c0dec0dec0dec0de", "device": "cpu"}
    (tmp_path / "movies/a.npy").write_bytes(b"2")
    changed = resume.data_digest(tmp_path / "movies", tmp_path / "split.json", tmp_path / "windows")
    assert changed != data
    keys = {ResumeStore(tmp_path, p).key for p in (
        base, resume.key_parts({"train": {"lr": 0.2}}, data, "c0de" * 16, "cpu"),
        resume.key_parts({"train": {"lr": 0.1}}, changed, "c0de" * 16, "cpu"),
        resume.key_parts({"train": {"lr": 0.1}}, data, "c0de" * 16, "cuda:0"),
        resume.key_parts({"train": {"lr": 0.1}}, data, "c0df" * 16, "cpu"))}
    assert len(keys) == 5


def test_the_code_digest_covers_the_whole_package(tmp_path):
    """A state saved before an edit to a model's or the data code is not resumed: the digest reads
    every .py file of sceneseg/, not only sceneseg/training/ (where resume.py lives since the
    layout move; from that move until this test it read only that folder)."""
    import shutil

    import sceneseg

    package = Path(sceneseg.__file__).resolve().parent
    assert resume.code_digest() == resume.code_digest(package)
    copy = tmp_path / "sceneseg"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = resume.code_digest(copy)
    assert before == resume.code_digest()
    for rel in ("models/lgss/training.py", "data/movies.py", "training/loop.py"):
        with open(copy / rel, "a") as f:
            f.write("# edited\n")
        after = resume.code_digest(copy)
        assert after != before, rel
        before = after
    (copy / "notes.txt").write_text("not code")
    assert resume.code_digest(copy) == before


@dataclasses.dataclass(frozen=True)
class Rank(resume.Dist):
    """Rank ``rank`` of a group whose other ranks' generators are ``others`` (no processes)."""

    others: tuple = ()

    def gather(self, obj):
        return [obj, *self.others] if self.rank == 0 else None


def test_each_rank_restores_its_own_generators(tmp_path, capsys):
    """Rank 0 writes every rank's global generators; rank 1 restores its own, not rank 0's; a run
    with another number of processes starts afresh."""
    cpu = torch.device("cpu")
    torch.manual_seed(11)
    rank1 = resume.global_rng_state()
    assert ResumeStore(tmp_path, PARTS).save(1, {}, {}, {}, dist=Rank(1, 2, cpu)) is None
    assert not ResumeStore(tmp_path, PARTS).state_file.exists()  # a rank above 0 writes nothing
    torch.manual_seed(10)
    ResumeStore(tmp_path, PARTS).save(1, {}, {}, {}, dist=Rank(0, 2, cpu, others=(rank1,)))
    torch.manual_seed(10)
    expected = {0: torch.rand(3)}
    torch.manual_seed(11)
    expected[1] = torch.rand(3)
    for rank in (1, 0):
        torch.manual_seed(99)
        assert ResumeStore(tmp_path, PARTS).restore({}, {}, epochs=3, dist=Rank(rank, 2, cpu)).epoch == 1
        assert torch.equal(torch.rand(3), expected[rank]), rank
    assert ResumeStore(tmp_path, PARTS).restore({}, {}, epochs=3) is None
    assert "cannot be used" in capsys.readouterr().out


def test_the_interruption_line_reads_a_state_that_another_process_saved(tmp_path):
    """Data-parallel: the ranks save in their processes; the stage's own store says what is on disk."""
    net, _, _ = _objects()
    ResumeStore(tmp_path, PARTS).save(3, {"net": net}, {}, {})
    assert ResumeStore(tmp_path, PARTS).interrupted_message() == (
        "interrupted during epoch 4; the state of epoch 3 is saved, run dvc repro to resume")
    ResumeStore(tmp_path, PARTS).save(5, {"net": net}, {}, {}, last=True)
    assert ResumeStore(tmp_path, PARTS).interrupted_message() == (
        "interrupted after the last epoch (5); its state is saved, run dvc repro to finish")


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
