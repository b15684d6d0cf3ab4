"""LGSS (Rao et al. 2020): per-modality boundary networks + BiLSTM, fused by a weighted sum of logits.

For every transition a modality's boundary network sees ``shot_num`` shots (half before, half
after), ``x: [K, D]``, and computes

- relation: ``Conv2d(1, C, (K, 1))`` then max over the C channels -> D values,
  ``r[d] = max_c (sum_k W[c, k] x[k, d] + b[c])``;
- difference: one ``Conv2d(1, C, (K/2, 1))`` applied to each half, ``a[c, :]`` and ``b[c, :]``,
  then ``F.cosine_similarity(a[c], b[c])`` along D -> C values.

A BiLSTM runs over the ``seq_len`` transitions of a window, then fc -> ReLU -> fc gives 2 logits.

Two forms with identical parameters (state_dicts are interchangeable):

- ``fast=False``: the literal form. It materialises ``[B*S, C, D]`` per modality (512 x 2048
  floats per transition for place), slow on CPU.
- ``fast=True`` (default): the same function without that tensor.
  The difference branch only needs dot products of the inputs: with the augmented Gram matrix
  ``G`` of ``[x_0 .. x_{K-1}, 1]`` over D (``[K+1, K+1]`` per transition),
  ``<a_c, b_c> = u_c^T G v_c``, ``|a_c|^2 = u_c^T G u_c``, ``|b_c|^2 = v_c^T G v_c`` with
  ``u_c = [w_c, 0, b_c]``, ``v_c = [0, w_c, b_c]``; autograd differentiates that.
  The relation branch streams cache-sized row chunks through ``addmm`` + ``amax`` and a custom
  autograd Function keeps only the winning channel per (transition, d) for the backward.

Precision: the boundary network always runs with autocast disabled in the parameters' dtype
(float32 for a normal model), so the channel max never runs in bf16/fp16, and the Gram matrices,
quadratic forms and norms of the difference branch run in float64 (float32 on MPS, which has no
float64): in float32 they cancel for similar consecutive shots (~1e-4 error in a cosine, against
~4e-6 for the literal form). The LSTM and fc layers follow the caller's autocast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_FUSION_WEIGHTS: dict[str, float] = {"place": 0.5, "cast": 0.2, "action": 0.2, "audio": 0.1}
COSINE_EPS = 1e-8  # F.cosine_similarity's default eps
# Elements of one [rows, C] chunk in the relation branch: 2 MiB of float32 fits the L2 cache of
# this CPU; on an accelerator big chunks just mean fewer kernel launches.
_CHUNK_ELEMENTS = {"cpu": 1 << 19}
_CHUNK_ELEMENTS_ACCELERATOR = 1 << 26


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an LGSS model; stored in checkpoints so loading needs no training config."""

    feature_dims: dict[str, int]  # modality -> D; the modalities used, in order
    fusion_weights: dict[str, float]  # modality -> weight of its logits in the fused sum
    shot_num: int = 4  # shots seen per transition, half before and half after
    sim_channel: int = 512  # C: conv channels of both branches
    lstm_hidden: int = 512
    fc_hidden: int = 100
    # modality -> factor applied to its features before the boundary network (1/RMS of the
    # training shots, set by training): raw features range from ~0.04 (cast) to ~8 (audio) in
    # scale, and unscaled ones stall Adam at lr 1e-2. Scaling keeps zero (faceless) shots zero.
    input_scale: dict[str, float] | None = None

    def __post_init__(self) -> None:
        dims, weights = self.feature_dims, self.fusion_weights
        if not isinstance(dims, dict) or not dims:
            raise ValueError(f"model.feature_dims: expected a non-empty mapping modality -> dim, got {dims!r}")
        for name, dim in dims.items():
            if not isinstance(name, str) or not _is_int(dim) or dim < 1:
                raise ValueError(f"model.feature_dims: expected str -> positive int, got {name!r}: {dim!r}")
        if not isinstance(weights, dict) or list(weights) != list(dims):
            found = list(weights) if isinstance(weights, dict) else weights
            raise ValueError(f"model.fusion_weights: expected the keys {list(dims)} (in that order), got {found!r}")
        for name, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"model.fusion_weights.{name}: expected a finite number, got {w!r}")
        if not _is_int(self.shot_num) or self.shot_num < 2 or self.shot_num % 2:
            raise ValueError(f"model.shot_num: expected an even int >= 2, got {self.shot_num!r}")
        for key in ("sim_channel", "lstm_hidden", "fc_hidden"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                raise ValueError(f"model.{key}: expected a positive int, got {value!r}")
        scale = self.input_scale if self.input_scale is not None else {k: 1.0 for k in dims}
        if not isinstance(scale, dict) or list(scale) != list(dims):
            raise ValueError(f"model.input_scale: expected the keys {list(dims)} (in that order), got {scale!r}")
        for name, v in scale.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"model.input_scale.{name}: expected a finite positive number, got {v!r}")
        # Own copies, so mutating the caller's dicts cannot change a frozen config.
        object.__setattr__(self, "feature_dims", {k: int(v) for k, v in dims.items()})
        object.__setattr__(self, "fusion_weights", {k: float(v) for k, v in weights.items()})
        object.__setattr__(self, "input_scale", {k: float(v) for k, v in scale.items()})

    def to_dict(self) -> dict:
        """Plain builtins only, so ``torch.load(weights_only=True)`` can read a checkpoint holding it."""
        return {
            "feature_dims": dict(self.feature_dims),
            "fusion_weights": dict(self.fusion_weights),
            "shot_num": self.shot_num,
            "sim_channel": self.sim_channel,
            "lstm_hidden": self.lstm_hidden,
            "fc_hidden": self.fc_hidden,
            "input_scale": dict(self.input_scale),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of ``to_dict``; unknown or missing keys are errors naming the key."""
        if not isinstance(d, dict):
            raise ValueError(f"model config: expected a mapping, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model config: unknown keys {unknown}; expected keys among {sorted(known)}")
        missing = [k for k in ("feature_dims", "fusion_weights") if k not in d]
        if missing:
            raise ValueError(f"model config: missing required keys {missing}")
        return cls(**d)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------- relation branch (channel max)


def _chunk_rows(device: torch.device, channels: int) -> int:
    budget = _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS_ACCELERATOR)
    return max(1, budget // channels)


def _channel_max(rows: Tensor, weight: Tensor, bias: Tensor, with_index: bool) -> tuple[Tensor, Tensor | None]:
    """``max_c (rows @ weight.T + bias)`` row by row, in chunks: [R, K], [C, K], [C] -> [R] (+ argmax [R])."""
    n_rows, channels = rows.shape[0], weight.shape[0]
    chunk = max(1, min(n_rows, _chunk_rows(rows.device, channels)))
    values = rows.new_empty(n_rows)
    index = torch.empty(n_rows, dtype=torch.long, device=rows.device) if with_index else None
    buf = rows.new_empty(chunk, channels)
    hits = rows.new_empty(chunk, channels)
    channel_ids = torch.arange(channels, device=rows.device, dtype=rows.dtype)
    weight_t = weight.t()
    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        scores = torch.addmm(bias, rows[start:stop], weight_t, out=buf[: stop - start])  # [r, C]
        best = torch.amax(scores, 1, out=values[start:stop])  # [r]
        if index is not None:
            # torch.max(dim) with indices is ~15x slower than amax on CPU; the index of the winner
            # is recovered from an equality mask instead (the last winner if channels tie).
            mask = torch.eq(scores, best[:, None], out=hits[: stop - start])
            index[start:stop] = mask.mul_(channel_ids).amax(1)
    return values, index


class _ChannelMaxFunction(torch.autograd.Function):
    """Channel max of affine maps whose backward keeps only the winning channel per row."""

    @staticmethod
    def forward(ctx, rows: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # [R, K], [C, K], [C] -> [R]
        values, index = _channel_max(rows, weight, bias, with_index=True)
        ctx.save_for_backward(rows, weight, index)
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # [R]
        rows, weight, index = ctx.saved_tensors
        grad_rows = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_rows = grad[:, None] * weight[index]  # [R, K]
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight).index_add_(0, index, grad[:, None] * rows)  # [C, K]
        if ctx.needs_input_grad[2]:
            grad_bias = torch.zeros(weight.shape[0], dtype=grad.dtype, device=grad.device).index_add_(0, index, grad)
        return grad_rows, grad_weight, grad_bias


def relation_fast(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """Relation branch without the [N, C, D] tensor: [N, K, D] -> [N, D]."""
    n, k, d = x.shape
    rows = x.transpose(1, 2).reshape(n * d, k)  # [N*D, K]
    weight = conv.weight.view(conv.out_channels, k)  # [C, K]
    if torch.is_grad_enabled() and (rows.requires_grad or weight.requires_grad or conv.bias.requires_grad):
        values = _ChannelMaxFunction.apply(rows, weight, conv.bias)
    else:
        values, _ = _channel_max(rows, weight, conv.bias, with_index=False)
    return values.view(n, d)


def relation_direct(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """Relation branch as written in LGSS: conv to [N, C, 1, D], max over channels -> [N, D]."""
    scores = conv(x[:, None])  # [N, 1, K, D] -> [N, C, 1, D]
    return scores[:, :, 0].max(dim=1).values


# ---------------------------------------------------------------- difference branch (cosine)


def _norm_from_square(sq: Tensor) -> Tensor:
    """sqrt with a zero gradient at 0, like torch's vector-norm backward at a zero vector."""
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def _clamped_like_torch(norm: Tensor, eps: float) -> Tensor:
    """Value ``max(norm, eps)``, gradient as if unclamped: what torch 2.13's cosine_similarity does
    (it clamps the norms in place under no_grad before dividing)."""
    return norm + (norm.clamp_min(eps) - norm).detach()


def _gram_dtype(x: Tensor) -> torch.dtype:
    """float64 where the device has it (MPS has not): the quadratic forms below cancel when a half's
    map is small next to its terms (similar consecutive shots), costing ~1e-4 of a cosine in
    float32. In float64 the Gram part adds ~2% to a CPU training step; it is a few million
    multiply-adds per batch, so also small on a GPU (not measured there)."""
    return x.dtype if x.device.type == "mps" else torch.promote_types(x.dtype, torch.float64)


def difference_fast(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """Cosine of the two half convolutions from a [K+1, K+1] Gram matrix: [N, K, D] -> [N, C]."""
    n, k, d = x.shape
    half, channels = k // 2, conv.out_channels
    out_dtype = x.dtype
    x = x.to(_gram_dtype(x))
    gram = x @ x.transpose(1, 2)  # [N, K, K]
    sums = x.sum(2)  # [N, K]
    ones = torch.full((n, 1), float(d), dtype=x.dtype, device=x.device)
    gram = torch.cat([torch.cat([gram, sums[:, :, None]], 2), torch.cat([sums, ones], 1)[:, None]], 1)  # [N, K+1, K+1]
    w, bias = conv.weight.view(channels, half).to(x.dtype), conv.bias[:, None].to(x.dtype)
    zeros = w.new_zeros(channels, half)
    u = torch.cat([w, zeros, bias], 1).t()  # [K+1, C]: first half's map
    v = torch.cat([zeros, w, bias], 1).t()  # [K+1, C]: second half's map
    gu, gv = gram @ u, gram @ v  # [N, K+1, C]
    dot = (gv * u).sum(1)  # [N, C]
    norm_a = _clamped_like_torch(_norm_from_square((gu * u).sum(1)), COSINE_EPS)
    norm_b = _clamped_like_torch(_norm_from_square((gv * v).sum(1)), COSINE_EPS)
    return (dot / (norm_a * norm_b)).to(out_dtype)


def difference_direct(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """Difference branch as written in LGSS: [N, K, D] -> [N, C]."""
    half = x.shape[1] // 2
    a = conv(x[:, None, :half])[:, :, 0]  # [N, C, D]
    b = conv(x[:, None, half:])[:, :, 0]  # [N, C, D]
    return F.cosine_similarity(a, b, dim=2)


# ---------------------------------------------------------------- model


class BoundaryHead(nn.Module):
    """One modality: boundary network -> BiLSTM over the window -> 2 logits per transition."""

    def __init__(self, dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.relation = nn.Conv2d(1, cfg.sim_channel, kernel_size=(cfg.shot_num, 1))
        self.difference = nn.Conv2d(1, cfg.sim_channel, kernel_size=(cfg.shot_num // 2, 1))
        self.lstm = nn.LSTM(dim + cfg.sim_channel, cfg.lstm_hidden, batch_first=True, bidirectional=True)
        self.fc1 = nn.Linear(2 * cfg.lstm_hidden, cfg.fc_hidden)
        self.fc2 = nn.Linear(cfg.fc_hidden, 2)

    def boundary(self, x: Tensor, fast: bool) -> Tensor:
        """[N, K, D] -> [N, D + C] (relation values, then channel cosines)."""
        # Autocast off, parameters' dtype: no Gram matrix, norm or max ever runs in bf16/fp16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(self.relation.weight.dtype)
            if fast:
                parts = [relation_fast(x, self.relation), difference_fast(x, self.difference)]
            else:
                parts = [relation_direct(x, self.relation), difference_direct(x, self.difference)]
            return torch.cat(parts, 1)

    def forward(self, x: Tensor, fast: bool) -> Tensor:  # [B, S, K, D] -> [B, S, 2]
        b, s, k, d = x.shape
        bound = self.boundary(x.reshape(b * s, k, d), fast).view(b, s, -1)  # [B, S, D + C]
        out, _ = self.lstm(bound)  # [B, S, 2H]
        return self.fc2(F.relu(self.fc1(out)))


class LGSS(nn.Module):
    """Multi-modal LGSS; ``fast=False`` is the literal form, same parameters and outputs."""

    def __init__(self, cfg: ModelConfig, fast: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.fast = fast
        self.heads = nn.ModuleDict({m: BoundaryHead(dim, cfg) for m, dim in cfg.feature_dims.items()})

    def forward(self, feats: dict[str, Tensor]) -> Tensor:  # {m: [B, S, K, D_m]} -> [B, S, 2]
        self._check(feats)
        logits = None
        for m, head in self.heads.items():
            x = feats[m] if self.cfg.input_scale[m] == 1.0 else feats[m] * self.cfg.input_scale[m]
            term = self.cfg.fusion_weights[m] * head(x, self.fast)
            logits = term if logits is None else logits + term
        return logits

    def _check(self, feats: dict[str, Tensor]) -> None:
        lead: tuple[int, int] | None = None
        for m, dim in self.cfg.feature_dims.items():
            if m not in feats:
                raise ValueError(f"LGSS input: modality {m!r} missing; expected {list(self.cfg.feature_dims)}, found {list(feats)}")
            shape = tuple(feats[m].shape)
            expected = f"[B, S, {self.cfg.shot_num}, {dim}]"
            if len(shape) != 4 or shape[2] != self.cfg.shot_num or shape[3] != dim:
                raise ValueError(f"LGSS input {m!r}: expected shape {expected} (D={dim}), found {list(shape)}")
            if lead is not None and shape[:2] != lead:
                raise ValueError(f"LGSS input {m!r}: expected batch/window dims {list(lead)} like the other modalities, found {list(shape[:2])}")
            lead = shape[:2]
