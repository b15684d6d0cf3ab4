"""The default model's training mechanics by value: the kept epoch's weights are the ones returned,
early stopping after exactly ``patience`` epochs without gain (and resuming around it), the
warm-up + cosine learning rate at each step (worked out by hand), crops that tile every
transition, the feature columns and the shipped flag, and the share of crops without the shipped input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from test_models import CPU, ROOT, make_data, tiny

from sceneseg.config import load_params
from sceneseg.data.movies import Movie
from sceneseg.data.synthetic import SyntheticSpec
from sceneseg.models.checkpoint import load_checkpoint, save_checkpoint
from sceneseg.models.registry import get_model
from sceneseg.models.simseq import training as simseq
from sceneseg.models.simseq.features import movie_features, n_base, n_features, tree_inputs
from sceneseg.models.simseq.network import SimSeqNet, sharpened
from sceneseg.training.resume import ResumeStore


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def data(tmp_path_factory, params):
    """8 movies of 60-90 shots: 6 train, 2 test; validation windows inside the train movies."""
    torch.set_num_threads(1)  # bit-reproducible runs
    d = make_data(tmp_path_factory.mktemp("simseq") / "movies",
                  SyntheticSpec(8, 60, 90, seed=1, min_setups=2, max_setups=3, preset="easy"), params)
    assert len(d.movies("train")) == 6 and max(m.n_shots for m in d.movies("train")) <= 90
    return d


REAL_LOSS_AND_AP = simseq._loss_and_ap


def changed_movies(data, change):
    """A copy of ``data`` whose train (and validation) and test movies are ``change(k, movie)``, k their
    index within their split."""
    out = dataclasses.replace(data, _movies={})
    for name in ("train", "test"):
        for k, m in enumerate(data.movies(name)):
            out._movies[m.imdb_id] = change(k, m)
    return out


def scripted_val_ap(monkeypatch, aps: list[float]) -> list[dict]:
    """Validation APs of the epochs set to ``aps`` (in order; later calls, after training, keep the
    real values); returns the network's weights at each of those validations."""
    real, left, snapshots = REAL_LOSS_AND_AP, list(aps), []

    def fake(net, s, cw, sharpen=0.0):
        loss, ap, gt, prob = real(net, s, cw, sharpen)
        if not left:
            return loss, ap, gt, prob
        snapshots.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        return loss, left.pop(0), gt, prob

    monkeypatch.setattr(simseq, "_loss_and_ap", fake)
    return snapshots


def test_the_saved_weights_are_the_kept_epochs_not_the_last(data, params, monkeypatch, tmp_path):
    """APs 0.2, 0.6, 0.6, 0.5: epoch 2 is kept (a tie is no gain), its weights are saved, not epoch 4's."""
    common, own = tiny(params, "simseq", epochs=4, tree_iters=0)
    snaps = scripted_val_ap(monkeypatch, [0.2, 0.6, 0.6, 0.5])
    trained = get_model("simseq").train(data, own, common, CPU, progress=False)
    assert len(snaps) == 4 and trained.best_epoch == 2 and trained.extra["val_ap"] == 0.6
    save_checkpoint(tmp_path / "m.pt", "simseq", trained.model, trained.config, trained.threshold, "f1", {}, "")
    saved = load_checkpoint(tmp_path / "m.pt").model.state_dict()
    for k, v in snaps[1].items():
        assert torch.equal(saved[k], v), k
    assert not torch.equal(saved["gru.weight_hh_l0"], snaps[3]["gru.weight_hh_l0"])  # training moved on


@pytest.mark.parametrize("patience,aps,stop_after,best", [
    (2, [0.3, 0.5, 0.4, 0.5], 4, 2),  # epochs 3 and 4 bring no gain (a tie is none)
    (2, [0.3, 0.2, 0.4, 0.35, 0.1], 5, 3),  # the gain in epoch 3 restarts the count
    (1, [0.5, 0.4], 2, 1),
])
def test_early_stopping_stops_after_exactly_patience_epochs_without_gain(data, params, monkeypatch, capsys,
                                                                        patience, aps, stop_after, best):
    common, own = tiny(params, "simseq", epochs=10, tree_iters=0, patience=patience)
    scripted_val_ap(monkeypatch, aps)
    epochs = []
    trained = get_model("simseq").train(data, own, common, CPU, progress=False,
                                        on_epoch=lambda e, losses: epochs.append(e))
    assert epochs == list(range(1, stop_after + 1)) and len(trained.train_loss) == stop_after
    assert trained.best_epoch == best
    assert (f"no better validation AP for {patience} epochs: stopping after epoch {stop_after}"
            in capsys.readouterr().out)


REAL_CROPS = simseq._crops


class Stop(KeyboardInterrupt):
    """What Ctrl-C raises, from inside an epoch report."""


