"""Training loop for LGSS: the published recipe, seeded, on whatever device is present.

Adam with weight decay, step decay of the learning rate, class-weighted cross-entropy
over the transitions each window answers for. Logs train and val loss every epoch;
the test loss is computed once after the last epoch (the seed's protocol).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sceneseg.training.distributed import Dist
from sceneseg.models.lgss.inference import ShotBank, autocast_for
from sceneseg.models.lgss.network import LGSS, ModelConfig
from sceneseg.progress import progress as progress_bar
from sceneseg.training.resume import ResumeStore
from sceneseg.data.windows import Windows


@dataclass(frozen=True)
class Recipe:
    """Optimisation hyperparameters (the ``train`` section, minus the model shape)."""

    lr: float = 1e-2
    weight_decay: float = 5e-4
    lr_decay_epochs: tuple[int, ...] = (15,)
    lr_decay_gamma: float = 0.1
    class_weights: tuple[float, float] = (0.5, 5.0)
    epochs: int = 30
    batch_size: int = 8
    eval_batch_size: int = 256
    select_epoch: str = "best_val"  # keep the weights of the epoch with the lowest val loss | "last"
    seed: int = 0


@dataclass
class History:
    """Per-epoch losses and the final test loss."""

    train_loss: list[float]
    val_loss: list[float]
    test_loss: float | None = None
    best_epoch: int = 0  # 1-based epoch whose weights are kept
    seconds: float = 0.0


def input_scales(bank: ShotBank) -> dict[str, float]:
    """1 / RMS of each modality over the bank's shots (the training movies): a scalar per
    modality, so zero (faceless) cast vectors stay zero."""
    return {m: float(1.0 / max(f.double().pow(2).mean().sqrt().item(), 1e-12)) for m, f in bank.features.items()}


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def owned_logits(model: LGSS, bank: ShotBank, w: Windows, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [K, 2] and labels [K] of the K transitions the windows at ``rows`` answer for."""
    feats, labels, own = bank.batch(w, rows)
    if labels is None:
        raise ValueError("training needs ground-truth boundaries, but the movies carry none")
    with autocast_for(bank.device):
        logits = model(feats)  # [B, S, 2]
    return logits[own].float(), labels[own]


