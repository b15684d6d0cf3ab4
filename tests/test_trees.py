"""Boosted trees kept as tensors (sceneseg.models.trees): the same scores as scikit-learn's, missing
values included, and a round trip through a weights-only checkpoint."""

from __future__ import annotations

import io

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from sceneseg.models.trees import TreeEnsemble, export_trees


def fitted(seed: int = 0, n: int = 2000, iters: int = 60):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.standard_normal(n)) > 0.3
    x[rng.random(x.shape) < 0.1] = np.nan  # the trees learn where missing values go
    return x, HistGradientBoostingClassifier(max_iter=iters, random_state=0).fit(x, y)


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
