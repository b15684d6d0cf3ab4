"""Gradient-boosted trees that live in a checkpoint: LightGBM (or scikit-learn) fits them, torch
tensors keep them, numpy runs them.

A binary boosted model on numeric features is a sum of regression trees. :func:`export_booster`
(a LightGBM ``Booster``, what simseq fits) and :func:`export_trees` (a scikit-learn
``HistGradientBoostingClassifier``) copy its trees into plain tensors (per tree and node: feature,
threshold, where a missing value goes, children, leaf value), so a checkpoint holding them still
loads with ``torch.load(weights_only=True)``: no pickled estimator, no code, and neither library
is needed to predict. :class:`TreeEnsemble` evaluates them with both libraries' rule (a missing
(NaN) value goes where the split says, otherwise ``x <= threshold`` goes left) and sums them as
both do (the baseline, then tree 0, 1, ... in float64), so its scores equal LightGBM's
``predict(raw_score=True)`` and scikit-learn's ``decision_function`` bit for bit.

Evaluation (:func:`leaf_nodes`) walks every (row, tree) pair one level per step in numpy, on the
CPU: pairs that reached a leaf are dropped from the step once they are half of those walked (about
3.8 node visits per pair, against the 15-17 levels of the deepest tree), and the rows go in
chunks whose temporaries stay in the CPU's cache. A 3,096-shot movie with 300 trees: about 0.1 s,
5-7x less than stepping all pairs through every level with torch gathers.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from torch import Tensor, nn

FIELDS = ("feature", "threshold", "missing_left", "left", "right", "leaf", "value")


def _blank(n_trees: int, n_nodes: int) -> dict[str, Tensor]:
    """Per-node tensors [trees, nodes] of :data:`FIELDS`, every node a leaf of value 0 (the padding)."""
    return {"feature": torch.zeros(n_trees, n_nodes, dtype=torch.long),
            "threshold": torch.zeros(n_trees, n_nodes, dtype=torch.float64),
            "missing_left": torch.zeros(n_trees, n_nodes, dtype=torch.bool),
            "left": torch.zeros(n_trees, n_nodes, dtype=torch.long),
            "right": torch.zeros(n_trees, n_nodes, dtype=torch.long),
            "leaf": torch.ones(n_trees, n_nodes, dtype=torch.bool),
            "value": torch.zeros(n_trees, n_nodes, dtype=torch.float64)}


def export_trees(clf: HistGradientBoostingClassifier) -> dict[str, Tensor]:
    """The trees of a fitted binary classifier as tensors [trees, nodes] (padded with leaves), plus
    ``baseline`` (the raw score before any tree) and ``depth`` (the deepest leaf)."""
    trees = [p[0].nodes for p in clf._predictors]  # one predictor per iteration for a binary task
    if any(t["is_categorical"].any() for t in trees):
        raise ValueError("export_trees: categorical splits are not supported")
    n_nodes = max(len(t) for t in trees)
    out = _blank(len(trees), n_nodes)
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


def export_booster(booster) -> dict[str, Tensor]:
    """The trees of a LightGBM binary ``Booster`` as :func:`export_trees` gives scikit-learn's.

    Read from ``dump_model()`` (thresholds and leaf values printed to 17 digits: the same doubles).
    LightGBM folds its starting score into the first tree, so ``baseline`` is 0. Where a split sends
    NaN: its ``default_left`` when the feature had missing values in training (``missing_type``
    ``NaN``); otherwise LightGBM reads NaN as 0, i.e. left when ``0 <= threshold``."""
    doc = booster.dump_model()
    if doc.get("num_tree_per_iteration", 1) != 1 or doc.get("objective", "").split(" ")[0] != "binary":
        raise ValueError(f"export_booster: expected a binary LightGBM model, found objective {doc.get('objective')!r} "
                         f"with {doc.get('num_tree_per_iteration')} trees per iteration")
    trees = [_flat_lightgbm(t["tree_structure"]) for t in doc["tree_info"]]
    out = _blank(len(trees), max(len(t) for t in trees))
    a = {k: v.numpy() for k, v in out.items()}  # numpy views of the tensors: cheap element writes
    for i, nodes in enumerate(trees):
        for n, (feature, threshold, missing_left, left, right, value, _) in enumerate(nodes):
            if left >= 0:
                a["feature"][i, n], a["threshold"][i, n], a["missing_left"][i, n] = feature, threshold, missing_left
                a["leaf"][i, n], a["left"][i, n], a["right"][i, n] = False, left, right
            a["value"][i, n] = value
    out["baseline"] = torch.zeros((), dtype=torch.float64)
    out["depth"] = torch.tensor(max(node[6] for nodes in trees for node in nodes), dtype=torch.long)
    return out


def averaged(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Exported ensembles (:func:`export_booster`, :func:`export_trees`) as one whose raw score is their
    mean: their trees one after the other (padded to the most nodes) with every leaf value and the
    baseline divided by their number. One ensemble comes back as it is."""
    if len(parts) == 1:
        return parts[0]
    out = _blank(sum(len(p["feature"]) for p in parts), max(p["feature"].shape[1] for p in parts))
    first = 0
    for part in parts:
        n_trees, n_nodes = part["feature"].shape
        for name in FIELDS:
            out[name][first:first + n_trees, :n_nodes] = part[name]
        first += n_trees
    out["value"] /= len(parts)
    out["baseline"] = sum(p["baseline"] for p in parts) / len(parts)
    out["depth"] = max(p["depth"] for p in parts).clone()
    return out


