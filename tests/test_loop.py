"""sceneseg.training.loop: the epoch bookkeeping both models share (losses, kept epoch, early stop,
resume hand-off), checked against hand-worked sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sceneseg.training.loop import EpochLog, resume_or_start, seed_everything
from sceneseg.training.resume import Restored


def test_the_log_keeps_a_copy_of_the_weights_of_the_kept_epoch():
    net = torch.nn.Linear(2, 1)
    log = EpochLog()
    assert log.add(0.9, 0.8, 0.1) == {"train": 0.9, "val": 0.8, "val_ap": 0.1}
    log.keep(net)
    kept = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)  # training goes on: the kept copy must not follow
    assert log.add(0.7, 0.85, 0.05) == {"train": 0.7, "val": 0.85, "val_ap": 0.05}
    assert log.best_epoch == 1 and log.epochs == 2
    assert torch.equal(log.best_state["weight"], kept)
    assert log.losses(1) == {"train": 0.9, "val": 0.8, "val_ap": 0.1}


def test_a_log_without_validation_ap_reports_losses_only():
    log = EpochLog()
    assert log.add(1.0, 2.0) == {"train": 1.0, "val": 2.0}
    assert log.val_ap == []


@pytest.mark.parametrize("kept,epochs,patience,stop", [
    (2, 4, 2, True),    # epochs 3 and 4 without a better one
    (2, 3, 2, False),   # only epoch 3 since
    (4, 4, 1, False),   # the last epoch is the kept one
    (1, 30, 0, False),  # patience 0: never
])
def test_early_stop_counts_the_epochs_since_the_kept_one(kept, epochs, patience, stop):
    net = torch.nn.Linear(1, 1)
    log = EpochLog()
    for e in range(1, epochs + 1):
        log.add(1.0 / e, 1.0)
        if e == kept:
            log.keep(net)
    assert log.stale(patience) is stop


class FakeStore:
    """A resume store holding one saved state (or none)."""

    def __init__(self, restored):
        self.restored, self.calls = restored, []

    def restore(self, objects, generators, epochs, dist=None):
        self.calls.append(epochs)
        return self.restored


def saved(epoch: int, last: bool) -> Restored:
    log = EpochLog()
    for e in range(epoch):
        log.add(1.0 - e / 10, 2.0 - e / 10, e / 10)
    log.best_epoch, log.best_state = 2, {"w": torch.ones(1)}
    return Restored(epoch, log.state(12.5), last)


def test_a_fresh_run_starts_at_epoch_0():
    assert resume_or_start(None, {}, {}, 30) == (EpochLog(), 0, 0.0)
    store = FakeStore(None)
    log, start, spent = resume_or_start(store, {}, {}, 30)
    assert (log.epochs, start, spent, store.calls) == (0, 0, 0.0, [30])


def test_a_resumed_run_reports_its_finished_epochs_again_and_continues_after_them():
    reports = []
    log, start, spent = resume_or_start(FakeStore(saved(3, last=False)), {}, {}, 10,
                                        on_epoch=lambda e, losses: reports.append((e, losses)))
    assert (start, spent, log.best_epoch) == (3, 12.5, 2)
    assert reports == [(1, {"train": 1.0, "val": 2.0, "val_ap": 0.0}), (2, {"train": 0.9, "val": 1.9, "val_ap": 0.1}),
                       (3, {"train": 0.8, "val": 1.8, "val_ap": 0.2})]
    assert torch.equal(log.best_state["w"], torch.ones(1))


def test_a_resumed_run_that_had_stopped_early_runs_no_further_epoch():
    log, start, _ = resume_or_start(FakeStore(saved(4, last=True)), {}, {}, 10)
    assert start == 10 and log.epochs == 4


def test_seeding_repeats_every_generator():
    def draw():
        return np.random.rand(), torch.rand(1).item(), __import__("random").random()
    seed_everything(3)
    a = draw()
    seed_everything(3)
    assert draw() == a
    seed_everything(4)
    assert draw() != a
