"""Gradient-boosted trees that live in a checkpoint: scikit-learn fits them, torch keeps and runs them.

A fitted ``HistGradientBoostingClassifier`` (binary, numeric features) is a sum of regression
trees. :func:`export_trees` copies its trees into plain tensors (per tree and node: feature,
threshold, where a missing value goes, children, leaf value), so a checkpoint holding them still
loads with ``torch.load(weights_only=True)``: no pickled estimator, no code. :class:`TreeEnsemble`
evaluates them for all trees and rows at once, one tree level per step, with scikit-learn's rule:
a missing (NaN) value goes where the split learned it should, otherwise ``x <= threshold`` goes left.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from torch import Tensor, nn

FIELDS = ("feature", "threshold", "missing_left", "left", "right", "leaf", "value")


def export_trees(clf: HistGradientBoostingClassifier) -> dict[str, Tensor]:
    """The trees of a fitted binary classifier as tensors [trees, nodes] (padded with leaves), plus
    ``baseline`` (the raw score before any tree) and ``depth`` (the deepest leaf)."""
    trees = [p[0].nodes for p in clf._predictors]  # one predictor per iteration for a binary task
    if any(t["is_categorical"].any() for t in trees):
        raise ValueError("export_trees: categorical splits are not supported")
    n_nodes = max(len(t) for t in trees)
    out = {
        "feature": torch.zeros(len(trees), n_nodes, dtype=torch.long),
        "threshold": torch.zeros(len(trees), n_nodes, dtype=torch.float64),
        "missing_left": torch.zeros(len(trees), n_nodes, dtype=torch.bool),
        "left": torch.zeros(len(trees), n_nodes, dtype=torch.long),
        "right": torch.zeros(len(trees), n_nodes, dtype=torch.long),
        "leaf": torch.ones(len(trees), n_nodes, dtype=torch.bool),
        "value": torch.zeros(len(trees), n_nodes, dtype=torch.float64),
    }
    for i, t in enumerate(trees):
        n = len(t)
        out["feature"][i, :n] = torch.from_numpy(t["feature_idx"].astype(np.int64))
        out["threshold"][i, :n] = torch.from_numpy(t["num_threshold"].astype(np.float64))
        out["missing_left"][i, :n] = torch.from_numpy(t["missing_go_to_left"].astype(bool))
        out["left"][i, :n] = torch.from_numpy(t["left"].astype(np.int64))
        out["right"][i, :n] = torch.from_numpy(t["right"].astype(np.int64))
        out["leaf"][i, :n] = torch.from_numpy(t["is_leaf"].astype(bool))
        out["value"][i, :n] = torch.from_numpy(t["value"].astype(np.float64))
    out["baseline"] = torch.tensor(float(np.ravel(clf._baseline_prediction)[0]), dtype=torch.float64)
    out["depth"] = torch.tensor(int(max(t["depth"].max() for t in trees)), dtype=torch.long)
    return out


class TreeEnsemble(nn.Module):
    """[N, F] float64 features -> [N] raw scores (log-odds) of the exported trees."""

    def __init__(self, n_trees: int, n_nodes: int) -> None:
        super().__init__()
        self.register_buffer("feature", torch.zeros(n_trees, n_nodes, dtype=torch.long))
        self.register_buffer("threshold", torch.zeros(n_trees, n_nodes, dtype=torch.float64))
        self.register_buffer("missing_left", torch.zeros(n_trees, n_nodes, dtype=torch.bool))
        self.register_buffer("left", torch.zeros(n_trees, n_nodes, dtype=torch.long))
        self.register_buffer("right", torch.zeros(n_trees, n_nodes, dtype=torch.long))
        self.register_buffer("leaf", torch.ones(n_trees, n_nodes, dtype=torch.bool))
        self.register_buffer("value", torch.zeros(n_trees, n_nodes, dtype=torch.float64))
        self.register_buffer("baseline", torch.zeros((), dtype=torch.float64))
        self.register_buffer("depth", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_classifier(cls, clf: HistGradientBoostingClassifier) -> TreeEnsemble:
        tensors = export_trees(clf)
        ens = cls(*tensors["feature"].shape)
        ens.load_state_dict(tensors)
        return ens

    def forward(self, x: Tensor) -> Tensor:  # [N, F] -> [N]
        x = x.to(torch.float64)
        rows = torch.arange(x.shape[0], device=x.device)[None, :]  # [1, N]
        node = torch.zeros(self.feature.shape[0], x.shape[0], dtype=torch.long, device=x.device)  # [T, N]
        for _ in range(int(self.depth)):
            v = x[rows, self.feature.gather(1, node)]  # [T, N] the value each tree's current node splits on
            go_left = torch.where(torch.isnan(v), self.missing_left.gather(1, node), v <= self.threshold.gather(1, node))
            nxt = torch.where(go_left, self.left.gather(1, node), self.right.gather(1, node))
            node = torch.where(self.leaf.gather(1, node), node, nxt)
        return self.baseline + self.value.gather(1, node).sum(0)
