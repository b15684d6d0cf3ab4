"""Boosted trees kept as tensors (sceneseg.models.simseq.trees): the same scores as scikit-learn's, missing
values included, bit for bit the sum of a plain tree-by-tree walk, and a round trip through a
weights-only checkpoint."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from sceneseg.models.simseq import trees as trees_module
from sceneseg.models.simseq.trees import TreeEnsemble, averaged, export_booster, export_trees


def fitted(seed: int = 0, n: int = 2000, iters: int = 60):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.standard_normal(n)) > 0.3
    x[rng.random(x.shape) < 0.1] = np.nan  # the trees learn where missing values go
    return x, HistGradientBoostingClassifier(max_iter=iters, random_state=0).fit(x, y)


def walked(clf: HistGradientBoostingClassifier, x: np.ndarray) -> np.ndarray:
    """Reference: each row down each of scikit-learn's trees one node at a time, the leaf values added
    to the baseline in tree order."""
    out = np.full(len(x), float(np.ravel(clf._baseline_prediction)[0]))
    for p in clf._predictors:
        nodes = p[0].nodes
        for r, row in enumerate(x):
            n = 0
            while not nodes["is_leaf"][n]:
                v = row[nodes["feature_idx"][n]]
                left = nodes["missing_go_to_left"][n] if np.isnan(v) else v <= nodes["num_threshold"][n]
                n = nodes["left"][n] if left else nodes["right"][n]
            out[r] += nodes["value"][n]
    return out


def test_tensor_trees_give_sklearns_scores_with_missing_values():
    x, clf = fitted()
    ens = TreeEnsemble.from_classifier(clf)
    rng = np.random.default_rng(1)
    new = rng.standard_normal((500, 6)) * 2
    new[rng.random(new.shape) < 0.2] = np.nan
    new[:5, 0] = [t for t in clf._predictors[0][0].nodes["num_threshold"][:5]]  # exactly on a threshold: goes left
    for data in (x, new):
        np.testing.assert_allclose(ens(torch.from_numpy(data)).numpy(), clf.decision_function(data), rtol=0, atol=1e-10)
    assert ens.feature.shape[0] == 60 and int(ens.depth) == max(p[0].nodes["depth"].max() for p in clf._predictors)


@pytest.mark.parametrize("chunk_pairs", [7, 64, 1 << 15])  # rows split over chunks (a row's trees too), or one chunk
def test_scores_are_a_tree_by_tree_walk_bit_for_bit(monkeypatch, chunk_pairs):
    x, clf = fitted(3, n=600, iters=25)
    monkeypatch.setattr(trees_module, "ROW_CHUNK_PAIRS", chunk_pairs)
    ens = TreeEnsemble.from_classifier(clf)
    rows = x[:257]  # with and without missing values (the NaN-free path differs)
    for data in (rows, np.nan_to_num(rows, nan=0.25), rows.astype(np.float32)):
        got = ens(torch.from_numpy(data)).numpy()
        np.testing.assert_array_equal(got, walked(clf, data.astype(np.float64)))
        assert got.dtype == np.float64


def hand_made() -> TreeEnsemble:
    """Three trees of different sizes (padded to 5 nodes): a lone leaf; x1 <= 0 (NaN left) -> -1 | 2;
    x0 <= 1 (NaN right) -> (x2 <= -3 -> 10 | 20) | 30."""
    ens = TreeEnsemble(3, 5)
    s = {k: v.clone() for k, v in ens.state_dict().items()}
    s["value"][0, 0] = 0.5
    s["leaf"][1, 0], s["feature"][1, 0], s["missing_left"][1, 0], s["left"][1, 0], s["right"][1, 0] = False, 1, True, 1, 2
    s["value"][1, 1], s["value"][1, 2] = -1.0, 2.0
    s["leaf"][2, 0], s["feature"][2, 0], s["threshold"][2, 0], s["left"][2, 0], s["right"][2, 0] = False, 0, 1.0, 1, 4
    s["leaf"][2, 1], s["feature"][2, 1], s["threshold"][2, 1], s["left"][2, 1], s["right"][2, 1] = False, 2, -3.0, 2, 3
    s["value"][2, 2], s["value"][2, 3], s["value"][2, 4] = 10.0, 20.0, 30.0
    s["baseline"].fill_(-0.25)
    s["depth"].fill_(2)
    ens.load_state_dict(s)
    return ens


def test_hand_made_trees_by_hand():
    nan = float("nan")
    x = torch.tensor([[0.0, 0.0, -3.0], [1.0, 0.5, -2.0], [1.5, nan, 0.0], [nan, -1.0, -5.0], [0.0, 7.0, nan]],
                     dtype=torch.float64)
    # row 0: 0.5 - 1 (x1 = 0 <= 0) + 10 (x0 <= 1, x2 = -3 <= -3); row 1: 0.5 + 2 + 20; row 2: 0.5 - 1 (NaN left) + 30;
    # row 3: 0.5 - 1 + 30 (x0 NaN goes right: missing_left False); row 4: 0.5 + 2 + 20 (x2 NaN goes right)
    want = -0.25 + np.array([0.5 - 1 + 10, 0.5 + 2 + 20, 0.5 - 1 + 30, 0.5 - 1 + 30, 0.5 + 2 + 20])
    np.testing.assert_array_equal(hand_made()(x).numpy(), want)
    assert hand_made()(x[:0]).shape == (0,)


def test_bad_trees_or_inputs_are_refused():
    ens = hand_made()
    with pytest.raises(ValueError, match="split on feature 2, expected at least 3 columns, got 2"):
        ens(torch.zeros(4, 2, dtype=torch.float64))
    ens.left[2, 1] = 0  # a child pointing back at the root: no longer a tree
    with pytest.raises(ValueError, match="deeper than the stored depth 2"):
        ens(torch.tensor([[0.0, 0.0, -5.0]], dtype=torch.float64))


def test_tensor_trees_survive_a_weights_only_checkpoint():
    x, clf = fitted(2, iters=20)
    buf = io.BytesIO()
    torch.save(TreeEnsemble.from_classifier(clf).state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    again = TreeEnsemble(*state["feature"].shape)
    again.load_state_dict(state)
    np.testing.assert_allclose(again(torch.from_numpy(x)).numpy(), clf.decision_function(x), atol=1e-10)
    assert set(export_trees(clf)) == {"feature", "threshold", "missing_left", "left", "right", "leaf", "value",
                                      "baseline", "depth"}


def boosted(seed: int = 0, n: int = 3000, rounds: int = 40, **params):
    """A LightGBM binary booster on 6 columns: column 3 has missing values in training, the others none."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + np.nan_to_num(x[:, 3]) + 0.5 * rng.standard_normal(n)) > 0.3
    x[rng.random(n) < 0.2, 3] = np.nan
    return x, lgb.train({"objective": "binary", "num_leaves": 9, "num_threads": 1, "verbose": -1, **params},
                        lgb.Dataset(x, label=y.astype(float)), rounds)


