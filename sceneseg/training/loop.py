"""What every model's epoch loop shares: seeding, the per-epoch losses, the kept epoch and its
weights, early stop, and the hand-off to and from :mod:`sceneseg.training.resume`.

Each model decides *which* epoch is better (LGSS: the lowest validation loss; simseq: the highest
validation AP); this module keeps the books the same way for both, so a resumed run reports,
keeps and stops exactly as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

# epoch (1-based), {"train": loss, "val": loss, ...}: called once per epoch (loss curves, logs)
EpochCallback = Callable[[int, dict[str, float]], None]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class EpochLog:
    """Per-epoch losses (and validation AP where a model measures it), the kept epoch and its weights."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_ap: list[float] = field(default_factory=list)  # empty for a model that does not measure it
    best_epoch: int = 0  # 1-based epoch whose weights are kept; 0 before any
    best_state: dict[str, torch.Tensor] | None = None

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def add(self, train: float, val: float, val_ap: float | None = None) -> dict[str, float]:
        """Record one finished epoch; returns its losses as ``on_epoch`` receives them."""
        self.train_loss.append(train)
        self.val_loss.append(val)
        if val_ap is not None:
            self.val_ap.append(val_ap)
        return self.losses(self.epochs)

    def losses(self, epoch: int) -> dict[str, float]:
        """{"train", "val"[, "val_ap"]} of ``epoch`` (1-based)."""
        out = {"train": self.train_loss[epoch - 1], "val": self.val_loss[epoch - 1]}
        if self.val_ap:
            out["val_ap"] = self.val_ap[epoch - 1]
        return out

    def keep(self, model: torch.nn.Module) -> None:
        """The last recorded epoch becomes the kept one: a copy of ``model``'s weights now."""
        self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.best_epoch = self.epochs

    def stale(self, patience: int) -> bool:
        """Early stop: ``patience`` (> 0) epochs recorded since the kept one; 0 never stops."""
        return bool(patience) and self.epochs - self.best_epoch >= patience

    def state(self, seconds: float) -> dict:
        """What the resume state holds of the loop (builtins and tensors)."""
        return {"train_loss": self.train_loss, "val_loss": self.val_loss, "val_ap": self.val_ap,
                "best_epoch": self.best_epoch, "best_state": self.best_state, "seconds": seconds}


def resume_or_start(resume, objects: dict, generators: dict, epochs: int, dist=None,
                    on_epoch: EpochCallback | None = None) -> tuple[EpochLog, int, float]:
    """(log, first epoch to run (0-based), seconds already spent) of a run: afresh, or continued from
    ``resume`` (a :class:`~sceneseg.training.resume.ResumeStore`), whose finished epochs are then
    reported to ``on_epoch`` again. A saved run that had ended (all epochs, or an early stop) runs
    no further epoch."""
    done = resume.restore(objects, generators, epochs, dist) if resume else None
    if not done:
        return EpochLog(), 0, 0.0
    h = done.history
    log = EpochLog(h["train_loss"], h["val_loss"], h["val_ap"], h["best_epoch"], h["best_state"])
    for e in range(done.epoch if on_epoch else 0):
        on_epoch(e + 1, log.losses(e + 1))
    return log, (epochs if done.last else done.epoch), h["seconds"]