def test_a_run_resumed_before_and_after_its_early_stop_ends_as_the_uninterrupted_run(data, params, monkeypatch,
                                                                                     tmp_path):
    """Patience 2, APs peaking in epoch 2: the run stops after epoch 4. Stopped in epoch 3 and
    resumed, it stops after the same epoch with the same weights; resumed again from the state of
    the early stop (an interruption after it), it trains nothing and returns the same model."""
    common, own = tiny(params, "simseq", epochs=10, tree_iters=0, patience=2, dropout=0.3)
    aps = [0.3, 0.5, 0.4, 0.45]
    kind = get_model("simseq")
    scripted_val_ap(monkeypatch, aps)
    full = kind.train(data, own, common, CPU, progress=False)
    assert len(full.train_loss) == 4 and full.best_epoch == 2

    def stop_in(epoch):
        def report(e, losses):
            if e == epoch:
                raise Stop
        return report

    store = ResumeStore(tmp_path, {"run": "early stop"})
    scripted_val_ap(monkeypatch, aps)
    with pytest.raises(Stop):  # raised in epoch 3's report, before its state is saved
        kind.train(data, own, common, CPU, progress=False, resume=store, on_epoch=stop_in(3))
    assert (store.saved_epoch, store.saved_last) == (2, False)
    snaps = scripted_val_ap(monkeypatch, aps[2:])
    resumed = kind.train(data, own, common, CPU, progress=False, resume=ResumeStore(tmp_path, {"run": "early stop"}))
    assert len(snaps) == 2  # epochs 3 and 4 trained, then the stop
    assert ResumeStore(tmp_path, {"run": "early stop"})._saved_on_disk() == (4, True)
    crops, reports = [], []
    monkeypatch.setattr(simseq, "_crops", lambda *a: crops.append(1) or REAL_CROPS(*a))
    again = kind.train(data, own, common, CPU, progress=False, resume=ResumeStore(tmp_path, {"run": "early stop"}),
                       on_epoch=lambda e, losses: reports.append(e))
    assert reports == [1, 2, 3, 4]  # the finished epochs reported again
    assert len(crops) == 1  # crops drawn only to count the steps of an epoch: no epoch trained
    for run in (resumed, again):
        assert run.train_loss == full.train_loss and run.val_loss == full.val_loss
        assert run.best_epoch == full.best_epoch and run.threshold == full.threshold
        for k, v in full.model.state_dict().items():
            assert torch.equal(run.model.state_dict()[k], v), k


class RecordingLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR that records the learning rate each optimiser step used."""

    used: list[float] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recording = True

    def step(self, *args, **kwargs):
        if getattr(self, "recording", False):  # not the constructor's own first step
            RecordingLR.used.append(self.optimizer.param_groups[0]["lr"])
        super().step(*args, **kwargs)


@pytest.mark.parametrize("warmup,epochs,expected", [
    # one crop per train movie (crop_len 100 >= 89 transitions): 6 crops, batch 4 -> 2 steps an epoch.
    # warm-up 2 steps: lr x (s + 1) / 2; then 0.5 (1 + cos(pi (s - 2) / 4)) over the 4 steps left
    (1, 3, [0.005, 0.01, 0.01, 0.008535533905932738, 0.005, 0.0014644660940672624]),
    # no warm-up: 0.5 (1 + cos(pi s / 4)) over 4 steps
    (0, 2, [0.01, 0.008535533905932738, 0.005, 0.0014644660940672624]),
])
def test_warm_up_then_cosine_learning_rate_at_every_step(data, params, monkeypatch, warmup, epochs, expected):
    common, own = tiny(params, "simseq", epochs=epochs, tree_iters=0, crop_len=100, warmup_epochs=warmup, lr=0.01)
    monkeypatch.setattr(torch.optim.lr_scheduler, "LambdaLR", RecordingLR)
    RecordingLR.used = []
    get_model("simseq").train(data, own, common, CPU, progress=False)
    assert RecordingLR.used == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("shared,own,steps", [(None, 3, 2), (None, 6, 1), (1, 6, 6), (4, 1, 2)])
def test_steps_per_epoch_follow_simseq_batch_size_unless_train_batch_size_is_set(data, params, monkeypatch, shared,
                                                                                  own, steps):
    """6 crops an epoch (crop_len 100 >= every train movie): ceil(6 / batch) optimiser steps, the batch
    being train.batch_size when set, else simseq.batch_size."""
    common, p = tiny(params, "simseq", epochs=1, tree_iters=0, crop_len=100, batch_size=own)
    monkeypatch.setattr(torch.optim.lr_scheduler, "LambdaLR", RecordingLR)
    RecordingLR.used = []
    get_model("simseq").train(data, p, dataclasses.replace(common, batch_size=shared), CPU, progress=False)
    assert len(RecordingLR.used) == steps


@pytest.mark.parametrize("seed", range(4))
def test_training_crops_tile_every_transition(seed):
    rng = np.random.default_rng(seed)
    n_trans = np.array([1, 7, 32, 33, 64, 100, 257])
    crop_len = 32
    starts = []
    for draw in range(3):
        crops = simseq._crops(n_trans, crop_len, rng)
        assert len(set(crops)) == len(crops)  # no crop twice
        for i, t in enumerate(n_trans.tolist()):
            mine = [(a, b) for j, a, b in crops if j == i]
            covered = set()
            for a, b in mine:
                assert 0 <= a < b <= t and b - a == min(crop_len, t)
                covered |= set(range(a, b))
            assert covered == set(range(t)), (t, mine)
            assert len(mine) <= math.ceil(t / crop_len) + 1  # at most one crop more than a tiling from 0
        starts.append(sorted(a for j, a, _ in crops if j == 6))
    assert starts[0] != starts[1] or starts[1] != starts[2]  # a random phase: the tiling moves


def test_feature_columns_and_the_shipped_flag():
    """Columns per modality: raw cos_1, cos_2, centred cos_1, cos_2, cross_2; the same z-scored; then
    the shipped prediction's logit and its flag, both 0 when absent or not used."""
    rng = np.random.default_rng(0)
    n = 9
    feats = {"place": rng.random((n, 4)).astype(np.float32), "cast": rng.standard_normal((n, 3)).astype(np.float32)}
    shipped = rng.random(n - 1).astype(np.float32)
    shipped[2], shipped[5] = 0.0, 1.0  # clipped to 1e-4 and 1 - 1e-4 before the logit
    cfg = {"feature_dims": {"place": 4, "cast": 3}, "widths": [1, 2], "cross_widths": [2], "use_shipped": True}
    assert (n_base(cfg), n_features(cfg)) == (10, 22)
    movie = Movie("tt1", feats, np.zeros(n - 1, bool), np.arange(n), shipped)
    x = movie_features(movie, cfg, with_shipped=True)
    assert x.shape == (n - 1, 22) and x.dtype == np.float32

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    p, c = feats["place"].astype(np.float64), feats["cast"].astype(np.float64)
    pc = p - p.mean(0)
    unit = pc / np.linalg.norm(pc, axis=1, keepdims=True)
    for t in range(n - 1):
        assert x[t, 0] == pytest.approx(cos(p[t], p[t + 1]), abs=1e-6)  # place raw cos_1
        lo, hi = max(0, t - 1), min(n, t + 3)
        before = sum(p[i] / np.linalg.norm(p[i]) for i in range(lo, t + 1))
        after = sum(p[i] / np.linalg.norm(p[i]) for i in range(t + 1, hi))
        assert x[t, 1] == pytest.approx(cos(before, after), abs=1e-6)  # place raw cos_2
        assert x[t, 2] == pytest.approx(cos(pc[t], pc[t + 1]), abs=1e-6)  # place centred cos_1
        cross = max(unit[i] @ unit[j] for i in range(lo, t + 1) for j in range(t + 1, hi))
        assert x[t, 4] == pytest.approx(cross, abs=1e-6)  # place cross_2
        assert x[t, 5] == pytest.approx(cos(c[t], c[t + 1]), abs=1e-6)  # cast raw cos_1
    base = x[:, :10].astype(np.float64)
    np.testing.assert_allclose(x[:, 10:20], (base - base.mean(0)) / base.std(0), atol=1e-4)  # z-scored copies
    q = np.clip(shipped.astype(np.float64), 1e-4, 1 - 1e-4)
    np.testing.assert_allclose(x[:, 20], np.log(q / (1 - q)), rtol=1e-6)
    assert x[2, 20] == pytest.approx(-9.21024, abs=1e-4) and x[5, 20] == pytest.approx(9.21024, abs=1e-4)
    assert (x[:, 21] == 1).all()
    # absent, withheld, or switched off: logit and flag 0, the other columns unchanged
    for other in (movie_features(Movie("tt1", feats, None, None, None), cfg, True),
                  movie_features(movie, cfg, with_shipped=False),
                  movie_features(movie, {**cfg, "use_shipped": False}, True)):
        assert (other[:, 20:] == 0).all() and np.array_equal(other[:, :20], x[:, :20])
    # the trees read the logit where the flag says it is there, NaN where not
    tree_cfg = {**cfg, "trees": {"context": 1}}
    tx = tree_inputs(torch.from_numpy(x), tree_cfg)
    assert tx.shape == (n - 1, 3 * 10 + 1)
    np.testing.assert_allclose(tx[:, -1].numpy(), x[:, 20], rtol=1e-6)
    assert torch.isnan(tree_inputs(torch.from_numpy(other), tree_cfg)[:, -1]).all()