def test_lightgbm_trees_give_lightgbms_raw_scores_bit_for_bit():
    """NaN where training had missing values (the split's default side) and where it had none
    (LightGBM reads it as 0), values exactly on thresholds: the same doubles as ``predict(raw_score=True)``."""
    x, booster = boosted()
    ens = TreeEnsemble.from_booster(booster)
    rng = np.random.default_rng(1)
    new = rng.standard_normal((800, 6)) * 2
    new[rng.random(new.shape) < 0.2] = np.nan
    root = booster.dump_model()["tree_info"][0]["tree_structure"]
    new[:3, root["split_feature"]] = root["threshold"]  # exactly on the root's threshold: goes left
    for data in (x, new, np.zeros((4, 6))):
        np.testing.assert_array_equal(ens(torch.from_numpy(data)).numpy(), booster.predict(data, raw_score=True))
    assert ens.feature.shape[0] == 40 and float(ens.baseline) == 0.0
    assert ens.missing_left[~ens.leaf].any() and (~ens.missing_left[~ens.leaf]).any()
    buf = io.BytesIO()  # and from a weights-only checkpoint
    torch.save(ens.state_dict(), buf)
    buf.seek(0)
    back = TreeEnsemble(*ens.feature.shape)
    back.load_state_dict(torch.load(buf, weights_only=True))
    np.testing.assert_array_equal(back(torch.from_numpy(new)).numpy(), booster.predict(new, raw_score=True))