def _flat_lightgbm(root: dict) -> list[list]:
    """One tree of ``dump_model()`` -> nodes [feature, threshold, NaN goes left, left, right, leaf
    value, depth], the root first; a leaf's children are -1."""
    nodes: list[list] = []
    todo = [(root, -1, 0, 0)]  # (node, parent index, which child of it (0 left, 1 right), depth)
    while todo:
        node, parent, side, depth = todo.pop()
        if parent >= 0:
            nodes[parent][3 + side] = len(nodes)
        if "leaf_value" in node:
            nodes.append([0, 0.0, False, -1, -1, float(node["leaf_value"]), depth])
            continue
        if node["decision_type"] != "<=" or node["missing_type"] not in ("None", "NaN"):
            raise ValueError(f"export_booster: only numeric '<=' splits with NaN or no missing values are supported, "
                             f"found {node['decision_type']!r} with missing type {node['missing_type']!r}")
        threshold = float(node["threshold"])
        nan_left = bool(node["default_left"]) if node["missing_type"] == "NaN" else 0.0 <= threshold
        todo += [(node["right_child"], len(nodes), 1, depth + 1), (node["left_child"], len(nodes), 0, depth + 1)]
        nodes.append([int(node["split_feature"]), threshold, nan_left, -1, -1, 0.0, depth])
    return nodes


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
    def from_tensors(cls, tensors: dict[str, Tensor]) -> TreeEnsemble:
        """An ensemble holding :func:`export_trees`'s or :func:`export_booster`'s tensors."""
        ens = cls(*tensors["feature"].shape)
        ens.load_state_dict(tensors)
        return ens

    @classmethod
    def from_classifier(cls, clf: HistGradientBoostingClassifier) -> TreeEnsemble:
        return cls.from_tensors(export_trees(clf))

    @classmethod
    def from_booster(cls, booster) -> TreeEnsemble:
        return cls.from_tensors(export_booster(booster))

    @classmethod
    def from_boosters(cls, boosters: list) -> TreeEnsemble:
        """One ensemble whose raw score is the mean of the boosters' (:func:`averaged`)."""
        return cls.from_tensors(averaged([export_booster(b) for b in boosters]))

    def forward(self, x: Tensor) -> Tensor:  # [N, F] -> [N] float64, on x's device
        state = {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        rows = x.detach().cpu().numpy().astype(np.float64, copy=False)
        leaves = leaf_nodes(state, rows)  # [N, T] global node ids
        value = state["value"].reshape(-1).take(leaves).T.copy()  # [T, N]
        out = np.full(rows.shape[0], float(state["baseline"]))
        for tree_values in value:  # scikit-learn's order of additions: the same float64 result
            out += tree_values
        return torch.from_numpy(out).to(x.device)


ROW_CHUNK_PAIRS = 1 << 15  # (row, tree) pairs walked together: ~40 KiB per 8-byte temporary, in cache


def _flat_nodes(state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Node ids across trees (tree t's node n is ``t * nodes + n``) -> [2 * T * nodes] children
    (left at ``2g``, right at ``2g + 1``; a leaf's both children are itself, so a finished walk stays
    put) and [T] roots."""
    n_trees, n_nodes = state["feature"].shape
    first = np.arange(n_trees, dtype=np.int64)[:, None] * n_nodes  # [T, 1]
    ids = first + np.arange(n_nodes)  # [T, nodes]
    leaf = state["leaf"]
    child = np.stack([np.where(leaf, ids, state["left"] + first), np.where(leaf, ids, state["right"] + first)], -1)
    return child.reshape(-1), first[:, 0]


def leaf_nodes(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The leaf each row of ``x`` [N, F] (float64) reaches in each tree: [N, T] node ids across trees.

    ``state``: :class:`TreeEnsemble`'s buffers as numpy arrays. Walks every (row, tree) pair one
    level per step; once half of the pairs still walked sit on a leaf, those are set aside."""
    n_trees, n_nodes = state["feature"].shape
    n_rows, n_cols = x.shape
    feature, threshold = state["feature"].reshape(-1), state["threshold"].reshape(-1)
    missing_left, leaf = state["missing_left"].reshape(-1), state["leaf"].reshape(-1)
    widest = int(feature[~leaf].max(initial=-1))
    if widest >= n_cols:
        raise ValueError(f"TreeEnsemble: the trees split on feature {widest}, expected at least {widest + 1} "
                         f"columns, got {n_cols}")
    child, roots = _flat_nodes(state)
    x = np.ascontiguousarray(x)
    flat_x, has_nan = x.reshape(-1), bool(np.isnan(x).any())
    out = np.empty((n_rows, n_trees), dtype=np.int64)
    chunk = max(1, ROW_CHUNK_PAIRS // max(n_trees, 1))
    for r0 in range(0, n_rows, chunk):
        r1 = min(n_rows, r0 + chunk)
        node = np.tile(roots, r1 - r0)  # [P] pair p = (row r0 + p // T, tree p % T): one row's trees side by side
        at = np.repeat(np.arange(r0, r1, dtype=np.int64) * n_cols, n_trees)  # [P] where each pair's row starts in x
        found = out[r0:r1].reshape(-1)  # [P] written at the end or when pairs are set aside
        pair = None  # [P'] the pairs still walked, once some were set aside
        for _ in range(int(state["depth"]) + 1):
            done = leaf.take(node)
            n_done = np.count_nonzero(done)
            if 2 * n_done >= len(node):  # set the finished ones aside: later steps touch only the rest
                if pair is None:
                    pair = np.arange(len(node))
                found[pair.compress(done)] = node.compress(done)
                if n_done == len(node):
                    break
                keep = ~done
                node, at, pair = node.compress(keep), at.compress(keep), pair.compress(keep)
            v = flat_x.take(at + feature.take(node))  # [P'] the value each pair's node splits on
            right = ~(v <= threshold.take(node))
            if has_nan:  # NaN: where the split sent missing values in training
                right &= ~(np.isnan(v) & missing_left.take(node))
            node = child.take((node << 1) | right)
        else:
            raise ValueError(f"TreeEnsemble: a walk went deeper than the stored depth {int(state['depth'])}; "
                             f"the trees' children do not form trees")
    return out