def window_loss(model: LGSS, bank: ShotBank, w: Windows, rows: np.ndarray, weight: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy over the transitions the windows at ``rows`` answer for."""
    return F.cross_entropy(*owned_logits(model, bank, w, rows), weight=weight)


def sharded_step(model: LGSS, opt: torch.optim.Optimizer, bank: ShotBank, w: Windows, rows: np.ndarray,
                 weight: torch.Tensor, dist: Dist) -> float:
    """One optimiser step on the global batch ``rows``, of which this rank computes its shard.

    The class-weighted loss of each shard is divided by the weight sum of the *whole* global batch
    and the gradients are summed over the ranks, so the step is the one-process step on all of
    ``rows`` (up to float rounding). Returns the global batch's loss."""
    mine = dist.shard(rows)
    opt.zero_grad(set_to_none=True)
    if len(mine):
        logits, y = owned_logits(model, bank, w, mine)
        s = F.cross_entropy(logits, y, weight=weight, reduction="sum")
        total, norm = dist.sum(s.item(), weight[y].sum().item())
        (s / norm).backward()
    else:  # fewer windows than ranks in the last batch: this rank only joins the sums
        total, norm = dist.sum(0.0, 0.0)
    dist.sum_grads(model.parameters())
    opt.step()
    return total / norm


@torch.no_grad()
def mean_loss(model: LGSS, bank: ShotBank, w: Windows, batch_size: int, weight: torch.Tensor,
              dist: Dist | None = None) -> float:
    """Class-weighted cross-entropy over all owned transitions of ``w`` (independent of batch size);
    with ``dist``, each rank computes its shard of the windows and the sums are shared."""
    was_training = model.training
    model.eval()
    rows = np.arange(len(w)) if dist is None else dist.shard(np.arange(len(w)))
    total, norm = 0.0, 0.0
    for lo in range(0, len(rows), batch_size):
        logits, y = owned_logits(model, bank, w, rows[lo:lo + batch_size])
        total += F.cross_entropy(logits, y, weight=weight, reduction="sum").item()
        norm += weight[y].sum().item()
    if dist is not None:
        total, norm = dist.sum(total, norm)
    model.train(was_training)
    return total / norm


def fit(model_cfg: ModelConfig, recipe: Recipe, train: tuple[ShotBank, Windows], val: tuple[ShotBank, Windows],
        test: tuple[ShotBank, Windows] | None, device: torch.device,
        on_epoch: Callable[[int, float, float], None] | None = None, progress: bool = True,
        resume: ResumeStore | None = None, dist: Dist | None = None) -> tuple[LGSS, History]:
    """Train LGSS on ``train`` windows, report ``val`` loss each epoch, ``test`` loss once at the end.

    With ``resume``, the state after each epoch is saved there, and a saved state of the same run
    is continued from (the epochs done are reported to ``on_epoch`` again, from their history).
    With ``dist`` (data-parallel, see :mod:`sceneseg.training.distributed`), every rank runs this with the
    same seed, so the same initial weights and window order; each computes its shard of every
    global batch of ``recipe.batch_size`` windows; rank 0 saves the resume state, with every rank's
    random generators.
    """
    for bank, w in (train, val) + ((test,) if test else ()):
        bank.check_windows(w)
    if len(train[1]) == 0:
        raise ValueError("training: expected at least one train window, found none")
    seed_everything(recipe.seed)
    model = LGSS(model_cfg).to(device)
    # fused Adam: the same update, ~4x faster on CPU than the per-tensor loop
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(recipe.lr_decay_epochs), gamma=recipe.lr_decay_gamma)
    weight = torch.tensor(recipe.class_weights, dtype=torch.float32, device=device)
    rng = np.random.default_rng(recipe.seed)
    hist = History([], [])
    best: dict[str, torch.Tensor] | None = None
    t0 = time.perf_counter()
    n_batches = -(-len(train[1]) // recipe.batch_size)
    start, objects, generators = 0, {"model": model, "optimizer": opt, "schedule": sched}, {"order": rng}
    if resume and (done := resume.restore(objects, generators, recipe.epochs, dist)):
        h = done.history
        start, best, t0 = done.epoch, h["best"], t0 - h["seconds"]
        hist = History(h["train_loss"], h["val_loss"], best_epoch=h["best_epoch"])
        for e in range(start if on_epoch else 0):
            on_epoch(e + 1, hist.train_loss[e], hist.val_loss[e])
    bar = progress_bar(total=recipe.epochs * n_batches, initial=start * n_batches, desc="train", unit="batch",
                       disable=not progress)
    for epoch in range(start, recipe.epochs):
        model.train()
        order = rng.permutation(len(train[1]))
        losses = []
        for lo in range(0, len(order), recipe.batch_size):
            if dist is None:
                loss = window_loss(model, *train, order[lo:lo + recipe.batch_size], weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            else:
                losses.append(sharded_step(model, opt, *train, order[lo:lo + recipe.batch_size], weight, dist))
            bar.update(1)
            bar.set_postfix(epoch=f"{epoch + 1}/{recipe.epochs}", loss=f"{np.mean(losses):.4f}")
        sched.step()
        hist.train_loss.append(float(np.mean(losses)))
        hist.val_loss.append(mean_loss(model, *val, recipe.eval_batch_size, weight, dist))
        bar.write(f"epoch {epoch + 1:3d}/{recipe.epochs}  train loss {hist.train_loss[-1]:.4f}  "
                  f"val loss {hist.val_loss[-1]:.4f}  lr {opt.param_groups[0]['lr']:.2g}")
        if on_epoch:
            on_epoch(epoch + 1, hist.train_loss[-1], hist.val_loss[-1])
        finite = [v for v in hist.val_loss if math.isfinite(v)]
        if recipe.select_epoch == "last" or (math.isfinite(hist.val_loss[-1]) and hist.val_loss[-1] <= min(finite)):
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            hist.best_epoch = epoch + 1
        if resume:  # every rank: each one's generators are saved (rank 0 writes)
            resume.save(epoch + 1, objects, generators, {
                "train_loss": hist.train_loss, "val_loss": hist.val_loss, "best_epoch": hist.best_epoch,
                "best": best, "seconds": time.perf_counter() - t0}, last=epoch + 1 == recipe.epochs, dist=dist)
    bar.close()
    if best is None:
        raise ValueError(f"training diverged: the validation loss was not finite in any of the {recipe.epochs} "
                         f"epochs (train.lr {recipe.lr} may be too high)")
    model.load_state_dict(best)
    if recipe.select_epoch != "last":
        print(f"train: keeping the weights of epoch {hist.best_epoch} (lowest validation loss)")
    if test is not None:  # once, after training (the seed's protocol)
        hist.test_loss = mean_loss(model, *test, recipe.eval_batch_size, weight, dist)
    hist.seconds = time.perf_counter() - t0
    model.eval()
    return model, hist
