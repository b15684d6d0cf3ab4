"""What SimSeq reads per transition: the similarity features (from the features stage, or computed
by the same code), z-scored within the movie, and the shipped prediction's logit with its flag;
and the trees' view of them (each transition with its neighbours)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sceneseg.data.featurecache import FeatureSpec, similarity
from sceneseg.data.movies import Movie
from sceneseg.data.simfeatures import zscore_columns


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
