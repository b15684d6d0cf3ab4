"""LGSS (Rao et al. 2020) as a pipeline model: the published recipe on featurize's windows.

The network and its fast form live in :mod:`sceneseg.models.lgss.network`, the training loop in
:mod:`sceneseg.models.lgss.training`; this module only wires them to the :class:`ModelKind` interface, exactly as
the pipeline trained LGSS before models became a choice (same order of operations, same numbers).
"""

from __future__ import annotations

import numpy as np
import torch

from sceneseg.data.movies import Movie, present_modalities
from sceneseg.data.windows import build_windows
from sceneseg.models.base import ModelKind, TrainData, Trained, train_data_parallel
from sceneseg.models.lgss.inference import ShotBank, predict_windows
from sceneseg.models.lgss.network import LGSS, ModelConfig
from sceneseg.models.lgss.params import LGSSParams, parse
from sceneseg.models.lgss.training import Recipe, fit, input_scales, validation_threshold
from sceneseg.training.distributed import Dist


class LGSSKind(ModelKind):
    name = "lgss"
    Params = LGSSParams

    def parse_params(self, raw: dict, source: str = "params.yaml") -> LGSSParams:
        return parse(raw, source, self.name)

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
                batch_size: int | None = None, with_shipped: bool = True) -> dict[str, np.ndarray]:
        """Every transition through the windows that tile each movie (as featurize tiles test movies),
        ``batch_size`` windows at a time (None: ``lgss.eval_batch_size`` of the run, 256 in checkpoints
        older than that key); LGSS never reads the shipped prediction, so ``with_shipped`` changes nothing."""
        bank = ShotBank(movies, list(model.cfg.feature_dims), device, model.cfg.shot_num)
        windows = build_windows([m.imdb_id for m in movies], [m.n_shots for m in movies], int(config["seq_len"]))
        return predict_windows(model, bank, windows, batch_size or int(config.get("eval_batch_size", 256)))


def _train(data: TrainData, p: LGSSParams, common, device: torch.device, on_epoch, progress: bool, resume,
           dist: Dist | None = None) -> Trained | None:
    """LGSS on ``data``; with ``dist``, this rank's part, and the result on rank 0 only."""
    wins = data.windows
    used, note = present_modalities(p.modalities, data.movies("train") + data.movies("val") + data.movies("test"),
                                    "lgss.modalities")
    if note and (dist is None or dist.rank == 0):  # e.g. movies made from videos have no cast
        print(f"train: {note}")
    banks = {}
    for name, w in wins.items():
        if name == "val" and w.movie_ids == wins["train"].movie_ids:
            banks[name] = banks["train"]  # val windows are windows of the train movies
        else:
            banks[name] = ShotBank(data.movies(name), used, device, p.shot_num)
    dims = {m: int(banks["train"].features[m].shape[1]) for m in used}
    net_cfg = ModelConfig(feature_dims=dims, fusion_weights={m: p.fusion_weights[m] for m in used},
                          shot_num=p.shot_num, sim_channel=p.sim_channel, lstm_hidden=p.lstm_hidden,
                          fc_hidden=p.fc_hidden,
                          input_scale=input_scales(banks["train"]) if p.scale_inputs else None)
    recipe = Recipe(lr=common.lr if common.lr is not None else p.lr, weight_decay=p.weight_decay,
                    lr_decay_epochs=tuple(p.lr_decay_epochs), lr_decay_gamma=p.lr_decay_gamma,
                    class_weights=tuple(p.class_weights), epochs=common.epochs or p.epochs, batch_size=common.batch_size or p.batch_size,
                    eval_batch_size=p.eval_batch_size, select_epoch=p.select_epoch, seed=common.seed)

    model, hist = fit(net_cfg, recipe, (banks["train"], wins["train"]), (banks["val"], wins["val"]),
                      (banks["test"], wins["test"]), device, on_epoch=on_epoch, progress=progress,
                      resume=resume, dist=dist)
    if dist is not None and dist.rank != 0:
        return None
    threshold = validation_threshold(model, banks["val"], wins["val"], common.threshold_metric,
                                     p.eval_batch_size)
    return Trained(model, {"net": net_cfg.to_dict(), "seq_len": wins["train"].seq_len,
                           "eval_batch_size": p.eval_batch_size}, threshold,
                   hist.train_loss, hist.val_loss, hist.best_epoch, hist.test_loss, hist.seconds,
                   int(wins["train"].own.sum()))
