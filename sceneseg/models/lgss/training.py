"""Training loop for LGSS: the published recipe, seeded, on whatever device is present.

Adam with weight decay, step decay of the learning rate, class-weighted cross-entropy
over the transitions each window answers for. Logs train and val loss every epoch;
the test loss is computed once after the last epoch (the seed's protocol).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sceneseg.data.windows import Windows
from sceneseg.models.lgss.inference import ShotBank, autocast_for, predict_owned, predict_windows
from sceneseg.models.lgss.network import LGSS, ModelConfig
from sceneseg.progress import progress as progress_bar
from sceneseg.training.distributed import Dist, sharded_backward
from sceneseg.training.loop import EpochCallback, resume_or_start, seed_everything
from sceneseg.training.resume import ResumeStore
from sceneseg.training.threshold import choose_on_validation


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

    def loss() -> tuple[torch.Tensor, torch.Tensor]:
        logits, y = owned_logits(model, bank, w, mine)
        return F.cross_entropy(logits, y, weight=weight, reduction="sum"), weight[y].sum()

    total, norm = sharded_backward(loss, len(mine) > 0, opt, model.parameters(), dist)
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
        on_epoch: EpochCallback | None = None, progress: bool = True,
        resume: ResumeStore | None = None, dist: Dist | None = None) -> tuple[LGSS, History]:
    """Train LGSS on ``train`` windows, report ``val`` loss each epoch, ``test`` loss once at the end.

    ``on_epoch(epoch, {"train": loss, "val": loss})`` after every epoch. With ``resume``, the state
    after each epoch is saved there, and a saved state of the same run is continued from (the
    epochs done are reported to ``on_epoch`` again, from their history).
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
    n_batches = -(-len(train[1]) // recipe.batch_size)
    objects, generators = {"model": model, "optimizer": opt, "schedule": sched}, {"order": rng}
    log, start, spent = resume_or_start(resume, objects, generators, recipe.epochs, dist, on_epoch)
    t0 = time.perf_counter() - spent
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
        done = log.add(float(np.mean(losses)), mean_loss(model, *val, recipe.eval_batch_size, weight, dist))
        bar.write(f"epoch {epoch + 1:3d}/{recipe.epochs}  train loss {done['train']:.4f}  "
                  f"val loss {done['val']:.4f}  lr {opt.param_groups[0]['lr']:.2g}")
        if on_epoch:
            on_epoch(epoch + 1, done)
        finite = [v for v in log.val_loss if math.isfinite(v)]
        if recipe.select_epoch == "last" or (math.isfinite(done["val"]) and done["val"] <= min(finite)):
            log.keep(model)
        if resume:  # every rank: each one's generators are saved (rank 0 writes)
            resume.save(epoch + 1, objects, generators, log.state(time.perf_counter() - t0),
                        last=epoch + 1 == recipe.epochs, dist=dist)
    bar.close()
    if log.best_state is None:
        raise ValueError(f"training diverged: the validation loss was not finite in any of the {recipe.epochs} "
                         f"epochs (train.lr {recipe.lr} may be too high)")
    model.load_state_dict(log.best_state)
    if recipe.select_epoch != "last":
        print(f"train: keeping the weights of epoch {log.best_epoch} (lowest validation loss)")
    hist = History(log.train_loss, log.val_loss, best_epoch=log.best_epoch)
    if test is not None:  # once, after training (the seed's protocol)
        hist.test_loss = mean_loss(model, *test, recipe.eval_batch_size, weight, dist)
    hist.seconds = time.perf_counter() - t0
    model.eval()
    return model, hist


def validation_threshold(model: LGSS, bank: ShotBank, val: Windows, metric: str, batch_size: int) -> float:
    """Threshold maximising ``metric`` on the validation windows: 'f1' (pooled transitions),
    'miou' (whole validation movies: needs val by movie) or 'fixed' (0.5, the published setting)."""
    if metric not in ("f1", "miou"):
        return choose_on_validation(metric)  # 'fixed': 0.5; anything else: the error naming it
    if bank.labels is None:
        raise ValueError("choosing a threshold needs ground-truth boundaries on the validation movies, found none")
    if metric == "miou":
        prob = predict_windows(model, bank, val, batch_size)
        gt, ends = {}, {}
        for i, mid in enumerate(bank.movie_ids):
            lo = int(bank.trans_offset[i])
            gt[mid] = bank.labels[lo:lo + int(bank.n_shots[i]) - 1].cpu().numpy().astype(bool)
            if mid not in bank.shot_end_frame:
                raise ValueError(f"movie {mid}: choosing a threshold by Miou needs its shot_end_frame, found none")
            ends[mid] = bank.shot_end_frame[mid]
        return choose_on_validation("miou", gt, prob, ends)
    movie, trans, prob = predict_owned(model, bank, val, batch_size)
    gt = bank.labels[torch.from_numpy(trans + bank.trans_offset[movie]).to(bank.labels.device)].cpu().numpy()
    return choose_on_validation("f1", gt.astype(bool), prob)
