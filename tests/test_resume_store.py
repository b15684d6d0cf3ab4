"""The resume store on its own (no training): saved states restore weights, optimiser and every
generator; the key and what changes it; fresh starts, damaged states, failed saves; each rank's own
generators. Fast (about a second), so mutation testing's fast subset holds it; the interrupted train
stages are in test_resume.py."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from sceneseg.training import resume
from sceneseg.training.resume import ResumeStore

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
    assert f"train: the saved state in {store.state_file} cannot be used (UnpicklingError); starting afresh" in \
        capsys.readouterr().out


class Payload:
    """Not a tensor or a builtin: a state holding it is refused by torch.load(weights_only=True)."""


def test_a_state_holding_more_than_tensors_and_builtins_or_another_key_is_not_used(tmp_path, capsys):
    net, _, _ = _objects()
    store = ResumeStore(tmp_path, PARTS)
    store.save(2, {"net": net}, {}, {})
    state = torch.load(store.state_file, weights_only=True)
    torch.save({**state, "extra": Payload()}, store.state_file)  # the right format and key, and a pickled object
    assert store.restore({"net": net}, {}, epochs=3) is None
    assert "cannot be used (UnpicklingError)" in capsys.readouterr().out
    fresh = "interrupted during epoch 1; no epoch had finished, so the next run starts afresh"
    assert ResumeStore(tmp_path, PARTS).interrupted_message() == fresh  # what another process saw on disk
    other = ResumeStore(tmp_path, {**PARTS, "data": "other"})
    other.dir.mkdir(parents=True)
    torch.save(state, other.state_file)  # a state of another run, copied into this run's folder
    assert other.restore({"net": net}, {}, epochs=3) is None
    assert "cannot be used (ValueError)" in capsys.readouterr().out
    assert ResumeStore(tmp_path, {**PARTS, "data": "other"}).interrupted_message() == fresh
    torch.save(state, store.state_file)  # and the same state where it belongs resumes
    assert store.restore({"net": net}, {}, epochs=3).epoch == 2


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
    (copy / "models" / "lgss").rename(copy / "models" / "lgss2")  # the same files in the same order, moved
    assert resume.code_digest(copy) != before


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


def test_the_data_digest_reads_paths_inside_the_movies_folder(tmp_path):
    """Movies are folders of same-named files: a movie folder renamed (another id, the same bytes, the
    same order) changes the digest: names are hashed relative to the folder, not as bare file names."""
    for d in ("movies/tt1", "movies/tt2", "windows"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "movies/tt1/labels.npy").write_bytes(b"a")
    (tmp_path / "movies/tt2/labels.npy").write_bytes(b"b")
    (tmp_path / "split.json").write_text("{}")

    def digest() -> str:
        return resume.data_digest(tmp_path / "movies", tmp_path / "split.json", tmp_path / "windows")

    before = digest()
    (tmp_path / "movies/tt1").rename(tmp_path / "movies/tt0")
    assert digest() != before


def test_the_key_does_not_depend_on_the_order_of_params_keys():
    """params.yaml with its keys reordered (or a section read in another order) is the same run."""
    a = resume.key_parts({"train": {"lr": 0.1, "epochs": 3}, "simseq": {"hidden": 8}}, "d" * 64, "c" * 64, "cpu")
    b = resume.key_parts({"simseq": {"hidden": 8}, "train": {"epochs": 3, "lr": 0.1}}, "d" * 64, "c" * 64, "cpu")
    assert a == b and ResumeStore(Path("/x"), a).key == ResumeStore(Path("/x"), b).key


def test_clearing_a_run_that_saved_nothing_is_quiet(tmp_path):
    """The stage clears the state once its outputs are written, also when no epoch had saved one."""
    store = ResumeStore(tmp_path, PARTS)
    store.clear()
    assert not store.dir.exists()


def test_a_fresh_start_names_what_differs_from_the_newest_saved_run(tmp_path, capsys):
    """Of several other runs' states the line compares with the newest (a folder without a state does
    not count); a state whose manifest is unreadable differs in every part."""
    net, _, _ = _objects()
    older = ResumeStore(tmp_path, {**PARTS, "data": "old"})
    newer = ResumeStore(tmp_path, {**PARTS, "train params": "new"})
    for k, store in enumerate((older, newer)):
        store.save(1, {"net": net}, {}, {})
        os.utime(store.state_file, (1_000_000 + k, 1_000_000 + k))
    (tmp_path / "empty-run").mkdir()
    here = ResumeStore(tmp_path, PARTS)
    assert here.restore({"net": net}, {}, epochs=3) is None
    assert f"the saved state in {newer.dir} is of another run (train params changed)" in capsys.readouterr().out
    os.utime(older.state_file, (1_000_002, 1_000_002))  # now the other one is the newest
    assert here.restore({"net": net}, {}, epochs=3) is None
    assert f"the saved state in {older.dir} is of another run (data changed)" in capsys.readouterr().out
    os.utime(newer.state_file, (1_000_003, 1_000_003))
    (newer.dir / "manifest.json").write_text("{not json")
    assert here.restore({"net": net}, {}, epochs=3) is None
    assert f"in {newer.dir} is of another run ({', '.join(PARTS)} changed)" in capsys.readouterr().out
