"""What decides the training numbers, checked by value: the loss sees only owned transitions,
reported losses are class-weighted means, fit keeps the chosen epoch's weights, input scales are
1/RMS of the training shots and are applied in the forward pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TINY_DIMS, bank_and_windows, sharp_model, tiny_config, tiny_movie
from sceneseg.models.lgss import training as train_mod
from sceneseg.models.lgss.inference import ShotBank
from sceneseg.models.lgss.network import LGSS
from sceneseg.models.lgss.training import Recipe, fit, input_scales, mean_loss, owned_logits, window_loss

CPU = torch.device("cpu")
WEIGHT = torch.tensor([0.5, 5.0])
SEQ = 6


def movies_bank_windows(sizes=(21, 5, 30), seed=0):
    movies = [tiny_movie(f"tt{seed}{i}", n, seed * 10 + i) for i, n in enumerate(sizes)]
    return (movies, *bank_and_windows(movies, SEQ))


def hand_loss(model, bank, w, rows, movies, owned_positions) -> tuple[float, float]:
    """Class-weighted cross-entropy over the (row, position) pairs given, labels read from the movies:
    (sum of weight x NLL / sum of weights, sum of weight x NLL / count)."""
    feats, _, _ = bank.batch(w, rows)
    with torch.no_grad():
        logp = torch.log_softmax(model(feats).double(), -1).numpy()  # [B, S, 2]
    total, norm, count = 0.0, 0.0, 0
    for b, row in enumerate(rows):
        movie = movies[w.movie[row]]
        for k in owned_positions(row):
            t = min(int(w.start[row]) + k, movie.n_shots - 2)  # transition at this position
            y = int(movie.boundary[t])
            total += float(WEIGHT[y]) * -logp[b, k, y]
            norm += float(WEIGHT[y])
            count += 1
    return total / norm, total / count


def test_windows_own_each_transition_once_and_the_loss_sees_only_those():
    movies, bank, w = movies_bank_windows()
    # movie 0: 20 transitions in windows of 6 starting at 0, 6, 12 and 14 (shifted back to end at
    # the movie's end); the last one answers only for transitions 18 and 19.
    rows0 = np.flatnonzero(w.movie == 0)
    assert w.start[rows0].tolist() == [0, 6, 12, 14]
    assert w.own[rows0].tolist() == [[True] * 6] * 3 + [[False] * 4 + [True] * 2]
    # movie 1: 4 transitions, one window padded by repeating the last transition; it owns 4 positions
    rows1 = np.flatnonzero(w.movie == 1)
    assert w.start[rows1].tolist() == [0] and w.own[rows1[0]].tolist() == [True] * 4 + [False] * 2

    def owned(row):
        if row == rows0[-1]:
            return [4, 5]
        if row == rows1[0]:
            return [0, 1, 2, 3]
        return list(range(SEQ))

    model = sharp_model(tiny_config())
    rows = np.concatenate([rows0[1:], rows1])  # windows 2-4 of movie 0 (overlapping) + the padded one
    expect, _ = hand_loss(model, bank, w, rows, movies, owned)
    everything, _ = hand_loss(model, bank, w, rows, movies, lambda row: range(SEQ))
    got = window_loss(model, bank, w, rows, WEIGHT).item()
    assert got == pytest.approx(expect, rel=1e-5)
    assert abs(everything - expect) > 0.05  # the unowned positions would change the loss visibly

    # over all windows, the owned labels are every movie's labels exactly once, in order
    logits, labels = owned_logits(model, bank, w, np.arange(len(w)))
    assert logits.shape == (sum(m.n_shots - 1 for m in movies), 2)
    assert labels.tolist() == np.concatenate([m.boundary for m in movies]).astype(int).tolist()


def test_mean_loss_is_the_class_weighted_mean_over_owned_transitions():
    movies, bank, w = movies_bank_windows()
    model = sharp_model(tiny_config(), seed=1)
    expect, per_count = hand_loss(model, bank, w, np.arange(len(w)), movies,
                                  lambda row: np.flatnonzero(w.own[row]).tolist())
    assert abs(expect - per_count) > 0.05  # dividing by the count instead would be visibly off
    for batch_size in (1, 3, len(w) + 5):  # batches of every size, a ragged last one
        assert mean_loss(model, bank, w, batch_size, WEIGHT) == pytest.approx(expect, rel=1e-5)
    assert not model.training  # mean_loss restores the mode it found
    model.train()
    mean_loss(model, bank, w, 4, WEIGHT)
    assert model.training


def recording_fit(monkeypatch, recipe, train, val, test):
    """fit(), with the model's weights captured after every epoch (through on_epoch)."""
    created: list[LGSS] = []

    class Recorded(LGSS):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(train_mod, "LGSS", Recorded)
    states: dict[int, dict[str, torch.Tensor]] = {}
    reported = []

    def on_epoch(epoch, losses):
        states[epoch] = {k: v.detach().clone() for k, v in created[0].state_dict().items()}
        reported.append((epoch, losses["train"], losses["val"]))

    model, hist = fit(tiny_config(), recipe, train, val, test, CPU, on_epoch=on_epoch, progress=False)
    assert len(created) == 1 and model is created[0]
    assert reported == list(zip(range(1, recipe.epochs + 1), hist.train_loss, hist.val_loss))
    assert 0 < hist.seconds < 600
    return model, hist, states


def assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture
def overfitting_data():
    """Two train movies and a validation movie on which, with the recipes below, the validation
    loss bottoms out at epoch 4 of 6 while the training loss keeps falling."""
    torch.set_num_threads(1)  # bit-reproducible epochs
    _, bank, w = movies_bank_windows(sizes=(40, 33), seed=2)
    return (bank, w), bank_and_windows([tiny_movie("tt9", 30, 92)], SEQ)


def test_fit_keeps_the_best_validation_epochs_weights(monkeypatch, overfitting_data):
    train, val = overfitting_data
    recipe = Recipe(lr=0.03, epochs=6, batch_size=2, eval_batch_size=5, lr_decay_epochs=(5,), seed=1)
    model, hist, states = recording_fit(monkeypatch, recipe, train, val, val)
    best = int(np.argmin(hist.val_loss)) + 1
    assert 1 < best < recipe.epochs  # precondition: the kept epoch is neither the first nor the last
    assert hist.best_epoch == best
    assert_state_equal(model.state_dict(), states[best])
    # every reported number belongs to the kept weights
    assert mean_loss(model, *val, 7, WEIGHT) == pytest.approx(hist.val_loss[best - 1], rel=1e-6)
    assert hist.test_loss == pytest.approx(hist.val_loss[best - 1], rel=1e-6)
    assert not model.training


def test_fit_with_select_last_keeps_the_last_epoch(monkeypatch, overfitting_data):
    train, val = overfitting_data
    recipe = Recipe(lr=0.03, epochs=6, batch_size=2, eval_batch_size=5, lr_decay_epochs=(5,), select_epoch="last", seed=1)
    model, hist, states = recording_fit(monkeypatch, recipe, train, val, None)
    _, again = fit(tiny_config(), recipe, train, val, None, CPU, progress=False)
    assert again.train_loss == hist.train_loss and again.val_loss == hist.val_loss  # seeded: reproducible
    assert hist.best_epoch == 6 and min(hist.val_loss) < hist.val_loss[-1]  # best_val would pick another
    assert_state_equal(model.state_dict(), states[6])
    assert hist.test_loss is None and len(hist.train_loss) == len(hist.val_loss) == 6
    # the training loss logged is the mean of the epoch's batch losses: positive and finite
    assert all(math.isfinite(x) and x > 0 for x in hist.train_loss)