def test_averaged_boosters_score_their_mean():
    """Boosters of different sizes (trees, nodes) as one ensemble: the mean of their raw scores, NaN
    included; one booster comes back unchanged, bit for bit."""
    x, small = boosted(rounds=7)
    _, big = boosted(seed=2, rounds=30, num_leaves=15)
    _, mid = boosted(seed=3, rounds=12, num_leaves=5)
    ens = TreeEnsemble.from_boosters([small, big, mid])
    rng = np.random.default_rng(3)
    new = rng.standard_normal((500, 6)) * 2
    new[rng.random(new.shape) < 0.2] = np.nan
    for data in (x, new):
        want = np.mean([b.predict(data, raw_score=True) for b in (small, big, mid)], 0)
        np.testing.assert_allclose(ens(torch.from_numpy(data)).numpy(), want, rtol=0, atol=1e-12)
    assert ens.feature.shape == (49, 29)  # 15 leaves: 29 nodes; the others' trees padded to them
    one = TreeEnsemble.from_boosters([big])
    np.testing.assert_array_equal(one(torch.from_numpy(new)).numpy(), big.predict(new, raw_score=True))
    with pytest.raises(ValueError, match="deeper than the stored depth"):  # the deepest tree sets the walk's depth
        parts = [export_booster(small), export_booster(big)]
        both = averaged(parts)
        both["depth"] = torch.tensor(int(min(p["depth"] for p in parts)))
        TreeEnsemble.from_tensors(both)(torch.from_numpy(new))


def test_averaged_scikit_learn_trees_score_their_mean_baseline_included():
    """scikit-learn's trees start from a baseline (LightGBM's from 0): the average's is their mean."""
    x, one = fitted(seed=0, iters=20)
    _, two = fitted(seed=5, iters=35)
    assert float(np.ravel(one._baseline_prediction)[0]) != 0.0
    ens = TreeEnsemble.from_tensors(averaged([export_trees(one), export_trees(two)]))
    want = (one.decision_function(x) + two.decision_function(x)) / 2
    np.testing.assert_allclose(ens(torch.from_numpy(x)).numpy(), want, rtol=0, atol=1e-12)


def test_lightgbm_trees_that_never_split_are_their_leaf():
    """A round that finds no split (min_child_samples larger than the data) is one leaf: the score
    is the sum of those leaves."""
    x, booster = boosted(n=30, rounds=3, min_child_samples=40)
    ens = TreeEnsemble.from_booster(booster)
    assert ens.leaf.all() and int(ens.depth) == 0
    np.testing.assert_array_equal(ens(torch.from_numpy(x)).numpy(), booster.predict(x, raw_score=True))


def test_a_lightgbm_model_that_is_not_binary_is_refused():
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1},
                        lgb.Dataset(rng.standard_normal((200, 3)), label=rng.standard_normal(200)), 2)
    with pytest.raises(ValueError, match="expected a binary LightGBM model, found objective 'regression' "
                                         "with 1 trees per iteration"):
        TreeEnsemble.from_booster(booster)


def test_lightgbm_splits_that_read_zero_as_missing_are_refused():
    """TreeEnsemble cannot send 0 where NaN goes: a booster fitted with zero_as_missing is refused, by name."""
    x, booster = boosted(zero_as_missing=True)
    kinds = {n.get("missing_type") for t in booster.dump_model()["tree_info"] for n in _nodes(t["tree_structure"])}
    assert "Zero" in kinds  # precondition: the booster has such splits
    with pytest.raises(ValueError, match="only numeric '<=' splits with NaN or no missing values are supported, "
                                         "found '<=' with missing type 'Zero'"):
        TreeEnsemble.from_booster(booster)


def _nodes(node: dict):
    yield node
    for side in ("left_child", "right_child"):
        if side in node:
            yield from _nodes(node[side])
