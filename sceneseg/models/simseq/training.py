"""SimSeq's training loop: crops of whole movies, AdamW with linear warm-up and cosine decay, the
epoch with the best validation AP kept, early stop, then the boosted trees fitted on the same
features; the threshold chosen on validation (:mod:`sceneseg.training.threshold`)."""

from __future__ import annotations

import copy
import math
import threading
import time
import warnings

import lightgbm as lgb
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch import Tensor, nn

from sceneseg.data.movies import Movie, missing_shipped, present_modalities
from sceneseg.models.base import TrainData, Trained
from sceneseg.models.simseq.features import movie_features, tree_inputs
from sceneseg.models.simseq.network import SimSeqNet, SimSeqTrees, sharpened
from sceneseg.models.simseq.params import SimSeqParams
from sceneseg.models.simseq.trees import TreeEnsemble
from sceneseg.progress import progress as progress_bar
from sceneseg.training.distributed import Dist, sharded_backward
from sceneseg.training.loop import resume_or_start, seed_everything
from sceneseg.training.threshold import choose_on_validation


def _weighted_bce(logits: Tensor, y: Tensor, mask: Tensor, class_weights: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Sum of class-weighted BCE over ``mask`` and the sum of the weights (a weighted mean is their ratio)."""
    w = torch.where(y > 0.5, class_weights[1], class_weights[0]) * mask
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (loss * w).sum(), w.sum()


def _crops(n_trans: np.ndarray, crop_len: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(movie, start, stop) crops tiling every movie from a random phase."""
    out = []
    for i, t in enumerate(n_trans.tolist()):
        if t <= crop_len:
            out.append((i, 0, t))
            continue
        phase = int(rng.integers(crop_len))
        starts = np.unique(np.clip(np.arange(phase - crop_len, t, crop_len), 0, t - crop_len))
        out += [(i, int(s), int(s) + crop_len) for s in starts]
    return out


class _Set:
    """Features, labels and loss masks of a list of movies, as tensors on the device."""

    def __init__(self, movies: list[Movie], masks: dict[str, np.ndarray] | None, cfg: dict, device: torch.device,
                 with_shipped: bool = True):
        self.ids = [m.imdb_id for m in movies]
        self.x = [torch.from_numpy(movie_features(m, cfg, with_shipped)).to(device) for m in movies]
        self.y = [torch.from_numpy(np.asarray(m.boundary, dtype=np.float32)).to(device) for m in movies]
        self.n_trans = np.array([len(y) for y in self.y])
        self.mask = self._mask_tensors(masks)

    def _mask_tensors(self, masks: dict[str, np.ndarray] | None) -> list[Tensor]:
        return [torch.from_numpy((masks[i] if masks else np.ones(len(y), bool)).astype(np.float32)).to(y.device)
                for i, y in zip(self.ids, self.y)]

    def with_masks(self, masks: dict[str, np.ndarray] | None) -> _Set:
        """The same movies (features shared, not recomputed) with other loss masks (None: all transitions)."""
        other = copy.copy(self)
        other.mask = self._mask_tensors(masks)
        return other


@torch.no_grad()
def _logits(net: SimSeqNet | SimSeqTrees, s: _Set, batch_transitions: int = 1 << 16) -> list[Tensor]:
    """Logits [N-1] of every transition of each movie, whole movies at once.

    The network alone reads movies of similar length together, zero-padded to the longest and packed
    (the padding reaches no layer: the same logits as one movie at a time, to float rounding, and
    many times fewer sequential GRU steps); the averaged model adds its trees' logits movie by movie
    (:meth:`SimSeqTrees.forward` on one movie, to float rounding)."""
    net.eval()
    if not isinstance(net, SimSeqNet):  # the averaged model: its network's batched logits, its trees per movie
        return [0.5 * (g + net.tree_logits(x).to(g.dtype)) for g, x in zip(_logits(net.net, s, batch_transitions), s.x)]
    out: list[Tensor | None] = [None] * len(s.x)
    order = sorted(range(len(s.x)), key=lambda i: -len(s.x[i]))  # longest first: little padding per batch
    while order:
        n = max(1, batch_transitions // len(s.x[order[0]]))
        group, order = order[:n], order[n:]
        lengths = torch.tensor([len(s.x[i]) for i in group], device=s.x[0].device)
        logits = net(nn.utils.rnn.pad_sequence([s.x[i] for i in group], batch_first=True), lengths)
        for r, i in enumerate(group):
            out[i] = logits[r, : len(s.x[i])]
    return out


def _loss_and_ap(net: SimSeqNet, s: _Set, class_weights, sharpen: float = 0.0) -> tuple[float, float, dict, dict]:
    """Weighted loss and pooled AP over the masked transitions; per-movie labels and probabilities there
    (the logits :func:`sharpened` by ``sharpen`` first, as the final model's predictions are)."""
    total, norm = 0.0, 0.0
    gt, prob = {}, {}
    for k, (i, logit) in enumerate(zip(s.ids, _logits(net, s))):
        logit = sharpened(logit, sharpen)
        if not bool(torch.isfinite(logit).all()):
            raise ValueError(f"the model's outputs on movie {i} are not finite")
        a, b = _weighted_bce(logit, s.y[k], s.mask[k], class_weights)
        total, norm = total + a.item(), norm + b.item()
        sel = s.mask[k].bool().cpu().numpy()
        gt[i] = s.y[k].cpu().numpy()[sel].astype(bool)
        prob[i] = torch.sigmoid(logit).double().cpu().numpy()[sel]  # as predict() computes it
    pooled_gt = np.concatenate(list(gt.values()))
    ap = float(average_precision_score(pooled_gt, np.concatenate(list(prob.values())))) if pooled_gt.any() else 0.0
    return total / max(norm, 1e-12), ap, gt, prob


def tree_params(p: SimSeqParams, seed: int) -> dict:
    """LightGBM's settings for simseq's trees (thread count aside): binary log-loss, ``simseq.tree_lr``,
    ``simseq.tree_leaves`` and ``simseq.tree_bins``, at least 20 transitions per leaf; each feature's
    histogram built on one thread (``force_col_wise``), so the trees do not depend on the thread count."""
    return {"objective": "binary", "learning_rate": p.tree_lr, "num_leaves": p.tree_leaves, "max_bin": p.tree_bins,
            "min_child_samples": 20, "seed": seed, "deterministic": True, "force_col_wise": True, "verbose": -1}


def bare_fits(p: SimSeqParams, seed: int) -> list[dict]:
    """The changes to :func:`tree_params` of each fit without the shipped input: ``simseq.bare_tree_fits``
    fits, each tree on its own random ``bare_tree_features`` share of the columns, the draws seeded
    by the training seed; the fits are averaged."""
    k = p.bare_tree_fits
    return [{"feature_fraction": p.bare_tree_features, "feature_fraction_seed": seed * k + i} for i in range(k)]


class _TreeFit:
    """The boosted trees (LightGBM), fitted on the training transitions in a thread beside the network's epochs.

    The trees read only the features, never the network, so they need not wait for it, and
    LightGBM's boosting rounds run outside the GIL. Without the shipped input (``bare``):
    ``simseq.bare_tree_fits`` fits whose trees each read a random ``bare_tree_features`` share of the
    columns, averaged (on validation the average beat one fit on all columns, which LightGBM fits
    worse than scikit-learn did: bench/RESULTS_models.md); then with it (when every training movie
    has it), one fit on all columns. While a network trains
    on the CPU (on one torch thread: its small per-time-step products gain nothing from a second)
    the fit takes the process's other threads (at least one); :meth:`all_threads` gives it all of
    them once the epochs are done. The trees do not depend on that: LightGBM builds each feature's
    histogram on one thread (``force_col_wise``), so any thread count, changed at any round, fits the
    same trees (tested). :meth:`result` waits and re-raises the fit's error."""

    def __init__(self, cfg: dict, tr: _Set, p: SimSeqParams, seed: int, beside_cpu_network: bool = False) -> None:
        self.cfg = {**cfg, "trees": {"context": int(p.tree_context)}}
        with torch.no_grad():
            x = torch.cat([tree_inputs(xm, self.cfg)[mk.bool()] for xm, mk in zip(tr.x, tr.mask)]).cpu().numpy()
        y = torch.cat([ym[mk.bool()] for ym, mk in zip(tr.y, tr.mask)]).cpu().numpy() > 0.5
        self.seconds, self._out, self._error = 0.0, None, None
        self.threads = torch.get_num_threads()  # the process's
        self.wanted = max(1, self.threads - 1) if beside_cpu_network else self.threads
        self.shipped = not np.isnan(x[:, -1]).any()  # every training movie has it: the trees with it are fitted too
        fits = f"{p.bare_tree_fits} x {p.tree_iters}" + (f" + {p.tree_iters}" if self.shipped else "")
        print(f"train: fitting {fits} boosted trees on {len(y)} training transitions beside the network "
              f"({self.wanted} thread{'s' * (self.wanted > 1)}"
              f"{f', {self.threads} after the epochs' if self.wanted < self.threads else ''})", flush=True)
        self._thread = threading.Thread(target=self._run, args=(x, y, p, seed), daemon=True)
        self._thread.start()

    def all_threads(self) -> None:
        """The network is done: the rounds left take all the process's threads."""
        self.wanted = self.threads

    def _run(self, x: np.ndarray, y: np.ndarray, p: SimSeqParams, seed: int) -> None:
        t0 = time.perf_counter()
        try:
            params = tree_params(p, seed)
            label = y.astype(np.float64)

            def dataset(cols: np.ndarray) -> lgb.Dataset:
                return lgb.Dataset(cols, label=label, params={**params, "num_threads": self.wanted}, free_raw_data=False)

            def fit(data: lgb.Dataset, **changes) -> lgb.Booster:
                using = [self.wanted]

                def threads(env) -> None:  # before each round: all threads once the epochs are done
                    if self.wanted != using[0]:
                        using[0] = self.wanted
                        env.model.reset_parameter({"num_threads": using[0]})

                threads.before_iteration = True
                return lgb.train({**params, **changes, "num_threads": using[0]}, data, num_boost_round=p.tree_iters,
                                 callbacks=[threads])

            data = dataset(x[:, :-1])
            bare = TreeEnsemble.from_boosters([fit(data, **changes) for changes in bare_fits(p, seed)])
            trees = bare  # no shipped input: bare
            if self.shipped:  # the same binned columns and the shipped one: binned once, not twice
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Resetting categorical features")  # there are none
                    data.add_features_from(dataset(x[:, -1:]).construct())
                trees = TreeEnsemble.from_booster(fit(data))
            self._out = (trees, bare)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread by result()
            self._error = e
        self.seconds = time.perf_counter() - t0

    def result(self, net: SimSeqNet) -> tuple[SimSeqTrees, dict]:
        """The averaged model (``net``'s weights and the trees) and its config, once the fit is done."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        trees, bare = self._out
        cfg = {**self.cfg, "trees": {**self.cfg["trees"], "shape": list(trees.feature.shape),
                                     "bare_shape": list(bare.feature.shape)}}
        model = SimSeqTrees(cfg).to(net.mean.device)
        model.net.load_state_dict(net.state_dict())
        model.trees.load_state_dict(trees.state_dict())
        model.bare.load_state_dict(bare.state_dict())
        return model.eval(), cfg


def train(data: TrainData, p: SimSeqParams, common, device: torch.device, on_epoch, progress: bool, resume,
           dist: Dist | None = None) -> Trained | None:
    """SimSeq on ``data``; with ``dist`` (data-parallel), this rank's part, and the result on rank 0 only.

    Data-parallel: every rank draws the same crops, batches and shipped-input dropout (same seed)
    and computes its shard of each global batch of ``simseq.batch_size`` crops, padded to the whole
    batch's length; the weighted loss is divided by the whole batch's weight sum and gradients are
    summed over the ranks, so a step is the one-process step (exactly so with ``dropout: 0``; the
    dropout masks come from each rank's own generator). Validation runs on every rank (the
    same weights, the same early stop); rank 0 saves the resume state, with every rank's generators.
    """
    t0 = time.perf_counter()
    train_movies = data.movies("train")
    used, note = present_modalities(p.modalities, train_movies + data.movies("val") + data.movies("test"),
                                    "simseq.modalities")
    if note and (dist is None or dist.rank == 0):  # e.g. movies made from videos have no cast
        print(f"train: {note}")
    dims = {m: int(train_movies[0].features[m].shape[1]) for m in used}
    absent = missing_shipped(train_movies + data.movies("val") + data.movies("test"))
    if p.use_shipped and absent:  # read only when every movie has it: all movies are read alike
        print(f"train: {absent}: simseq reads the features alone")
    cfg = {"feature_dims": dims, "widths": list(p.widths), "cross_widths": list(p.cross_widths),
           "match_widths": list(p.match_widths), "use_shipped": p.use_shipped and not absent, "hidden": p.hidden,
           "dropout": p.dropout, "temporal": p.temporal, "dilations": list(p.dilations), "sharpen": p.sharpen}
    whole_val = data.windows["val"].movie_ids != data.windows["train"].movie_ids
    tr = _Set(train_movies, data.owned("train"), cfg, device)
    # window protocol: the val transitions lie in the train movies, whose features are computed once
    va = _Set(data.movies("val"), None, cfg, device) if whole_val else tr.with_masks(data.owned("val"))
    te = _Set(data.movies("test"), None, cfg, device)
    cw = (float(p.class_weights[0]), float(p.class_weights[1]))

    seed_everything(common.seed)
    net = SimSeqNet(cfg).to(device)
    if dist is not None and dist.rank > 0:  # the same initial weights, other dropout masks
        torch.manual_seed(common.seed + dist.rank)
    seen = torch.cat([x[m.bool()] for x, m in zip(tr.x, tr.mask)])  # [K, F] training transitions
    net.mean[:-2].copy_(seen[:, :-2].mean(0))
    net.std[:-2].copy_(seen[:, :-2].std(0).clamp_min(1e-3))
    has = seen[:, -1] > 0.5  # the shipped logit is standardised over the transitions that have it
    if has.sum() > 1:
        net.mean[-2], net.std[-2] = seen[has, -2].mean(), seen[has, -2].std().clamp_min(1e-3)
    lr = common.lr if common.lr is not None else p.lr
    batch_size = common.batch_size or p.batch_size
    epochs = common.epochs or p.epochs
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=p.weight_decay)
    rng = np.random.default_rng(common.seed)
    n_batches = math.ceil(len(_crops(tr.n_trans, p.crop_len, np.random.default_rng(0))) / batch_size)
    total_steps, warm = epochs * n_batches, p.warmup_epochs * n_batches

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    objects, generators = {"net": net, "optimizer": opt, "schedule": sched}, {"crops": rng}
    log, start, spent = resume_or_start(resume, objects, generators, epochs, dist, on_epoch)
    t0 -= spent
    bar = progress_bar(total=epochs, initial=start, desc="train simseq", unit="epoch", disable=not progress)
    # rank 0 fits the trees beside the epochs (the other ranks return no model)
    on_cpu = device.type == "cpu"
    tree_fit = (_TreeFit(cfg, tr, p, common.seed, beside_cpu_network=on_cpu)
                if p.tree_iters and (dist is None or dist.rank == 0) else None)
    threads = torch.get_num_threads()
    if tree_fit is not None and on_cpu:  # the network on one torch thread beside the fit (_TreeFit)
        torch.set_num_threads(1)
    t_epochs, ran = time.perf_counter(), 0  # epochs trained by this call (after a resume: those left)
    try:  # the threads come back however the epochs end (a diverged run raises)
        for epoch in range(start, epochs):
            ran += 1
            net.train()
            crops = _crops(tr.n_trans, p.crop_len, rng)
            order = rng.permutation(len(crops))
            total, norm = 0.0, 0.0
            for lo in range(0, len(order), batch_size):
                batch = [crops[j] for j in order[lo:lo + batch_size]]
                length = max(b - a for _, a, b in batch)  # of the whole batch, on every rank
                rows = np.arange(len(batch)) if dist is None else dist.shard(np.arange(len(batch)))
                x = torch.zeros(len(rows), length, tr.x[0].shape[1], device=device)  # [B, L, F]
                y = torch.zeros(len(rows), length, device=device)
                mask = torch.zeros(len(rows), length, device=device)
                lengths = torch.tensor([batch[j][2] - batch[j][1] for j in rows], dtype=torch.long, device=device)
                for r, j in enumerate(rows):
                    i, a, b = batch[j]
                    x[r, : b - a], y[r, : b - a], mask[r, : b - a] = tr.x[i][a:b], tr.y[i][a:b], tr.mask[i][a:b]
                drop = torch.from_numpy((rng.random(len(batch)) < p.shipped_dropout)[rows]).to(device)
                x[drop, :, -2:] = 0.0  # no shipped prediction for these crops
                if dist is None:
                    s, w = _weighted_bce(net(x, lengths), y, mask, cw)
                    loss = s / w.clamp_min(1e-12)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    s, w = s.item(), w.item()
                else:
                    s, w = sharded_backward(lambda: _weighted_bce(net(x, lengths), y, mask, cw), len(x) > 0, opt,
                                            net.parameters(), dist)
                opt.step()
                sched.step()
                total, norm = total + s, norm + w
            tl = total / max(norm, 1e-12)
            try:
                if not math.isfinite(tl):
                    raise ValueError(f"the training loss is {tl}")
                vl, ap, _, _ = _loss_and_ap(net, va, cw)
            except ValueError as e:  # NaN / inf: one sentence instead of scikit-learn's "Input contains NaN"
                raise ValueError(f"training diverged in epoch {epoch + 1}: {e} (learning rate {lr} is likely too high: "
                                 f"try a smaller train.lr or simseq.lr)") from None
            done = log.add(tl, vl, ap)
            if log.best_state is None or ap > max(log.val_ap[:-1]):
                log.keep(net)
            bar.update(1)
            bar.set_postfix(train=f"{tl:.4f}", val=f"{vl:.4f}", val_ap=f"{ap:.3f}")
            if on_epoch:
                on_epoch(epoch + 1, done)
            stop = log.stale(p.patience)
            if resume:  # every rank: each one's generators are saved
                resume.save(epoch + 1, objects, generators, log.state(time.perf_counter() - t0),
                            last=stop or epoch + 1 == epochs, dist=dist)
            if stop:
                bar.write(f"train: no better validation AP for {p.patience} epochs: stopping after epoch {epoch + 1}")
                break
    finally:
        bar.close()
        torch.set_num_threads(threads)
        if tree_fit is not None:
            tree_fit.all_threads()
    if dist is not None and dist.rank != 0:
        return None
    if ran:
        seconds = time.perf_counter() - t_epochs
        print(f"train: {ran} epochs in {seconds:.1f} s ({seconds / ran:.2f} s per epoch, validation included)")
    net.load_state_dict(log.best_state)
    best_epoch = log.best_epoch
    print(f"train: keeping the weights of epoch {best_epoch} (best validation AP {log.val_ap[best_epoch - 1]:.4f})")
    if tree_fit is not None:
        t_wait = time.perf_counter()
        net, cfg = tree_fit.result(net)
        print(f"train: trees fitted in {tree_fit.seconds:.1f} s beside the network "
              f"(waited {time.perf_counter() - t_wait:.1f} s for them after the epochs)")
    # the epochs were chosen on the network's own logits; the final model's are sharpened
    _, _, gt, prob = _loss_and_ap(net, va, cw, p.sharpen)
    ends = {m.imdb_id: np.asarray(m.shot_end_frame) for m in data.movies("val")}  # Miou: whole val movies
    threshold = choose_on_validation(common.threshold_metric, gt, prob, ends)
    test_loss = _loss_and_ap(net, te, cw, p.sharpen)[0]
    net.eval()
    return Trained(net, cfg, threshold, log.train_loss, log.val_loss, best_epoch, test_loss,
                   time.perf_counter() - t0, int(sum(m.sum().item() for m in tr.mask)),
                   extra={"val_ap": log.val_ap[best_epoch - 1]})