def test_the_network_reads_the_shipped_logit_only_where_the_flag_is_set():
    cfg = {"feature_dims": {"place": 4}, "widths": [1], "cross_widths": [2], "hidden": 8, "dropout": 0.0}
    torch.manual_seed(0)
    net = SimSeqNet(cfg).eval()
    x = torch.randn(1, 6, n_features(cfg))
    a, b, c = x.clone(), x.clone(), x.clone()
    a[..., -2:] = torch.tensor([5.0, 0.0])
    b[..., -2:] = torch.tensor([-3.0, 0.0])
    c[..., -2:] = torch.tensor([5.0, 1.0])
    with torch.no_grad():
        assert torch.equal(net(a), net(b))  # flag 0: the logit's value is not read
        assert not torch.allclose(net(a), net(c))


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_shipped_dropout_withholds_the_shipped_input_from_its_share_of_training_crops(data, params, monkeypatch,
                                                                                     share):
    common, own = tiny(params, "simseq", epochs=3, tree_iters=0, crop_len=8, shipped_dropout=share)
    rows = []
    real = SimSeqNet.forward

    def recording(self, x, lengths=None):
        if self.training:  # a training batch (validation reads padded batches of whole movies too)
            for r, n in enumerate(lengths.tolist()):
                rows.append(x[r, :n, -2:].detach().clone())
        return real(self, x, lengths)

    monkeypatch.setattr(SimSeqNet, "forward", recording)
    get_model("simseq").train(data, own, common, CPU, progress=False)
    dropped = [bool((r == 0).all()) for r in rows]
    assert all(bool((r[:, 1] == 1).all()) for r, d in zip(rows, dropped) if not d)  # the others all have it
    assert len(rows) > 150
    if share in (0.0, 1.0):
        assert np.mean(dropped) == share
    else:  # binomial: 3 standard deviations
        assert abs(np.mean(dropped) - share) < 3 * math.sqrt(share * (1 - share) / len(rows))



def test_tree_inputs_put_each_neighbour_in_its_own_columns_repeating_the_edges():
    """The column order is what a saved checkpoint's trees split on: the transition, then its
    neighbours from -k to +k (0 left out), each clamped to the movie, then the shipped logit."""
    cfg = {"feature_dims": {"place": 4}, "widths": [1], "cross_widths": [], "match_widths": [],
           "trees": {"context": 2}}
    assert n_base(cfg) == 2  # raw and centred cos_1
    length = 5
    x = torch.zeros(length, n_features(cfg))
    x[:, 0] = torch.arange(length) * 10.0  # column 0 of transition t is 10 t, column 1 is 10 t + 1
    x[:, 1] = torch.arange(length) * 10.0 + 1
    x[:, -2], x[:, -1] = 0.7, 1.0
    tx = tree_inputs(x, cfg).numpy()
    by_hand = []
    for t in range(length):
        row = [10 * t, 10 * t + 1]
        for s in (-2, -1, 1, 2):
            u = min(max(t + s, 0), length - 1)
            row += [10 * u, 10 * u + 1]
        by_hand.append(row + [0.7])
    np.testing.assert_allclose(tx, np.array(by_hand), rtol=1e-6)
    assert tx[0, 2] == 0 and tx[length - 1, -2] == 10 * (length - 1) + 1  # edges repeat, never wrap


