"""SimSeq's network: transition features -> boundary logits, through a width-5 convolution and a
bidirectional GRU (or LSTM, or residual dilated convolutions), the shipped logit wired to the output; and
the average, in log-odds, of that network and the boosted trees; and the decoding of the final logits
with their neighbours (:func:`sharpened`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sceneseg.models.simseq.features import n_features, tree_inputs
from sceneseg.models.simseq.trees import TreeEnsemble


def sharpened(logits: Tensor, strength: float) -> Tensor:
    """[..., L] logits of consecutive transitions -> each plus ``strength`` times its excess over the
    mean of its two neighbours (the edges repeated): a transition whose neighbours score as high as it
    does loses, a peak gains. The similarity features of a cut spread over the transitions next to it,
    so both readers score those too; this decoding takes the neighbours into account (chosen on
    validation, bench/RESULTS_models.md). ``strength`` 0 returns the logits unchanged."""
    if not strength or logits.shape[-1] < 2:
        return logits
    before = torch.cat([logits[..., :1], logits[..., :-1]], -1)
    after = torch.cat([logits[..., 1:], logits[..., -1:]], -1)
    return logits + strength * (logits - 0.5 * (before + after))


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
        elif self.temporal == "lstm":  # the same with LSTMs: oneDNN runs them on a CPU, GRUs step by step
            self.fwd, self.bwd = nn.LSTM(h, h, batch_first=True), nn.LSTM(h, h, batch_first=True)
        else:  # long context: residual dilated convolutions (parallel over time), receptive field 1 + 2 sum(d)
            self.dilated = nn.ModuleList(nn.Conv1d(h, h, kernel_size=3, padding=d, dilation=d)
                                         for d in cfg["dilations"])
        width = 2 * h if self.temporal in ("gru", "lstm") else h
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
        if self.temporal == "lstm":
            return (self.head(self._bilstm(h, lengths)) + self.skip(z[..., -2:])).squeeze(-1)
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

    def _bilstm(self, h: Tensor, lengths: Tensor | None) -> Tensor:  # [B, L, H] -> [B, L, 2H]
        """A bidirectional LSTM on rows zero-padded at their ends, without packing (packed sequences
        leave oneDNN's fused kernels): the forward LSTM reads each row from its start, so its padding
        comes after every real step; the backward one reads each row reversed within its length
        (padding still last) and its outputs are put back in order. Real steps never see padding."""
        if lengths is None:
            back = torch.arange(h.shape[1] - 1, -1, -1, device=h.device)[None, :].expand(h.shape[0], -1)
        else:  # row b, step t < n_b reads step n_b - 1 - t; padding steps stay where they are
            t = torch.arange(h.shape[1], device=h.device)[None, :]
            n = lengths.to(h.device)[:, None]
            back = torch.where(t < n, n - 1 - t, t)
        index = back.unsqueeze(-1).expand(-1, -1, h.shape[2])
        b = self.bwd(h.gather(1, index))[0].gather(1, index)  # the inverse of a reversal is itself
        return torch.cat([self.fwd(h)[0], b], -1)


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
