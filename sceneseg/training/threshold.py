"""The decision threshold, chosen on validation windows only (never on test movies)."""

from __future__ import annotations

import torch

from sceneseg.models.lgss.inference import ShotBank, predict_owned, predict_windows
from sceneseg.evaluation.metrics import choose_threshold
from sceneseg.data.windows import Windows


def validation_threshold(model: torch.nn.Module, bank: ShotBank, val: Windows, metric: str, batch_size: int) -> float:
    """Threshold maximising ``metric`` on the validation windows: 'f1' (pooled transitions),
    'miou' (whole validation movies: needs val by movie) or 'fixed' (0.5, the published setting)."""
    if metric == "fixed":
        return 0.5
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
        return float(choose_threshold(gt, prob, metric="miou", shot_end_frame=ends))
    if metric == "f1":
        movie, trans, prob = predict_owned(model, bank, val, batch_size)
        gt = bank.labels[torch.from_numpy(trans + bank.trans_offset[movie]).to(bank.labels.device)].cpu().numpy()
        return float(choose_threshold(gt.astype(bool), prob, metric="f1"))
    raise ValueError(f"threshold metric: expected f1, miou or fixed, found {metric!r}")