def test_the_feature_spec_names_every_width_the_model_reads():
    from sceneseg.models.simseq.features import feature_spec

    cfg = {"feature_dims": {"place": 4}, "widths": [1, 2], "cross_widths": [2], "match_widths": [2, 4]}
    spec = feature_spec(cfg)
    assert spec.match_widths == (2, 4) and spec != feature_spec({**cfg, "match_widths": [2]})
    assert n_base(cfg) == n_base({**cfg, "match_widths": []}) + 2 * 1 * 2  # match_k: 2 widths x 2 sides


def _tree_set(data, own):
    movies = data.movies("train")
    cfg = {"feature_dims": {m: int(movies[0].features[m].shape[1]) for m in own.modalities},
           "widths": list(own.widths), "cross_widths": list(own.cross_widths), "match_widths": list(own.match_widths),
           "use_shipped": True, "hidden": 8, "dropout": 0.0, "temporal": "gru", "dilations": [1]}
    return cfg, simseq._Set(movies, data.owned("train"), cfg, CPU)


def test_the_trees_fitted_beside_the_network_are_lightgbms(data, params, capsys):
    """The thread's two fits equal LightGBM's own fits on the same rows (with and without the shipped
    column, at tree_lr (not LightGBM's default), tree_leaves leaves and tree_bins bins), whatever the
    thread count and wherever it changes; the network's weights go in unchanged."""
    import lightgbm as lgb

    _, own = tiny(params, "simseq", tree_iters=15, tree_lr=0.2, tree_leaves=5, tree_bins=63, tree_context=1,
                  bare_tree_fits=1, bare_tree_features=1.0)
    cfg, tr = _tree_set(data, own)
    net = SimSeqNet(cfg)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the fit takes the process's threads, one less beside a network on the CPU
    try:
        model, out_cfg = simseq._TreeFit(cfg, tr, own, seed=3).result(net)
        beside = simseq._TreeFit(cfg, tr, own, seed=3, beside_cpu_network=True)
        beside.all_threads()  # from 1 thread to 2 at whatever round the fit has reached
        switched, _ = beside.result(net)
        torch.set_num_threads(1)
        one, _ = simseq._TreeFit(cfg, tr, own, seed=3).result(net)
    finally:
        torch.set_num_threads(before)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("fitting 1 x 15 + 15 boosted trees on 347 training transitions beside the network "
                             "(2 threads)")
    assert lines[1].endswith("beside the network (1 thread, 2 after the epochs)")
    assert lines[2].endswith("(1 thread)")
    x = torch.cat([tree_inputs(xm, out_cfg)[mk.bool()] for xm, mk in zip(tr.x, tr.mask)]).numpy()
    y = torch.cat([ym[mk.bool()] for ym, mk in zip(tr.y, tr.mask)]).numpy() > 0.5
    assert x.shape[1] == 3 * n_base(cfg) + 1 and not np.isnan(x[:, -1]).any()
    for ens, cols in ((model.trees, x), (model.bare, x[:, :-1])):
        booster = lgb.train({"objective": "binary", "learning_rate": own.tree_lr, "num_leaves": 5, "max_bin": 63,
                             "seed": 3, "num_threads": 1, "verbose": -1}, lgb.Dataset(cols, label=y.astype(float)), 15)
        assert ens.feature.shape[0] == 15
        np.testing.assert_array_equal(ens(torch.from_numpy(cols)).numpy(), booster.predict(cols, raw_score=True))
    assert not torch.equal(model.trees.value, model.bare.value)  # the shipped column is used
    assert out_cfg["trees"] == {"context": 1, "shape": list(model.trees.feature.shape),
                                "bare_shape": list(model.bare.feature.shape)}
    for k, v in net.state_dict().items():
        assert torch.equal(model.net.state_dict()[k], v)
    for other in (one, switched):
        assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values()))


def test_the_trees_without_the_shipped_input_average_fits_on_column_draws(data, params, capsys):
    """bare_tree_fits fits of LightGBM, each tree on a bare_tree_features share of the columns (the draws
    seeded by the training seed), averaged: their mean raw score; another training seed draws other
    columns; the thread count changes nothing; the fit with the shipped input stays one fit on all."""
    import lightgbm as lgb

    _, own = tiny(params, "simseq", tree_iters=12, tree_leaves=5, tree_context=1, bare_tree_fits=3,
                  bare_tree_features=0.3)
    cfg, tr = _tree_set(data, own)
    net = SimSeqNet(cfg)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model, out_cfg = simseq._TreeFit(cfg, tr, own, seed=4).result(net)
        other, _ = simseq._TreeFit(cfg, tr, own, seed=5).result(net)
        torch.set_num_threads(1)
        one, _ = simseq._TreeFit(cfg, tr, own, seed=4).result(net)
    finally:
        torch.set_num_threads(before)
    assert capsys.readouterr().out.splitlines()[0].endswith("fitting 3 x 12 + 12 boosted trees on 347 training "
                                                            "transitions beside the network (2 threads)")
    x = torch.cat([tree_inputs(xm, out_cfg)[mk.bool()] for xm, mk in zip(tr.x, tr.mask)]).numpy()
    y = torch.cat([ym[mk.bool()] for ym, mk in zip(tr.y, tr.mask)]).numpy() > 0.5
    base = {"objective": "binary", "learning_rate": own.tree_lr, "num_leaves": 5, "max_bin": own.tree_bins, "seed": 4,
            "num_threads": 1,
            "verbose": -1}
    fits = [lgb.train({**base, "feature_fraction": 0.3, "feature_fraction_seed": 4 * 3 + i},
                      lgb.Dataset(x[:, :-1], label=y.astype(float)), 12) for i in range(3)]
    scores = [f.predict(x[:, :-1], raw_score=True) for f in fits]
    assert model.bare.feature.shape[0] == 36 and out_cfg["trees"]["bare_shape"] == list(model.bare.feature.shape)
    np.testing.assert_allclose(model.bare(torch.from_numpy(x[:, :-1])).numpy(), np.mean(scores, 0), rtol=0,
                               atol=1e-12)
    # the fits differ only by their column draws' seeds: they are other trees
    assert min(np.abs(a - b).max() for a, b in ((scores[0], scores[1]), (scores[1], scores[2]))) > 1e-3
    assert not torch.equal(other.bare.value, model.bare.value)
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), model.state_dict().values()))
    shipped = lgb.train(base, lgb.Dataset(x, label=y.astype(float)), 12)
    np.testing.assert_array_equal(model.trees(torch.from_numpy(x)).numpy(), shipped.predict(x, raw_score=True))


