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
input and, without it, ``bare_tree_fits`` times on random shares of the columns (averaged), and kept
as tensors (:mod:`sceneseg.models.simseq.trees`). The average is decoded with its neighbours
(``sharpen``: :func:`sceneseg.models.simseq.network.sharpened`) before the threshold. How it compares with
the boosted and stacked references on realistic sets: ``bench/bench_models.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sceneseg.data.movies import Movie
from sceneseg.models.base import ModelKind, TrainData, Trained, train_data_parallel
from sceneseg.models.simseq.features import movie_features
from sceneseg.models.simseq.network import SimSeqNet, SimSeqTrees, sharpened
from sceneseg.models.simseq.params import SimSeqParams, parse
from sceneseg.models.simseq.training import train as train_simseq


class SimSeqKind(ModelKind):
    name = "simseq"
    Params = SimSeqParams

    def parse_params(self, raw: dict, source: str = "params.yaml") -> SimSeqParams:
        return parse(raw, source, self.name)

    def train(self, data: TrainData, p: SimSeqParams, common, device: torch.device, on_epoch=None,
              progress: bool = True, resume=None) -> Trained:
        if common.world_size == 1:
            return train_simseq(data, p, common, device, on_epoch, progress, resume)
        return train_data_parallel(train_simseq, data, p, common, device, on_epoch, progress, resume)

    def build(self, config: dict) -> nn.Module:
        return SimSeqTrees(config) if config.get("trees") else SimSeqNet(config)

    def feature_dims(self, config: dict) -> dict[str, int]:
        return dict(config["feature_dims"])

    def predict(self, model: SimSeqNet, config: dict, movies: list[Movie], device: torch.device,
                batch_size: int | None = None, with_shipped: bool = True) -> dict[str, np.ndarray]:
        """One whole movie at a time (``batch_size`` is not read), the logits :func:`sharpened`."""
        model.eval()
        out = {}
        with torch.no_grad():
            for m in movies:  # one whole movie at a time: the GRU sees all of it
                x = torch.from_numpy(movie_features(m, config, with_shipped)).to(device)
                logits = sharpened(model(x[None])[0], float(config.get("sharpen", 0.0)))  # 0: older checkpoints
                out[m.imdb_id] = torch.sigmoid(logits).double().cpu().numpy()
        return out

    def inputs_used(self, config: dict, movie: Movie) -> list[str]:
        used = list(config["feature_dims"])
        if config["use_shipped"] and movie.baseline is not None:
            used.append("shipped prediction")
        return used
