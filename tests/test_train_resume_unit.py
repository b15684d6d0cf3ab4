"""Resume inside ``fit``, in-process and fast: a run stopped after some epochs and resumed from its
saved state ends bit for bit where an uninterrupted run ends (weights, losses, kept epoch, the
``on_epoch`` reports); a finished state finishes without training; with data-parallel training
only rank 0 saves. (tests/test_resume.py covers the train stage end to end, signals included.)"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from conftest import bank_and_windows, tiny_config, tiny_movie
from sceneseg.models.lgss import training as train_mod
from sceneseg.models.lgss.network import LGSS
from sceneseg.models.lgss.training import Recipe, fit
from sceneseg.training.distributed import Dist
from sceneseg.training.resume import ResumeStore

CPU = torch.device("cpu")
SEQ = 6
# the validation loss bottoms out at epoch 4 of 6 (see test_train_behaviour's overfitting data)
RECIPE = Recipe(lr=0.03, epochs=6, batch_size=2, eval_batch_size=5, lr_decay_epochs=(5,), seed=1)


class Stop(KeyboardInterrupt):
    """What Ctrl-C raises, from inside an epoch report."""


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)  # bit-reproducible epochs
    movies = [tiny_movie(f"tt2{i}", n, 20 + i) for i, n in enumerate((40, 33))]
    return bank_and_windows(movies, SEQ), bank_and_windows([tiny_movie("tt9", 30, 92)], SEQ)


def run(data, store=None, stop_at=None, on_epoch=True, recipe=RECIPE, dist=None, batches=None, progress=False):
    """fit() on the data; returns (model, history, on_epoch reports, training batches run)."""
    reports, batches = [], [] if batches is None else batches
    real = train_mod.window_loss

    def counting(*args):
        batches.append(1)
        return real(*args)

    def report(epoch, losses):
        if stop_at is not None and epoch == stop_at:
            raise Stop
        reports.append((epoch, losses["train"], losses["val"]))

    train, val = data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "window_loss", counting)
        model, hist = fit(tiny_config(), recipe, train, val, val, CPU, on_epoch=report if on_epoch else None,
                          progress=progress, resume=store, dist=dist)
    return model, hist, reports, len(batches)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def uninterrupted(data):
    """The run without a store: (model, history, reports, training batches)."""
    return run(data)


def per_epoch(data) -> int:
    return -(-len(data[0][1]) // RECIPE.batch_size)


def test_a_stopped_run_resumes_to_the_uninterrupted_result(data, uninterrupted, tmp_path):
    full_model, full, full_reports, full_batches = uninterrupted
    assert full_batches == RECIPE.epochs * per_epoch(data)
    assert full.best_epoch == 4 == int(np.argmin(full.val_loss)) + 1  # kept epoch before the stop
    t_start = time.perf_counter()

    # stopped while reporting epoch 6: the state of epoch 5 is on disk, not yet the last one
    store = ResumeStore(tmp_path / "resume", {"run": "a"})
    with pytest.raises(Stop):
        run(data, store, stop_at=6)
    assert (store.saved_epoch, store.saved_last) == (5, False)
    state = torch.load(store.state_file, weights_only=True)
    assert state["epoch"] == 5 and not state["last"]
    assert state["history"]["train_loss"] == full.train_loss[:5] and state["history"]["best_epoch"] == 4
    saved_seconds = state["history"]["seconds"]
    assert saved_seconds > 0

    # the next run (a new store of the same run) trains epoch 6 only and ends where the full run ended
    again = ResumeStore(tmp_path / "resume", {"run": "a"})
    model, hist, reports, batches = run(data, again)
    assert batches == per_epoch(data)
    assert reports == full_reports  # epochs 1-5 reported again from the saved history, then epoch 6
    assert (hist.train_loss, hist.val_loss, hist.best_epoch) == (full.train_loss, full.val_loss, 4)
    assert hist.test_loss == full.test_loss
    assert_same_weights(model, full_model)
    assert saved_seconds <= hist.seconds <= time.perf_counter() - t_start  # time of both parts, counted once
    assert (again.saved_epoch, again.saved_last) == (6, True)
    assert torch.load(again.state_file, weights_only=True)["last"]

    # a state saved after the last epoch finishes the run without training (no report asked)
    model, hist, _, batches = run(data, ResumeStore(tmp_path / "resume", {"run": "a"}), on_epoch=False)
    assert batches == 0
    assert (hist.train_loss, hist.val_loss, hist.best_epoch) == (full.train_loss, full.val_loss, 4)
    assert hist.test_loss == full.test_loss
    assert_same_weights(model, full_model)


def test_resume_from_before_the_kept_epoch(data, uninterrupted, tmp_path):
    """Stopped during epoch 3: epochs 3-6 are trained again, the kept epoch (4) comes from them."""
    full_model, full, full_reports, _ = uninterrupted
    store = ResumeStore(tmp_path, {"run": "b"})
    with pytest.raises(Stop):
        run(data, store, stop_at=3)
    assert store.saved_epoch == 2
    model, hist, reports, batches = run(data, ResumeStore(tmp_path, {"run": "b"}))
    assert batches == 4 * per_epoch(data)
    assert reports == full_reports and hist.best_epoch == 4
    assert_same_weights(model, full_model)
    # another run's key starts afresh: epoch 1 is trained (a resumed run would report it at once)
    batches = []
    with pytest.raises(Stop):
        run(data, ResumeStore(tmp_path, {"run": "c"}), stop_at=1, batches=batches)
    assert len(batches) == per_epoch(data)


@dataclass(frozen=True)
class OneProcess(Dist):
    """A data-parallel group of one process that claims to be ``rank``: the sums are the values."""

    def shard(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def all_reduce(self, t: torch.Tensor) -> None:
        pass  # the real sum and sum_grads, over a group of one

    def gather(self, obj: object) -> list | None:
        return [obj] if self.rank == 0 else None


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_0_saves_the_resume_state(data, tmp_path, rank):
    store = ResumeStore(tmp_path, {"run": "d"})
    recipe = Recipe(lr=0.03, epochs=1, batch_size=2, eval_batch_size=5, seed=1)
    _, hist, _, _ = run(data, store, recipe=recipe, dist=OneProcess(rank, 1, CPU))
    assert store.state_file.is_file() == (rank == 0)
    assert (store.saved_epoch, store.saved_last) == ((1, True) if rank == 0 else (0, False))
    assert len(hist.train_loss) == 1


def test_the_data_parallel_step_on_one_process_is_the_plain_step(data):
    """A group of one: each global batch's loss is normalised by its class-weight sum, as the plain step's mean."""
    recipe = Recipe(lr=0.03, epochs=2, batch_size=2, eval_batch_size=5, seed=1)
    plain_model, plain, _, _ = run(data, recipe=recipe)
    model, hist, _, _ = run(data, recipe=recipe, dist=OneProcess(0, 1, CPU))
    np.testing.assert_allclose(hist.train_loss, plain.train_loss, rtol=1e-5)
    np.testing.assert_allclose(hist.val_loss, plain.val_loss, rtol=1e-5)
    assert hist.test_loss == pytest.approx(plain.test_loss, rel=1e-5)
    for k, v in plain_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-4, atol=1e-5)


class SecondRank(Dist):
    """Rank 1 of 2 in one process: the other rank's loss sums and gradients are given, added by
    the real ``sum`` and ``sum_grads`` through ``all_reduce`` (sums first, then the flat gradients)."""

    def __init__(self, other_sums: list[float], other_grads: list[torch.Tensor]) -> None:
        super().__init__(1, 2, CPU)
        object.__setattr__(self, "other", [torch.tensor(other_sums, dtype=torch.float64),
                                           torch.cat([g.reshape(-1) for g in other_grads])])

    def all_reduce(self, t: torch.Tensor) -> None:
        t += self.other.pop(0)


def test_a_rank_with_an_empty_shard_takes_the_step_of_the_others(data):
    """A global batch of one window: rank 1's shard is empty, so it adds nothing to the loss sums
    and gradients and applies rank 0's step, the plain step on that window; both return its loss."""
    bank, w = data[0]
    weight = torch.tensor(RECIPE.class_weights)
    rows = np.array([3])
    torch.manual_seed(0)
    plain = LGSS(tiny_config())
    ranked = LGSS(tiny_config())
    ranked.load_state_dict(plain.state_dict())
    start = {k: v.clone() for k, v in plain.state_dict().items()}
    # rank 0's part: the whole batch, its loss sum and weight sum, gradients of sum / weight sum
    logits, y = train_mod.owned_logits(plain, bank, w, rows)
    s = torch.nn.functional.cross_entropy(logits, y, weight=weight, reduction="sum")
    norm = weight[y].sum().item()
    (s / norm).backward()
    grads = [p.grad.clone() for p in plain.parameters()]
    opt = torch.optim.Adam(plain.parameters(), lr=0.03)
    opt.step()
    loss = train_mod.sharded_step(ranked, torch.optim.Adam(ranked.parameters(), lr=0.03), bank, w, rows, weight,
                                  SecondRank([s.item(), norm], grads))
    assert loss == pytest.approx(s.item() / norm, rel=1e-12)
    assert norm != pytest.approx(1.0) and s.item() != pytest.approx(0.0)  # a wrong sum would show
    for (k, a), b in zip(plain.state_dict().items(), ranked.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-7, msg=k)
    assert any(not torch.equal(v, start[k]) for k, v in ranked.state_dict().items())  # it did step


