"""LGSS's batches gathered by index from per-movie arrays, and batched inference.

A :class:`ShotBank` holds each modality of a list of movies as one [total_shots, D]
tensor on the training device (memory proportional to the number of shots); a batch
of windows is built by index on that device, so no window is ever materialised ahead.
"""

from __future__ import annotations

import numpy as np
import torch

from sceneseg.data.movies import Movie
from sceneseg.data.windows import Windows, shot_index, transition_index


class ShotBank:
    """Features (and labels, when present) of a list of movies, concatenated on one device."""

    def __init__(self, movies: list[Movie], modalities: list[str], device: torch.device, shot_num: int):
        if not movies:
            raise ValueError("expected at least one movie, found none")
        self.movie_ids = [m.imdb_id for m in movies]
        self.device = device
        self.shot_num = shot_num
        n_shots = np.array([m.n_shots for m in movies], dtype=np.int64)
        self.n_shots = n_shots
        self.shot_offset = np.concatenate([[0], np.cumsum(n_shots)[:-1]])  # [M] first shot of each movie
        self.trans_offset = self.shot_offset - np.arange(len(movies))  # [M] first transition of each movie
        pin = device.type == "cuda"
        self.features: dict[str, torch.Tensor] = {}
        for mod in modalities:
            missing = [m.imdb_id for m in movies if mod not in m.features]
            if missing:
                raise ValueError(f"movie {missing[0]}: expected a '{mod}' feature array, found none")
            cat = torch.from_numpy(np.concatenate([np.asarray(m.features[mod], dtype=np.float32) for m in movies]))
            self.features[mod] = (cat.pin_memory() if pin else cat).to(device, non_blocking=pin)  # [total_shots, D]
        self.shot_end_frame = {m.imdb_id: np.asarray(m.shot_end_frame) for m in movies if m.shot_end_frame is not None}
        self.labels: torch.Tensor | None = None
        if all(m.boundary is not None for m in movies):
            lab = np.concatenate([np.asarray(m.boundary, dtype=np.int64) for m in movies])
            self.labels = torch.from_numpy(lab).to(device)  # [total_transitions]

    def check_windows(self, w: Windows) -> None:
        """Windows must index exactly this bank's movies with their shot counts."""
        if list(w.movie_ids) != self.movie_ids or not np.array_equal(w.n_shots, self.n_shots):
            raise ValueError(
                f"windows index movies {w.movie_ids[:3]}... ({len(w.movie_ids)}) but the data holds "
                f"{self.movie_ids[:3]}... ({len(self.movie_ids)}) with other shot counts: rerun featurize"
            )

    def batch(self, w: Windows, rows: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor]:
        """Gather the windows at ``rows``: features [B, S, shot_num, D], labels [B, S], own mask [B, S]."""
        sub = w.subset(rows)
        trans = transition_index(sub)  # [B, S] transition within its movie
        shots = shot_index(trans, sub.n_shots[sub.movie][:, None], self.shot_num)  # [B, S, shot_num]
        g_shots = torch.from_numpy(shots + self.shot_offset[sub.movie][:, None, None]).to(self.device)
        feats = {m: f[g_shots] for m, f in self.features.items()}  # [B, S, shot_num, D]
        own = torch.from_numpy(sub.own).to(self.device)
        labels = None
        if self.labels is not None:
            g_trans = torch.from_numpy(trans + self.trans_offset[sub.movie][:, None]).to(self.device)
            labels = self.labels[g_trans]  # [B, S]
        return feats, labels, own


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (the model keeps its Gram/cosine math in float32); a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


@torch.no_grad()
def predict_owned(model: torch.nn.Module, bank: ShotBank, w: Windows, batch_size: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boundary probability of each transition the windows answer for, in large no-grad batches.

    Returns (movie index [K], transition index [K], probability [K] float64), window order.
    """
    bank.check_windows(w)
    was_training = model.training
    model.eval()
    trans_all = transition_index(w)  # [W, S]
    probs = []
    try:
        for lo in range(0, len(w), batch_size):
            feats, _, _ = bank.batch(w, np.arange(lo, min(lo + batch_size, len(w))))
            with autocast_for(bank.device):
                logits = model(feats)  # [B, S, 2]
            probs.append(torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy())  # [B, S]
    finally:
        model.train(was_training)
    prob = np.concatenate(probs) if probs else np.zeros((0, w.seq_len), np.float32)
    movie = np.broadcast_to(w.movie[:, None], w.own.shape)
    return movie[w.own], trans_all[w.own], prob[w.own].astype(np.float64)


def predict_windows(model: torch.nn.Module, bank: ShotBank, w: Windows, batch_size: int) -> dict[str, np.ndarray]:
    """Boundary probability of every transition of every movie: movie id -> [N-1] float64.

    ``w`` must tile whole movies (as :func:`sceneseg.data.windows.build_windows` does).
    """
    movie, trans, prob = predict_owned(model, bank, w, batch_size)
    out = {mid: np.full(int(n) - 1, np.nan) for mid, n in zip(bank.movie_ids, bank.n_shots)}
    for i, mid in enumerate(bank.movie_ids):
        sel = movie == i
        out[mid][trans[sel]] = prob[sel]
    for mid, p in out.items():
        if np.isnan(p).any():
            raise ValueError(f"movie {mid}: {int(np.isnan(p).sum())} transitions got no prediction from the windows")
    return out
