"""LGSS (Rao et al. 2020) as a pipeline model: the published recipe on featurize's windows.

The network and its fast form live in :mod:`sceneseg.models.lgss.network`, the training loop in
:mod:`sceneseg.models.lgss.training`; this module only wires them to the :class:`ModelKind` interface, exactly as
the pipeline trained LGSS before models became a choice (same order of operations, same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sceneseg.config import check_choice, check_range
from sceneseg.training.distributed import Dist
from sceneseg.models.lgss.inference import ShotBank, predict_windows
from sceneseg.models.lgss.network import LGSS, ModelConfig
from sceneseg.models.base import (ModelKind, TrainData, Trained, check_class_weights, check_modalities,
                                  train_data_parallel)
from sceneseg.data.movies import Movie
from sceneseg.training.threshold import validation_threshold
from sceneseg.models.lgss.training import Recipe, fit, input_scales
from sceneseg.data.windows import build_windows


@dataclass(frozen=True)
class LGSSParams:
    """The ``lgss`` section of params.yaml (the published recipe by default)."""

    modalities: list[str]
    fusion_weights: dict[str, float]
    sim_channel: int
    lstm_hidden: int
    fc_hidden: int
    lr: float  # used when train.lr is null
    weight_decay: float
    lr_decay_epochs: list[int]
    lr_decay_gamma: float
    class_weights: list[float]
    select_epoch: str
    scale_inputs: bool
    batch_size: int = 8  # windows per training step (the seed's), used when train.batch_size is null


class LGSSKind(ModelKind):
    name = "lgss"
    Params = LGSSParams

    @staticmethod
    def validate_params(p: LGSSParams, section: str) -> None:
        check_modalities(f"{section}.modalities", p.modalities)
        if set(p.fusion_weights) != set(p.modalities):
            raise ValueError(f"params key '{section}.fusion_weights': expected one weight per modality "
                             f"{p.modalities}, found weights for {sorted(p.fusion_weights)}")
        for key in ("sim_channel", "lstm_hidden", "fc_hidden"):
            check_range(f"{section}.{key}", getattr(p, key), 1, 1_000_000)
        check_range(f"{section}.lr", p.lr, 0, 10, lo_open=True)
        check_range(f"{section}.batch_size", p.batch_size, 1, 1_000_000)
        check_range(f"{section}.weight_decay", p.weight_decay, 0, 1)
        check_range(f"{section}.lr_decay_gamma", p.lr_decay_gamma, 0, 1, lo_open=True)
        check_class_weights(f"{section}.class_weights", p.class_weights)
        check_choice(f"{section}.select_epoch", p.select_epoch, ("best_val", "last"))

    def train(self, data: TrainData, p: LGSSParams, common, device: torch.device, on_epoch=None,
              progress: bool = True, resume=None) -> Trained:
        if common.world_size == 1:
            return _train(data, p, common, device, on_epoch, progress, resume)
        return train_data_parallel(_train, data, p, common, device, on_epoch, progress, resume)

    def build(self, config: dict) -> LGSS:
        return LGSS(ModelConfig.from_dict(config["net"]))

    def feature_dims(self, config: dict) -> dict[str, int]:
        return dict(config["net"]["feature_dims"])

    def predict(self, model: LGSS, config: dict, movies: list[Movie], device: torch.device,
                batch_size: int) -> dict[str, np.ndarray]:
        """Every transition through the windows that tile each movie (as featurize tiles test movies)."""
        bank = ShotBank(movies, list(model.cfg.feature_dims), device, model.cfg.shot_num)
        windows = build_windows([m.imdb_id for m in movies], [m.n_shots for m in movies], int(config["seq_len"]))
        return predict_windows(model, bank, windows, batch_size)


def _train(data: TrainData, p: LGSSParams, common, device: torch.device, on_epoch, progress: bool, resume,
           dist: Dist | None = None) -> Trained | None:
    """LGSS on ``data``; with ``dist``, this rank's part, and the result on rank 0 only."""
    wins = data.windows
    banks = {}
    for name, w in wins.items():
        if name == "val" and w.movie_ids == wins["train"].movie_ids:
            banks[name] = banks["train"]  # val windows are windows of the train movies
        else:
            banks[name] = ShotBank(data.movies(name), p.modalities, device, data.shot_num)
    dims = {m: int(banks["train"].features[m].shape[1]) for m in p.modalities}
    net_cfg = ModelConfig(feature_dims=dims, fusion_weights={m: p.fusion_weights[m] for m in p.modalities},
                          shot_num=data.shot_num, sim_channel=p.sim_channel, lstm_hidden=p.lstm_hidden,
                          fc_hidden=p.fc_hidden,
                          input_scale=input_scales(banks["train"]) if p.scale_inputs else None)
    recipe = Recipe(lr=common.lr if common.lr is not None else p.lr, weight_decay=p.weight_decay,
                    lr_decay_epochs=tuple(p.lr_decay_epochs), lr_decay_gamma=p.lr_decay_gamma,
                    class_weights=tuple(p.class_weights), epochs=common.epochs, batch_size=common.batch_size or p.batch_size,
                    eval_batch_size=common.eval_batch_size, select_epoch=p.select_epoch, seed=common.seed)

    def per_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        if on_epoch:
            on_epoch(epoch, {"train": train_loss, "val": val_loss})

    model, hist = fit(net_cfg, recipe, (banks["train"], wins["train"]), (banks["val"], wins["val"]),
                      (banks["test"], wins["test"]), device, on_epoch=per_epoch, progress=progress,
                      resume=resume, dist=dist)
    if dist is not None and dist.rank != 0:
        return None
    threshold = validation_threshold(model, banks["val"], wins["val"], common.threshold_metric,
                                     common.eval_batch_size)
    return Trained(model, {"net": net_cfg.to_dict(), "seq_len": wins["train"].seq_len}, threshold,
                   hist.train_loss, hist.val_loss, hist.best_epoch, hist.test_loss, hist.seconds,
                   int(wins["train"].own.sum()))