def test_a_failed_tree_fit_reaches_the_training_thread(data, params, monkeypatch):
    _, own = tiny(params, "simseq", tree_iters=5)
    cfg, tr = _tree_set(data, own)

    def broken(self, *a, **k):
        raise MemoryError("no room for the histograms")

    monkeypatch.setattr(simseq.lgb, "train", broken)
    fit = simseq._TreeFit(cfg, tr, own, seed=0)
    assert fit._thread.daemon  # an interrupted run (Ctrl-C) does not wait for the trees' thread
    with pytest.raises(MemoryError, match="no room for the histograms"):
        fit.result(SimSeqNet(cfg))


def test_the_averaged_models_validation_logits_are_its_forward_movie_by_movie(data, params):
    """Validation reads the averaged model's network on padded batches of movies and adds the trees
    per movie: the logits of SimSeqTrees.forward on each movie alone, to float rounding."""
    _, own = tiny(params, "simseq", tree_iters=10, tree_leaves=5, tree_context=1)
    cfg, tr = _tree_set(data, own)
    torch.manual_seed(0)
    model, _ = simseq._TreeFit(cfg, tr, own, seed=0).result(SimSeqNet(cfg))
    lengths = sorted({len(x) for x in tr.x})
    assert len(lengths) > 1  # precondition: movies of different lengths share a padded batch
    got = simseq._logits(model, tr)
    with torch.no_grad():
        for g, x in zip(got, tr.x):
            torch.testing.assert_close(g, model(x[None])[0], rtol=0, atol=1e-5)
            assert not torch.allclose(g, model.net(x[None])[0], atol=1e-3)  # the trees count