@pytest.mark.parametrize("select", ["best_val", "last"])
def test_the_log_tells_each_epoch_and_the_kept_one(data, capsys, select):
    """What a user reads in the log (off a terminal): one line per epoch with its losses and lr, the
    kept epoch (best_val only), and the bar's last line with every batch done and the last loss."""
    recipe = Recipe(**{**RECIPE.__dict__, "select_epoch": select})
    _, hist, _, _ = run(data, on_epoch=False, recipe=recipe, progress=True)
    log = capsys.readouterr()
    text = log.out + log.err
    for e in range(recipe.epochs):
        lr = 0.03 if e + 1 < 5 else 0.003  # lr_decay_epochs (5,): lowered after epoch 4
        assert (f"epoch {e + 1:3d}/{recipe.epochs}  train loss {hist.train_loss[e]:.4f}  "
                f"val loss {hist.val_loss[e]:.4f}  lr {lr:.2g}\n") in text, text
    kept = f"train: keeping the weights of epoch {hist.best_epoch} (lowest validation loss)"
    assert (kept in text) == (select == "best_val") and (hist.best_epoch == 6) == (select == "last")
    n = recipe.epochs * per_epoch(data)
    bar = [ln for ln in log.err.splitlines() if ln.startswith("train: ") and " batch " in ln]
    assert bar[-1].startswith(f"train: {n}/{n} batch (100%)"), bar
    assert f"epoch={recipe.epochs}/{recipe.epochs}, loss={hist.train_loss[-1]:.4f}]" in bar[-1], bar


def test_without_progress_there_is_no_bar(data, capsys):
    run(data, on_epoch=False, recipe=Recipe(**{**RECIPE.__dict__, "epochs": 1}))
    assert " batch " not in capsys.readouterr().err
