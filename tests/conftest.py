"""Tiny data shared by the behaviour tests: short movies with narrow features and a small LGSS."""

from __future__ import annotations

import numpy as np
import torch

from sceneseg.data.movies import Movie
from sceneseg.data.windows import Windows, build_windows
from sceneseg.models.lgss.inference import ShotBank
from sceneseg.models.lgss.network import LGSS, ModelConfig

TINY_DIMS = {"place": 5, "cast": 3}


def tiny_movie(imdb_id: str, n_shots: int, seed: int, scale: float = 1.0, boundary_rate: float = 0.25) -> Movie:
    """A movie whose shots carry their scene's vector (times ``scale``) plus a little noise."""
    rng = np.random.default_rng(seed)
    boundary = rng.random(n_shots - 1) < boundary_rate
    scene_of = np.concatenate([[0], np.cumsum(boundary)])  # [N] scene index of each shot
    feats = {}
    for m, d in TINY_DIMS.items():
        scene_vec = rng.normal(size=(scene_of[-1] + 1, d))
        feats[m] = (scale * (scene_vec[scene_of] + 0.2 * rng.normal(size=(n_shots, d)))).astype(np.float32)
    ends = np.cumsum(rng.integers(5, 60, size=n_shots)).astype(np.int64)
    return Movie(imdb_id, feats, boundary, ends)


def tiny_config(input_scale: dict[str, float] | None = None) -> ModelConfig:
    return ModelConfig(dict(TINY_DIMS), {"place": 0.6, "cast": 0.4}, shot_num=4, sim_channel=4,
                       lstm_hidden=5, fc_hidden=4, input_scale=input_scale)


def sharp_model(cfg: ModelConfig, seed: int = 0) -> LGSS:
    """A random LGSS whose logits spread over several units, so that which transitions a loss or a
    threshold sees changes its value visibly (a fresh model's logits all sit near 0)."""
    torch.manual_seed(seed)
    model = LGSS(cfg)
    with torch.no_grad():
        for head in model.heads.values():
            head.fc2.weight.mul_(25.0)
            head.fc2.bias.copy_(torch.tensor([1.0, -1.0]))
    return model.eval()


def bank_and_windows(movies: list[Movie], seq_len: int) -> tuple[ShotBank, Windows]:
    """The movies' features on the CPU (shot_num 4) and all their windows."""
    bank = ShotBank(movies, list(TINY_DIMS), torch.device("cpu"), 4)
    return bank, build_windows([m.imdb_id for m in movies], [m.n_shots for m in movies], seq_len)


def pytest_configure(config) -> None:
    """One torch thread: the tests' data are tiny, and on a busy 2-core machine a second thread
    makes torch many times slower instead of faster."""
    torch.set_num_threads(1)