def test_sharpened_by_hand():
    """Each logit plus strength x (itself - the mean of its two neighbours), the edges repeated."""
    x = torch.tensor([[0.0, 1.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    # row 0: neighbours' means 0.5, 0, 0.5, 0 -> 0 - 0.1, 1 + 0.2, 0 - 0.1, 0; a flat row stays flat
    expected = torch.tensor([[-0.1, 1.2, -0.1, 0.0], [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(sharpened(x, 0.2), expected, rtol=0, atol=1e-12)
    # two transitions: each one's neighbours are itself and the other
    torch.testing.assert_close(sharpened(torch.tensor([1.0, 3.0]), 0.5), torch.tensor([0.5, 3.5]))
    assert sharpened(x, 0.0) is x
    one = torch.tensor([3.0])
    torch.testing.assert_close(sharpened(one, 0.5), one)


def test_epochs_are_chosen_on_the_networks_logits_the_threshold_and_test_loss_on_sharpened_ones(data, params,
                                                                                                 monkeypatch):
    seen = []

    def spy(net, s, cw, sharpen=0.0):
        seen.append(sharpen)
        return REAL_LOSS_AND_AP(net, s, cw, sharpen)

    monkeypatch.setattr(simseq, "_loss_and_ap", spy)
    common, own = tiny(params, "simseq", epochs=2, tree_iters=0, sharpen=0.5)
    trained = get_model("simseq").train(data, own, common, CPU, progress=False)
    assert seen == [0.0, 0.0, 0.5, 0.5] and trained.config["sharpen"] == 0.5
    # the probabilities behind the threshold: sigmoid of the sharpened logits
    va = simseq._Set(data.movies("train"), data.owned("val"), trained.config, CPU)
    _, _, gt, prob = REAL_LOSS_AND_AP(trained.model, va, (1.0, 3.0), 0.5)
    first = va.ids[0]
    with torch.no_grad():
        logit = trained.model(va.x[0][None])[0].double().numpy()
    nb = (np.r_[logit[0], logit[:-1]] + np.r_[logit[1:], logit[-1]]) / 2
    want = 1 / (1 + np.exp(-(logit + 0.5 * (logit - nb))))
    np.testing.assert_allclose(prob[first], want[va.mask[0].bool().numpy()], rtol=1e-5)


def test_predict_sharpens_by_the_checkpoints_strength_and_older_checkpoints_not(data, params):
    common, own = tiny(params, "simseq", epochs=1, tree_iters=0, sharpen=0.5)
    kind = get_model("simseq")
    trained = kind.train(data, own, common, CPU, progress=False)
    m = data.movies("test")[0]
    x = torch.from_numpy(movie_features(m, trained.config, True))
    with torch.no_grad():
        logit = trained.model(x[None])[0].double().numpy()
    nb = (np.r_[logit[0], logit[:-1]] + np.r_[logit[1:], logit[-1]]) / 2
    got = kind.predict(trained.model, trained.config, [m], CPU)[m.imdb_id]
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-(logit + 0.5 * (logit - nb)))), rtol=1e-5)
    older = {k: v for k, v in trained.config.items() if k != "sharpen"}  # saved before 2026-12-02
    np.testing.assert_allclose(kind.predict(trained.model, older, [m], CPU)[m.imdb_id], 1 / (1 + np.exp(-logit)),
                               rtol=1e-5)
    assert not np.allclose(got, 1 / (1 + np.exp(-logit)), rtol=1e-3)


def test_the_validation_loss_and_ap_by_hand(data, params):
    """The loss is the class-weighted BCE over the masked transitions of all movies together (one weighted
    mean, not a mean of per-movie means), the AP pooled over them; a non-finite output names its movie."""
    from sklearn.metrics import average_precision_score

    _, own = tiny(params, "simseq", tree_iters=0)
    cfg, tr = _tree_set(data, own)
    torch.manual_seed(0)
    net = SimSeqNet(cfg).eval()
    loss, ap, gt, prob = REAL_LOSS_AND_AP(net, tr, (1.0, 3.0))
    num, den, ys, ps = 0.0, 0.0, [], []
    with torch.no_grad():
        for x, y, m in zip(tr.x, tr.y, tr.mask):
            logit = net(x[None])[0].double()
            sel = m.bool()
            w = torch.where(y > 0.5, 3.0, 1.0).double()[sel]
            p = torch.sigmoid(logit[sel])
            yy = y.double()[sel]
            num += float((-(yy * torch.log(p) + (1 - yy) * torch.log1p(-p)) * w).sum())
            den += float(w.sum())
            ys.append(yy.numpy() > 0.5)
            ps.append(p.numpy())
    assert loss == pytest.approx(num / den, rel=1e-5) and loss > 0
    assert ap == pytest.approx(average_precision_score(np.concatenate(ys), np.concatenate(ps)), abs=1e-6)
    assert list(gt) == tr.ids and all(len(gt[i]) == len(prob[i]) for i in gt)
    # validation without a single boundary: AP 0 (nothing to find), not 1
    from types import SimpleNamespace
    none = SimpleNamespace(ids=tr.ids, x=tr.x, y=[torch.zeros_like(y) for y in tr.y], mask=tr.mask)
    assert REAL_LOSS_AND_AP(net, none, (1.0, 3.0))[1] == 0.0

    class Broken(SimSeqNet):
        def forward(self, x, lengths=None):
            return torch.full(x.shape[:2], float("nan"))

    with pytest.raises(ValueError, match=f"^the model's outputs on movie {tr.ids[0]} are not finite$"):
        REAL_LOSS_AND_AP(Broken(cfg), tr, (1.0, 3.0))


def test_training_builds_the_network_and_features_its_params_name(data, params):
    """``simseq.temporal``, ``dilations``, ``match_widths`` and ``hidden`` reach the saved config and the
    network: residual convolutions of those dilations, the best-match columns in the input (a key
    dropped on the way would leave the defaults in silently)."""
    common, own = tiny(params, "simseq", epochs=1, tree_iters=0, temporal="conv", dilations=[1, 3],
                       match_widths=[2], hidden=12)
    trained = get_model("simseq").train(data, own, common, CPU, progress=False)
    cfg, net = trained.config, trained.model
    assert (cfg["temporal"], cfg["dilations"], cfg["match_widths"], cfg["hidden"]) == ("conv", [1, 3], [2], 12)
    assert isinstance(net, SimSeqNet) and net.temporal == "conv" and not hasattr(net, "gru")
    assert [c.dilation for c in net.dilated] == [(1,), (3,)] and net.inp[0].out_features == 12
    without = {**cfg, "match_widths": []}
    assert net.inp[0].in_features == n_features(cfg) == n_features(without) + 2 * (n_base(cfg) - n_base(without))
    assert n_base(cfg) > n_base(without)


def test_a_modality_no_movie_has_is_left_out_and_said(data, params, capsys):
    """Movies without cast (as videos give): the network reads the other modalities, and the log says so
    with the key to change."""
    bare = changed_movies(data, lambda k, m: dataclasses.replace(
        m, features={name: v for name, v in m.features.items() if name != "cast"}))
    common, own = tiny(params, "simseq", epochs=1, tree_iters=0, modalities=["place", "cast", "action"])
    trained = get_model("simseq").train(bare, own, common, CPU, progress=False)
    assert list(trained.config["feature_dims"]) == ["place", "action"]
    assert "train: simseq.modalities: ['cast'] absent from the movies, using ['place', 'action']\n" in \
        capsys.readouterr().out


def test_standardisation_class_weights_and_weight_decay_reach_the_trained_network(data, params, capsys):
    """The input standardisation is each feature column's mean and standard deviation (floored at 1e-3)
    over the training transitions the train windows own; the shipped logit's over those that have it;
    its flag left as is. The validation loss weighs the classes by ``simseq.class_weights``, and
    ``simseq.weight_decay`` reaches the optimiser."""
    common, own = tiny(params, "simseq", epochs=1, tree_iters=0, class_weights=[0.7, 4.0])
    trained = get_model("simseq").train(data, own, common, CPU, progress=False)
    assert "reads the features alone" not in capsys.readouterr().out  # every movie has the shipped input
    net = trained.model
    tr = simseq._Set(data.movies("train"), data.owned("train"), trained.config, CPU)
    seen = torch.cat([x[m.bool()] for x, m in zip(tr.x, tr.mask)])
    assert len(seen) == sum(int(m.sum()) for m in data.owned("train").values()) and bool((seen[:, -1] == 1).all())
    torch.testing.assert_close(net.mean[:-2], seen[:, :-2].mean(0), rtol=1e-6, atol=0)
    torch.testing.assert_close(net.std[:-2], seen[:, :-2].std(0).clamp_min(1e-3), rtol=1e-6, atol=0)
    assert float(seen[:, :-2].std(0).min()) < 1.0  # similarity columns: a floor near 1 would show
    torch.testing.assert_close(net.mean[-2:], torch.stack([seen[:, -2].mean(), torch.tensor(0.0)]), rtol=1e-6, atol=0)
    torch.testing.assert_close(net.std[-2:], torch.stack([seen[:, -2].std(), torch.tensor(1.0)]), rtol=1e-6, atol=0)
    va = simseq._Set(data.movies("train"), data.owned("val"), trained.config, CPU)
    assert REAL_LOSS_AND_AP(net, va, (0.7, 4.0))[0] == pytest.approx(trained.val_loss[0], rel=1e-9)
    assert REAL_LOSS_AND_AP(net, va, (4.0, 4.0))[0] != pytest.approx(trained.val_loss[0], rel=1e-3)
    te = simseq._Set(data.movies("test"), None, trained.config, CPU)  # the test loss: the final model's, weighted
    assert trained.test_loss == pytest.approx(REAL_LOSS_AND_AP(net, te, (0.7, 4.0), own.sharpen)[0], rel=1e-9)
    decayed = get_model("simseq").train(data, dataclasses.replace(own, weight_decay=0.5), common, CPU, progress=False)
    assert decayed.val_loss[0] != pytest.approx(trained.val_loss[0], rel=1e-6)


def test_each_epochs_training_loss_is_the_weighted_mean_over_its_batches(data, params, monkeypatch):
    """An epoch's training loss is the sum of its batches' class-weighted losses over the sum of their
    weights (one weighted mean of the epoch, not a mean of batch means), started afresh each epoch."""
    batches, real = [], simseq._weighted_bce

    def spy(logits, y, mask, cw):
        s, w = real(logits, y, mask, cw)
        if logits.requires_grad:  # a training batch (validation runs without gradients)
            batches[-1].append((s.item(), w.item()))
        return s, w

    monkeypatch.setattr(simseq, "_weighted_bce", spy)
    common, own = tiny(params, "simseq", epochs=3, tree_iters=0)
    batches.append([])
    trained = get_model("simseq").train(data, own, common, CPU, progress=False,
                                        on_epoch=lambda e, losses: batches.append([]))
    per_epoch = batches[:-1]
    assert len(per_epoch) == 3 and all(len(b) > 1 for b in per_epoch)
    assert trained.train_loss == [sum(s for s, _ in b) / sum(w for _, w in b) for b in per_epoch]


def test_shipped_dropout_zeroes_the_shipped_logit_and_flag_and_nothing_else(data, params, monkeypatch):
    """All crops dropped against none (the same crops: the draws are made either way): the similarity
    columns the network reads are the same, the last two (shipped logit and flag) zero."""
    real, seen = SimSeqNet.forward, {}

    def recording(self, x, lengths=None):
        if self.training:
            seen[key].append(torch.cat([x[r, :n] for r, n in enumerate(lengths.tolist())]).detach().clone())
        return real(self, x, lengths)

    monkeypatch.setattr(SimSeqNet, "forward", recording)
    for key in (0.0, 1.0):
        seen[key] = []
        common, own = tiny(params, "simseq", epochs=1, tree_iters=0, crop_len=8, shipped_dropout=key)
        get_model("simseq").train(data, own, common, CPU, progress=False)
    kept, dropped = torch.cat(seen[0.0]), torch.cat(seen[1.0])
    assert kept.shape == dropped.shape and bool((kept[:, -1] == 1).all())
    assert torch.equal(dropped[:, :-2], kept[:, :-2]) and bool((dropped[:, -2:] == 0).all())


def test_a_step_follows_the_gradient_of_its_batchs_weighted_mean_loss(data, params, monkeypatch):
    """The first optimiser step reads the gradient of the batch's class-weighted mean loss (sum over
    weight sum), here with class weights whose sums stay below 1, and no stale gradient."""
    opts, ref, steps = [], [], []
    real = simseq._weighted_bce

    class Recording(torch.optim.AdamW):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            opts.append(self)

        def step(self, closure=None):
            if not steps:
                steps.append([p.grad.clone() for p in self.param_groups[0]["params"]])
            return super().step(closure)

    def spy(logits, y, mask, cw):
        s, w = real(logits, y, mask, cw)
        if logits.requires_grad and not ref:
            assert float(w) < 1.0
            ref.append(torch.autograd.grad(s / w, opts[0].param_groups[0]["params"], retain_graph=True))
        return s, w

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    monkeypatch.setattr(simseq, "_weighted_bce", spy)
    common, own = tiny(params, "simseq", epochs=1, tree_iters=0, crop_len=8, class_weights=[0.005, 0.015])
    get_model("simseq").train(data, own, common, CPU, progress=False)
    assert len(steps[0]) == len(ref[0]) > 5
    for got, want in zip(steps[0], ref[0]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_without_the_shipped_prediction_in_some_movies_simseq_reads_the_features_alone(data, params, capsys):
    """Half the movies lack the shipped prediction: the run says which, the network's shipped columns
    are zero everywhere (no movie read differently), and the trees are the features-only fits; with
    every movie having it but ``simseq.use_shipped: false``, it is not read either."""
    some = changed_movies(data, lambda k, m: dataclasses.replace(m, baseline=None if k % 2 else m.baseline))
    lacking = [m.imdb_id for name in ("train", "test") for k, m in enumerate(data.movies(name)) if k % 2]
    common, own = tiny(params, "simseq", epochs=1, tree_iters=3, bare_tree_fits=2)
    trained = get_model("simseq").train(some, own, common, CPU, progress=False)
    n = len(set(some.split["train"] + some.split["test"]))
    out = capsys.readouterr().out
    assert f"train: no shipped prediction in {len(lacking)} of the {n} movies ({' '.join(sorted(lacking))}): " \
           "simseq reads the features alone\n" in out
    assert "train: fitting 2 x 3 boosted trees on " in out  # no fit with the shipped column announced
    cfg = trained.config
    assert cfg["use_shipped"] is False and cfg["trees"]["shape"] == cfg["trees"]["bare_shape"]
    assert cfg["trees"]["shape"][0] == 2 * 3  # two averaged fits of 3 trees, no fit with the shipped column
    x = simseq._Set(data.movies("train"), None, cfg, CPU).x  # the movies that have it, read as the run read them
    assert all(bool((m[:, -2:] == 0).all()) for m in x)
    off = get_model("simseq").train(data, dataclasses.replace(own, use_shipped=False, tree_iters=0), common, CPU,
                                    progress=False)
    assert off.config["use_shipped"] is False


NET_CFG = {"feature_dims": {"place": 4, "cast": 3}, "widths": [1, 2], "cross_widths": [2], "hidden": 8,
           "dropout": 0.0, "dilations": [1, 3]}


def reference_logits(net: SimSeqNet, x: torch.Tensor) -> torch.Tensor:
    """SimSeqNet's forward (eval mode, whole rows) from its weights, written from its description: the
    features standardised (the shipped logit zeroed where its flag is 0, the flag kept raw), a GELU unit,
    a width-5 convolution added back through a GELU, the long context (a bidirectional GRU, or residual
    dilated width-3 convolutions, or two LSTMs), a GELU head, plus a linear skip from the shipped pair."""
    F = torch.nn.functional
    w = net.state_dict()
    z = (x - w["mean"]) / w["std"]
    z[..., -2] = z[..., -2] * x[..., -1]
    z[..., -1] = x[..., -1]
    h = F.gelu(F.linear(z, w["inp.0.weight"], w["inp.0.bias"]))
    h = h + F.gelu(F.conv1d(h.transpose(1, 2), w["local.weight"], w["local.bias"], padding=2)).transpose(1, 2)
    if net.temporal == "gru":
        gru = torch.nn.GRU(h.shape[-1], h.shape[-1], batch_first=True, bidirectional=True)
        gru.load_state_dict({k[4:]: v for k, v in w.items() if k.startswith("gru.")})
        c = gru(h)[0]
    elif net.temporal == "lstm":
        lstm = torch.nn.LSTM(h.shape[-1], h.shape[-1], batch_first=True, bidirectional=True)
        lstm.load_state_dict({**{k[4:]: v for k, v in w.items() if k.startswith("fwd.")},
                              **{f"{k[4:]}_reverse": v for k, v in w.items() if k.startswith("bwd.")}})
        c = lstm(h)[0]
    else:
        c = h.transpose(1, 2)
        for i, d in enumerate(NET_CFG["dilations"]):
            c = c + F.gelu(F.conv1d(c, w[f"dilated.{i}.weight"], w[f"dilated.{i}.bias"], padding=d, dilation=d))
        c = c.transpose(1, 2)
    head = F.linear(F.gelu(F.linear(c, w["head.0.weight"], w["head.0.bias"])), w["head.3.weight"], w["head.3.bias"])
    return (head + F.linear(z[..., -2:], w["skip.weight"], w["skip.bias"])).squeeze(-1)


@pytest.mark.parametrize("temporal", ["gru", "lstm", "conv"])
def test_the_network_computes_what_its_description_says(temporal):
    torch.manual_seed(3)
    net = SimSeqNet({**NET_CFG, "temporal": temporal}).eval()
    with torch.no_grad():
        net.mean.normal_()
        net.std.uniform_(0.5, 2.0)
        x = torch.randn(3, 11, n_features(NET_CFG))
        x[0, :, -1], x[1, :, -1], x[2, :, -1] = 1.0, 0.0, 1.0  # the middle movie has no shipped prediction
        got = net(x)
        assert got.shape == (3, 11)
        torch.testing.assert_close(got, reference_logits(net, x.clone()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("temporal", ["gru", "conv"])
def test_dropout_acts_after_the_input_unit_and_inside_the_head_in_training_only(temporal):
    """simseq.dropout p zeroes about p of the input unit's outputs and of the head's hidden units while
    training, none at evaluation."""
    torch.manual_seed(4)
    net = SimSeqNet({**NET_CFG, "temporal": temporal, "hidden": 32, "dropout": 0.5})
    seen = {}
    net.local.register_forward_pre_hook(lambda m, a: seen.__setitem__("input unit", a[0]))
    net.head[-1].register_forward_pre_hook(lambda m, a: seen.__setitem__("head", a[0]))
    x = torch.randn(4, 40, n_features(NET_CFG))
    x[..., -1] = 1.0
    for mode, low, high in (("train", 0.4, 0.6), ("eval", 0.0, 0.0)):
        getattr(net, mode)()
        with torch.no_grad():
            net(x)
        for where, t in seen.items():
            assert low <= float((t == 0).float().mean()) <= high, (mode, where)


class _Const(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, tx: torch.Tensor) -> torch.Tensor:
        return torch.full((tx.shape[0],), self.value)


def test_a_movie_is_read_by_the_trees_that_match_its_shipped_flag():
    """The trees fitted with the shipped prediction read a movie whose flag (last column) is 1, the bare
    ones a movie whose flag is 0, whatever its other columns hold."""
    from sceneseg.models.simseq.network import SimSeqTrees

    net = SimSeqTrees({**NET_CFG, "temporal": "gru", "trees": {"context": 1, "shape": [1, 1], "bare_shape": [1, 1]}})
    net.trees, net.bare = _Const(7.0), _Const(-3.0)
    x = torch.zeros(6, n_features(NET_CFG))
    x[:, 1], x[:, -2], x[:, -1] = 0.2, 0.3, 1.0  # shipped; its logit and a feature below 0.5
    assert net.tree_logits(x).tolist() == [7.0] * 6
    x[:, 1], x[:, -2], x[:, -1] = 0.9, 0.9, 0.0  # no shipped input; other columns above 0.5
    assert net.tree_logits(x).tolist() == [-3.0] * 6
