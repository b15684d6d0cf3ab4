"""SimSeq, the default model: scale-free similarity features of every transition, read by a
small bidirectional GRU over whole movies and by boosted trees, the two averaged in log-odds.

SimSeq reads, per transition and modality, cosines between the shots before and after at widths
``widths`` (to 64 shots: real scenes run to hundreds of shots) and the best shot-to-shot match
across the cut (camera set-ups that alternate within a scene) and the mean best match of each
shot across it (``match_widths``: how many shots find a partner), raw and per-movie standardised
(:mod:`sceneseg.data.simfeatures`), plus the logit of the dataset's shipped prediction with a flag
saying whether it is there. A GRU over crops of ``crop_len`` transitions (whole movies at
inference) learns what a boundary looks like in context. Training: AdamW, linear warm-up then
cosine decay, the epoch with the best validation AP kept, early stop after ``patience`` epochs
without gain; the shipped input is dropped at random (``shipped_dropout``), so the model also
works on movies without it. Then ``tree_iters`` gradient-boosted trees are fitted on the same
similarity columns of each transition and its ``tree_context`` neighbours, once with the shipped
input and once without, and kept as tensors (:mod:`sceneseg.models.simseq.trees`). How it compares with
the boosted and stacked references on realistic sets: ``bench/bench_models.py``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score
from torch import Tensor, nn

from sceneseg.config import check_choice, check_range
from sceneseg.evaluation.metrics import choose_threshold
from sceneseg.training.distributed import Dist
from sceneseg.models.base import (ModelKind, TrainData, Trained, check_class_weights, check_modalities,
                                  train_data_parallel)
from sceneseg.data.movies import Movie, missing_shipped
from sceneseg.models.simseq.trees import TreeEnsemble
from sceneseg.progress import progress as progress_bar
from sceneseg.data.featurecache import FeatureSpec, similarity
from sceneseg.data.simfeatures import zscore_columns
from sceneseg.models.lgss.training import seed_everything


@dataclass(frozen=True)
class SimSeqParams:
    """The ``simseq`` section of params.yaml."""

    modalities: list[str]
    widths: list[int]  # k of the window cosines
    cross_widths: list[int]  # k of the best shot-to-shot match across the cut
    use_shipped: bool  # read the dataset's shipped prediction when a movie has one
    shipped_dropout: float  # share of training crops that see no shipped prediction
    hidden: int
    dropout: float
    crop_len: int  # transitions per training crop
    lr: float  # used when train.lr is null
    weight_decay: float
    warmup_epochs: int
    class_weights: list[float]
    patience: int  # stop after this many epochs without a better validation AP; 0 = never
    match_widths: list[int] = field(default_factory=list)  # k of the mean best match across the cut
    tree_iters: int = 300  # boosted trees averaged with the GRU (log-odds); 0 = the GRU alone
    tree_lr: float = 0.1
    tree_context: int = 2  # the trees read the features of this many neighbouring transitions on each side
    temporal: str = "gru"  # gru (bidirectional GRU) | conv (residual dilated convolutions, parallel over time)
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])  # of the conv layers
    batch_size: int = 64  # crops per training step, used when train.batch_size is null


def n_base(cfg: dict) -> int:
    """Similarity columns per transition (before the z-scored copies and the shipped pair)."""
    return feature_spec(cfg).n_columns


def n_features(cfg: dict) -> int:
    return 2 * n_base(cfg) + 2


def tree_inputs(x: Tensor, cfg: dict) -> Tensor:
    """[L, F] transition features of one sequence (as :func:`movie_features` makes them) -> [L, C]
    the trees' inputs: the similarity columns of each transition and of ``tree_context`` neighbours
    on each side (repeated at the edges), then the shipped logit (NaN where there is none)."""
    f = x[:, : n_base(cfg)].double()  # [L, F0]
    k, length = int(cfg["trees"]["context"]), x.shape[0]
    t = torch.arange(length, device=x.device)
    cols = [f] + [f[(t + s).clamp(0, length - 1)] for s in range(-k, k + 1) if s]
    shipped = torch.where(x[:, -1] > 0.5, x[:, -2].double(), torch.full_like(f[:, 0], float("nan")))
    return torch.cat(cols + [shipped[:, None]], 1)


def feature_spec(cfg: dict) -> FeatureSpec:
    """The similarity features the model reads (the features stage computes them with simseq's params)."""
    return FeatureSpec(tuple(cfg["feature_dims"]), tuple(cfg["widths"]), tuple(cfg["cross_widths"]),
                       tuple(cfg.get("match_widths", ())))


def movie_features(movie: Movie, cfg: dict, with_shipped: bool) -> np.ndarray:
    """[N-1, F] float32: similarity features of every transition, raw and z-scored within the movie,
    then the shipped prediction and its flag (both 0 when absent or not used)."""
    f = similarity(movie, feature_spec(cfg))  # [T, F0]: the features stage's when it computed them
    shipped = np.zeros((f.shape[0], 2))
    if with_shipped and cfg["use_shipped"] and movie.baseline is not None:
        p = np.clip(np.asarray(movie.baseline, dtype=np.float64), 1e-4, 1 - 1e-4)
        shipped[:, 0], shipped[:, 1] = np.log(p / (1 - p)), 1.0  # its logit: the scale the net adds evidence on
    return np.concatenate([f, zscore_columns(f), shipped], 1).astype(np.float32)


class SimSeqNet(nn.Module):
    """[B, L, F] transition features -> [B, L] boundary logits."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        n_in, h = n_features(cfg), int(cfg["hidden"])
        self.register_buffer("mean", torch.zeros(n_in))  # feature standardisation (training transitions)
        self.register_buffer("std", torch.ones(n_in))
        self.inp = nn.Sequential(nn.Linear(n_in, h), nn.GELU(), nn.Dropout(float(cfg["dropout"])))
        self.local = nn.Conv1d(h, h, kernel_size=5, padding=2)  # neighbouring transitions
        self.temporal = cfg.get("temporal", "gru")
        if self.temporal == "gru":  # long context: a bidirectional GRU (sequential over time)
            self.gru = nn.GRU(h, h, batch_first=True, bidirectional=True)
        else:  # long context: residual dilated convolutions (parallel over time), receptive field 1 + 2 sum(d)
            self.dilated = nn.ModuleList(nn.Conv1d(h, h, kernel_size=3, padding=d, dilation=d)
                                         for d in cfg["dilations"])
        width = 2 * h if self.temporal == "gru" else h
        self.head = nn.Sequential(nn.Linear(width, h), nn.GELU(), nn.Dropout(float(cfg["dropout"])), nn.Linear(h, 1))
        self.skip = nn.Linear(2, 1)  # the shipped logit and its flag, straight to the output: evidence adds up

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # [B, L, F] -> [B, L]
        """``lengths`` [B]: real transitions per row of a zero-padded batch; the padding reaches no layer
        (zeroed before the convolution, as a movie's edge is at inference; left out of the GRU)."""
        z = (x - self.mean) / self.std  # [B, L, F]
        z = torch.cat([z[..., :-2], z[..., -2:-1] * x[..., -1:], x[..., -1:]], -1)  # no shipped input: 0, flag 0
        h = self.inp(z)  # [B, L, H]
        real = None
        if lengths is not None and not bool((lengths == x.shape[1]).all()):
            real = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # [B, L, 1]
            h = h * real
        h = h + F.gelu(self.local(h.transpose(1, 2))).transpose(1, 2)
        if self.temporal != "gru":
            c = h.transpose(1, 2)  # [B, H, L]
            for conv in self.dilated:  # padding zeroed before each layer: a movie's edge, as at inference
                c = c + F.gelu(conv(c if real is None else c * real.transpose(1, 2)))
            return (self.head(c.transpose(1, 2)) + self.skip(z[..., -2:])).squeeze(-1)
        if real is None:
            g, _ = self.gru(h)  # [B, L, 2H]
        else:
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            g, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.shape[1])
        return (self.head(g) + self.skip(z[..., -2:])).squeeze(-1)


class SimSeqTrees(nn.Module):
    """The GRU network and boosted trees on the same transition features, averaged in log-odds.

    The trees come in two fits: with the shipped prediction and without it (``bare``); a
    movie is read by the one that matches its input."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = SimSeqNet(cfg)
        self.trees = TreeEnsemble(*cfg["trees"]["shape"])
        self.bare = TreeEnsemble(*cfg["trees"]["bare_shape"])

    def tree_logits(self, x: Tensor) -> Tensor:  # [L, F] -> [L]
        tx = tree_inputs(x, self.cfg)
        if x[0, -1] > 0.5:  # a movie's flag is the same on every transition
            return self.trees(tx)
        return self.bare(tx[:, :-1])

    def forward(self, x: Tensor) -> Tensor:  # [B, L, F] -> [B, L]
        trees = torch.stack([self.tree_logits(row) for row in x]).to(x.dtype)  # [B, L]
        return 0.5 * (self.net(x) + trees)


def _weighted_bce(logits: Tensor, y: Tensor, mask: Tensor, class_weights: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Sum of class-weighted BCE over ``mask`` and the sum of the weights (a weighted mean is their ratio)."""
    w = torch.where(y > 0.5, class_weights[1], class_weights[0]) * mask
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (loss * w).sum(), w.sum()


def _sharded_backward(net: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, mask: Tensor,
                      cw: tuple[float, float], dist: Dist, lengths: Tensor | None = None) -> tuple[float, float]:
    """Gradients of the global batch's weighted mean loss, from this rank's rows (maybe none) and
    the other ranks'; returns the global (weighted loss sum, weight sum)."""
    opt.zero_grad(set_to_none=True)
    if len(x):
        s, w = _weighted_bce(net(x, lengths), y, mask, cw)
        total, norm = dist.sum(s.item(), w.item())
        (s / max(norm, 1e-12)).backward()
    else:  # fewer crops than ranks in the last batch: this rank only joins the sums
        total, norm = dist.sum(0.0, 0.0)
    dist.sum_grads(net.parameters())
    return total, norm


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
    many times fewer sequential GRU steps); the averaged model reads one movie at a time."""
    net.eval()
    if not isinstance(net, SimSeqNet):
        return [net(x[None])[0] for x in s.x]
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


def _loss_and_ap(net: SimSeqNet, s: _Set, class_weights) -> tuple[float, float, dict, dict]:
    """Weighted loss and pooled AP over the masked transitions; per-movie labels and probabilities there."""
    total, norm = 0.0, 0.0
    gt, prob = {}, {}
    for k, (i, logit) in enumerate(zip(s.ids, _logits(net, s))):
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


def _add_trees(net: SimSeqNet, cfg: dict, tr: _Set, p: SimSeqParams, seed: int) -> tuple[SimSeqTrees, dict]:
    """Fit the boosted trees on the training transitions (with the shipped input when every training
    movie has it, and without) and return the averaged model with its config."""
    cfg = {**cfg, "trees": {"context": int(p.tree_context)}}
    with torch.no_grad():
        x = torch.cat([tree_inputs(xm, cfg)[mk.bool()] for xm, mk in zip(tr.x, tr.mask)]).cpu().numpy()  # [K, C]
    y = torch.cat([ym[mk.bool()] for ym, mk in zip(tr.y, tr.mask)]).cpu().numpy() > 0.5

    def fit(cols: np.ndarray) -> TreeEnsemble:
        clf = HistGradientBoostingClassifier(max_iter=p.tree_iters, learning_rate=p.tree_lr, early_stopping=False,
                                             random_state=seed)
        return TreeEnsemble.from_classifier(clf.fit(cols, y))

    print(f"train: fitting {p.tree_iters} boosted trees on {len(y)} training transitions", flush=True)
    bare = fit(x[:, :-1])
    trees = fit(x) if not np.isnan(x[:, -1]).any() else bare  # no shipped input in training: the bare fit
    cfg["trees"]["shape"], cfg["trees"]["bare_shape"] = list(trees.feature.shape), list(bare.feature.shape)
    model = SimSeqTrees(cfg).to(net.mean.device)
    model.net.load_state_dict(net.state_dict())
    model.trees.load_state_dict(trees.state_dict())
    model.bare.load_state_dict(bare.state_dict())
    return model.eval(), cfg


def _threshold(gt: dict, prob: dict, metric: str, val_movies: list[Movie]) -> float:
    """Chosen on the validation transitions only, like LGSS's (:mod:`sceneseg.training.threshold`)."""
    if metric == "fixed":
        return 0.5
    if metric == "miou":  # whole validation movies (split.val_by: movie)
        ends = {m.imdb_id: np.asarray(m.shot_end_frame) for m in val_movies}
        return float(choose_threshold(gt, prob, metric="miou", shot_end_frame=ends))
    return float(choose_threshold(np.concatenate(list(gt.values())), np.concatenate(list(prob.values())), "f1"))