def test_fit_uses_the_recipe(monkeypatch, overfitting_data):
    """lr, its step decay, weight decay and the class weights reach the optimiser and the loss."""
    train, val = overfitting_data
    optimisers = []
    real_adam = torch.optim.Adam

    def spy_adam(params, **kw):
        optimisers.append(real_adam(params, **kw))
        return optimisers[-1]

    monkeypatch.setattr(torch.optim, "Adam", spy_adam)
    seen = []  # (lr, class weights) at every training batch
    real_loss = train_mod.window_loss

    def spy_loss(*args):
        seen.append((optimisers[0].param_groups[0]["lr"], args[-1].tolist()))
        return real_loss(*args)

    monkeypatch.setattr(train_mod, "window_loss", spy_loss)
    recipe = Recipe(lr=0.02, weight_decay=1e-3, lr_decay_epochs=(1, 2), lr_decay_gamma=0.5,
                    class_weights=(0.25, 4.0), epochs=3, batch_size=4, seed=0)
    fit(tiny_config(), recipe, train, val, None, CPU, progress=False)
    assert optimisers[0].param_groups[0]["weight_decay"] == 1e-3
    per_epoch = math.ceil(len(train[1]) / 4)  # every window once per epoch, batches of 4
    assert len(seen) == 3 * per_epoch
    assert [lr for lr, _ in seen] == [0.02] * per_epoch + [0.01] * per_epoch + [0.005] * per_epoch
    assert all(w == [0.25, 4.0] for _, w in seen)


def test_fit_checks_every_window_set_against_its_data(overfitting_data):
    train, val = overfitting_data
    other = bank_and_windows([tiny_movie("tt8", 20, 8)], SEQ)[1]  # windows of a movie the banks lack
    for sets in (((train[0], other), val, None), (train, (val[0], other), None), (train, val, (val[0], other))):
        with pytest.raises(ValueError, match="rerun featurize"):
            fit(tiny_config(), Recipe(epochs=1), *sets, CPU, progress=False)


def test_input_scales_are_one_over_rms_of_the_banks_shots():
    train_movies = [tiny_movie("tt1", 30, 1), tiny_movie("tt2", 12, 2, scale=3.0)]
    other = [tiny_movie("tt3", 25, 3, scale=40.0)]  # validation / test shots at another scale
    scales = input_scales(ShotBank(train_movies, list(TINY_DIMS), CPU, 4))
    for m in TINY_DIMS:
        x = np.concatenate([mv.features[m] for mv in train_movies]).astype(np.float64)
        assert scales[m] == pytest.approx(1.0 / np.sqrt(np.mean(x ** 2)), rel=1e-9)
    with_other = input_scales(ShotBank(train_movies + other, list(TINY_DIMS), CPU, 4))
    assert all(with_other[m] < 0.5 * scales[m] for m in TINY_DIMS)  # other shots would change them
    # all-zero features do not divide by zero
    zero = tiny_movie("tt4", 6, 4, scale=0.0)
    assert input_scales(ShotBank([zero], list(TINY_DIMS), CPU, 4))["cast"] == pytest.approx(1e12)


def test_input_scale_is_applied_in_the_forward_pass():
    scale = {"place": 0.25, "cast": 7.0}
    scaled = sharp_model(tiny_config(input_scale=scale), seed=3)
    plain = LGSS(tiny_config())
    plain.load_state_dict(scaled.state_dict())
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(2, SEQ, 4, d, generator=g) for m, d in TINY_DIMS.items()}
    with torch.no_grad():
        out = scaled(feats)
        pre_scaled = plain({m: feats[m] * scale[m] for m in feats})
        unscaled = plain(feats)
    torch.testing.assert_close(out, pre_scaled, rtol=1e-5, atol=1e-5)
    assert (out - unscaled).abs().max() > 0.1
    # the scales travel with the model's config (what checkpoints store)
    assert type(scaled.cfg).from_dict(scaled.cfg.to_dict()).input_scale == scale


def test_fit_refusals(overfitting_data):
    train, val = overfitting_data
    empty = (train[0], train[1].subset(np.zeros(0, np.int64)))
    with pytest.raises(ValueError, match="^training: expected at least one train window, found none$"):
        fit(tiny_config(), Recipe(epochs=1), empty, val, None, CPU, progress=False)
    unlabelled = [type(m)(m.imdb_id, m.features, None, m.shot_end_frame) for m in [tiny_movie("tt5", 12, 5)]]
    bank, w = bank_and_windows(unlabelled, SEQ)
    with pytest.raises(ValueError, match="^training needs ground-truth boundaries, but the movies carry none$"):
        fit(tiny_config(), Recipe(epochs=1), (bank, w), (bank, w), None, CPU, progress=False)