class SimSeqKind(ModelKind):
    name = "simseq"
    Params = SimSeqParams

    @staticmethod
    def validate_params(p: SimSeqParams, section: str) -> None:
        check_modalities(f"{section}.modalities", p.modalities)
        for key in ("widths", "cross_widths", "match_widths"):
            ks = getattr(p, key)
            if (not ks and key != "match_widths") or len(set(ks)) != len(ks) or min(ks, default=1) < 1 \
                    or max(ks, default=1) > 256:
                raise ValueError(f"params key '{section}.{key}': expected distinct widths in [1, 256], found {ks}")
        check_range(f"{section}.shipped_dropout", p.shipped_dropout, 0, 1)
        check_range(f"{section}.hidden", p.hidden, 1, 4096)
        check_choice(f"{section}.temporal", p.temporal, ("gru", "conv"))
        if not p.dilations or len(set(p.dilations)) != len(p.dilations) or min(p.dilations) < 1 \
                or max(p.dilations) > 4096:
            raise ValueError(f"params key '{section}.dilations': expected distinct dilations in [1, 4096], "
                             f"found {p.dilations}")
        check_range(f"{section}.dropout", p.dropout, 0, 1, hi_open=True)
        check_range(f"{section}.crop_len", p.crop_len, 2, 1_000_000)
        check_range(f"{section}.lr", p.lr, 0, 10, lo_open=True)
        check_range(f"{section}.batch_size", p.batch_size, 1, 1_000_000)
        check_range(f"{section}.weight_decay", p.weight_decay, 0, 10)
        check_range(f"{section}.warmup_epochs", p.warmup_epochs, 0, 10_000)
        check_class_weights(f"{section}.class_weights", p.class_weights)
        check_range(f"{section}.patience", p.patience, 0, 10_000)
        check_range(f"{section}.tree_iters", p.tree_iters, 0, 100_000)
        check_range(f"{section}.tree_lr", p.tree_lr, 0, 10, lo_open=True)
        check_range(f"{section}.tree_context", p.tree_context, 0, 64)

    def train(self, data: TrainData, p: SimSeqParams, common, device: torch.device, on_epoch=None,
              progress: bool = True, resume=None) -> Trained:
        if common.world_size == 1:
            return _train(data, p, common, device, on_epoch, progress, resume)
        return train_data_parallel(_train, data, p, common, device, on_epoch, progress, resume)

    def build(self, config: dict) -> nn.Module:
        return SimSeqTrees(config) if config.get("trees") else SimSeqNet(config)

    def feature_dims(self, config: dict) -> dict[str, int]:
        return dict(config["feature_dims"])

    def predict(self, model: SimSeqNet, config: dict, movies: list[Movie], device: torch.device,
                batch_size: int, with_shipped: bool = True) -> dict[str, np.ndarray]:
        model.eval()
        out = {}
        with torch.no_grad():
            for m in movies:  # one whole movie at a time: the GRU sees all of it
                x = torch.from_numpy(movie_features(m, config, with_shipped)).to(device)
                out[m.imdb_id] = torch.sigmoid(model(x[None]))[0].double().cpu().numpy()
        return out

    def inputs_used(self, config: dict, movie: Movie) -> list[str]:
        used = list(config["feature_dims"])
        if config["use_shipped"] and movie.baseline is not None:
            used.append("shipped prediction")
        return used


def _train(data: TrainData, p: SimSeqParams, common, device: torch.device, on_epoch, progress: bool, resume,
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
    dims = {m: int(train_movies[0].features[m].shape[1]) for m in p.modalities}
    absent = missing_shipped(train_movies + data.movies("val") + data.movies("test"))
    if p.use_shipped and absent:  # read only when every movie has it: all movies are read alike
        print(f"train: {absent}: simseq reads the features alone")
    cfg = {"feature_dims": dims, "widths": list(p.widths), "cross_widths": list(p.cross_widths),
           "match_widths": list(p.match_widths), "use_shipped": p.use_shipped and not absent, "hidden": p.hidden,
           "dropout": p.dropout, "temporal": p.temporal, "dilations": list(p.dilations)}
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
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=p.weight_decay)
    rng = np.random.default_rng(common.seed)
    n_batches = math.ceil(len(_crops(tr.n_trans, p.crop_len, np.random.default_rng(0))) / batch_size)
    total_steps, warm = common.epochs * n_batches, p.warmup_epochs * n_batches

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    train_loss, val_loss, val_ap = [], [], []
    best_state, best_epoch = None, 0
    start, objects, generators = 0, {"net": net, "optimizer": opt, "schedule": sched}, {"crops": rng}
    if resume and (done := resume.restore(objects, generators, common.epochs, dist)):
        h = done.history
        train_loss, val_loss, val_ap, best_state, best_epoch = (h[k] for k in (
            "train_loss", "val_loss", "val_ap", "best_state", "best_epoch"))
        start, t0 = common.epochs if done.last else done.epoch, t0 - h["seconds"]
        for e in range(done.epoch if on_epoch else 0):
            on_epoch(e + 1, {"train": train_loss[e], "val": val_loss[e], "val_ap": val_ap[e]})
    bar = progress_bar(total=common.epochs, initial=start, desc="train simseq", unit="epoch", disable=not progress)
    t_epochs = time.perf_counter()
    for epoch in range(start, common.epochs):
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
                s, w = _sharded_backward(net, opt, x, y, mask, cw, dist, lengths)
            opt.step()
            sched.step()
            total, norm = total + s, norm + w
        train_loss.append(total / max(norm, 1e-12))
        try:
            if not math.isfinite(train_loss[-1]):
                raise ValueError(f"the training loss is {train_loss[-1]}")
            vl, ap, _, _ = _loss_and_ap(net, va, cw)
        except ValueError as e:  # NaN / inf: one sentence instead of scikit-learn's "Input contains NaN"
            raise ValueError(f"training diverged in epoch {epoch + 1}: {e} (learning rate {lr} is likely too high: "
                             f"try a smaller train.lr or simseq.lr)") from None
        val_loss.append(vl)
        val_ap.append(ap)
        if best_state is None or ap > max(val_ap[:-1]):
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best_epoch = epoch + 1
        bar.update(1)
        bar.set_postfix(train=f"{train_loss[-1]:.4f}", val=f"{vl:.4f}", val_ap=f"{ap:.3f}")
        if on_epoch:
            on_epoch(epoch + 1, {"train": train_loss[-1], "val": vl, "val_ap": ap})
        stop = bool(p.patience) and epoch + 1 - best_epoch >= p.patience
        if resume:  # every rank: each one's generators are saved
            resume.save(epoch + 1, objects, generators, {
                "train_loss": train_loss, "val_loss": val_loss, "val_ap": val_ap, "best_state": best_state,
                "best_epoch": best_epoch, "seconds": time.perf_counter() - t0},
                last=stop or epoch + 1 == common.epochs, dist=dist)
        if stop:
            bar.write(f"train: no better validation AP for {p.patience} epochs: stopping after epoch {epoch + 1}")
            break
    bar.close()
    if dist is not None and dist.rank != 0:
        return None
    ran = len(train_loss) - start
    if ran:
        seconds = time.perf_counter() - t_epochs
        print(f"train: {ran} epochs in {seconds:.1f} s ({seconds / ran:.2f} s per epoch, validation included)")
    net.load_state_dict(best_state)
    print(f"train: keeping the weights of epoch {best_epoch} (best validation AP {val_ap[best_epoch - 1]:.4f})")
    if p.tree_iters:
        t_trees = time.perf_counter()
        net, cfg = _add_trees(net, cfg, tr, p, common.seed)
        print(f"train: trees fitted in {time.perf_counter() - t_trees:.1f} s")
    _, _, gt, prob = _loss_and_ap(net, va, cw)
    threshold = _threshold(gt, prob, common.threshold_metric, data.movies("val"))
    test_loss = _loss_and_ap(net, te, cw)[0]
    net.eval()
    return Trained(net, cfg, threshold, train_loss, val_loss, best_epoch, test_loss,
                   time.perf_counter() - t0, int(sum(m.sum().item() for m in tr.mask)),
                   extra={"val_ap": val_ap[best_epoch - 1]})
