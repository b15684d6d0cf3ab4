"""Training loop, batches by index, inference, threshold and checkpoints on tiny data."""

import dataclasses
import re

import numpy as np
import pytest
import torch

from sceneseg.data.movies import Movie
from sceneseg.data.split import split_windows
from sceneseg.data.windows import build_windows
from sceneseg.models.checkpoint import load_checkpoint, save_checkpoint
from sceneseg.models.lgss.inference import ShotBank, predict_owned, predict_windows
from sceneseg.models.lgss.network import LGSS, ModelConfig
from sceneseg.models.lgss.training import validation_threshold
from sceneseg.models.lgss.training import Recipe, fit
from sceneseg.training.device import pick_device

DIMS = {"place": 6, "cast": 4}


def tiny_movie(imdb_id: str, n: int, seed: int) -> Movie:
    """Shots carry their scene's vector plus noise, so boundaries are learnable."""
    rng = np.random.default_rng(seed)
    boundary = rng.random(n - 1) < 0.2
    scene = np.concatenate([[0], np.cumsum(boundary)])
    feats = {}
    for m, d in DIMS.items():
        proto = rng.normal(size=(scene.max() + 1, d))
        feats[m] = (proto[scene] + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
    ends = np.cumsum(rng.integers(10, 50, size=n)).astype(np.int64)
    return Movie(imdb_id, feats, boundary, ends, rng.random(n - 1).astype(np.float32))


def cfg() -> ModelConfig:
    return ModelConfig(feature_dims=dict(DIMS), fusion_weights={"place": 0.7, "cast": 0.3},
                       shot_num=4, sim_channel=4, lstm_hidden=6, fc_hidden=5)


def setup(seq_len=5):
    movies = [tiny_movie(f"tt{i}", n, i) for i, n in enumerate([40, 3, 57, 25])]
    bank = ShotBank(movies, list(DIMS), torch.device("cpu"), 4)
    w = build_windows([m.imdb_id for m in movies], [m.n_shots for m in movies], seq_len)
    return movies, bank, w


def test_batch_gathers_the_right_shots_and_labels():
    movies, bank, w = setup()
    rows = np.array([0, len(w) - 1, 8])
    feats, labels, own = bank.batch(w, rows)
    assert feats["place"].shape == (3, 5, 4, 6) and labels.shape == (3, 5) and own.shape == (3, 5)
    # row 0: movie tt0, transitions 0..4; transition 0 sees shots 0, 0, 1, 2 (edge repeated)
    m0 = movies[0]
    assert torch.equal(feats["place"][0, 0], torch.from_numpy(m0.features["place"][[0, 0, 1, 2]]))
    assert labels[0].tolist() == m0.boundary[:5].astype(int).tolist()
    # the last window belongs to tt3 (25 shots, 24 transitions): it ends at the movie's last transition
    m3 = movies[3]
    assert torch.equal(feats["cast"][1, -1], torch.from_numpy(m3.features["cast"][[22, 23, 24, 24]]))
    assert labels[1, -1].item() == int(m3.boundary[-1])


def test_fit_is_deterministic_and_learns():
    torch.set_num_threads(1)
    movies, bank, w = setup()
    tr, va = split_windows(w, 0.25, 0)
    recipe = Recipe(lr=1e-2, epochs=12, batch_size=4, eval_batch_size=8, lr_decay_epochs=(10,), seed=3)
    m1, h1 = fit(cfg(), recipe, (bank, tr), (bank, va), (bank, w), torch.device("cpu"), progress=False)
    m2, h2 = fit(cfg(), recipe, (bank, tr), (bank, va), (bank, w), torch.device("cpu"), progress=False)
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss and h1.test_loss == h2.test_loss
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert h1.train_loss[-1] < 0.7 * h1.train_loss[0]
    p1 = predict_windows(m1, bank, w, 7)
    p2 = predict_windows(m2, bank, w, 3)  # batch size does not change predictions
    for mid in p1:
        np.testing.assert_allclose(p1[mid], p2[mid], rtol=0, atol=1e-6)


def test_inference_matches_training_forward_and_covers_every_transition():
    movies, bank, w = setup()
    torch.manual_seed(0)
    from sceneseg.models.lgss.network import LGSS
    model = LGSS(cfg()).eval()
    probs = predict_windows(model, bank, w, 64)
    assert {k: len(v) for k, v in probs.items()} == {m.imdb_id: m.n_shots - 1 for m in movies}
    rows = np.arange(len(w))
    feats, _, own = bank.batch(w, rows)
    with torch.no_grad():
        direct = torch.softmax(model(feats), -1)[..., 1][own].numpy()
    _, _, owned = predict_owned(model, bank, w, len(w))  # same batch as the direct call: bit-identical
    np.testing.assert_array_equal(owned, direct.astype(np.float64))
    _, _, small = predict_owned(model, bank, w, 5)  # other batch sizes: equal up to float32 rounding
    np.testing.assert_allclose(small, owned, rtol=0, atol=1e-6)


def test_threshold_is_chosen_on_validation_only(tmp_path):
    movies, bank, w = setup()
    tr, va = split_windows(w, 0.25, 0)
    model, _ = fit(cfg(), Recipe(epochs=3, batch_size=4, seed=0), (bank, tr), (bank, va), None,
                   torch.device("cpu"), progress=False)
    t = validation_threshold(model, bank, va, "f1", 8)
    assert 0.0 <= t <= 1.0
    assert validation_threshold(model, bank, va, "fixed", 8) == 0.5
    # changing the labels outside the validation windows cannot change the threshold
    flipped = [Movie(m.imdb_id, m.features, m.boundary.copy(), m.shot_end_frame) for m in movies]
    val_trans = set()
    _, trans, _ = predict_owned(model, bank, va, 8)
    movie_idx = np.broadcast_to(va.movie[:, None], va.own.shape)[va.own]
    val_trans = set(zip(movie_idx.tolist(), trans.tolist()))
    for i, m in enumerate(flipped):
        for t_ in range(m.n_shots - 1):
            if (i, t_) not in val_trans:
                m.boundary[t_] = not m.boundary[t_]
    bank2 = ShotBank(flipped, list(DIMS), torch.device("cpu"), 4)
    assert validation_threshold(model, bank2, va, "f1", 8) == t
    # checkpoint round trip keeps weights, threshold and geometry, loads with weights_only
    save_checkpoint(tmp_path / "m.pt", "lgss", model, {"net": cfg().to_dict(), "seq_len": 5}, t, "f1",
                    {"train": {"lr": 0.01}}, "abc")
    ck = load_checkpoint(tmp_path / "m.pt")
    assert (ck.threshold, ck.config["seq_len"], ck.threshold_metric, ck.git_commit) == (t, 5, "f1", "abc")
    assert ck.kind.name == "lgss" and not (tmp_path / ".m.pt.tmp").exists()
    np.testing.assert_array_equal(predict_windows(ck.model, bank, w, 8)["tt0"], predict_windows(model, bank, w, 8)["tt0"])


def test_bank_errors():
    movies, bank, w = setup()
    with pytest.raises(ValueError, match="expected a 'audio' feature array"):
        ShotBank(movies, ["place", "audio"], torch.device("cpu"), 4)
    other = build_windows(["tt0"], [40], 5)
    with pytest.raises(ValueError, match="rerun featurize"):
        predict_windows(None, bank, other, 8)


def test_bank_refusals_name_the_movie_and_say_what_differs():
    movies, bank, w = setup()
    with pytest.raises(ValueError, match=r"^expected at least one movie, found none$"):
        ShotBank([], list(DIMS), torch.device("cpu"), 4)
    no_cast = [Movie(m.imdb_id, {"place": m.features["place"]}, m.boundary, m.shot_end_frame) for m in movies]
    with pytest.raises(ValueError, match=r"^movie tt2: expected a 'cast' feature array, found none$"):
        ShotBank([movies[1], no_cast[2], no_cast[3]], list(DIMS), torch.device("cpu"), 4)  # the first one lacking it
    wrong = ("windows index movies ['tt0', 'tt1', 'tt2']... (4) but the data holds ['tt0', 'tt1', 'tt2']... (4) "
             "with other shot counts: rerun featurize")
    fewer = build_windows([m.imdb_id for m in movies], [40, 3, 56, 25], 5)  # same movies, one count differs
    with pytest.raises(ValueError, match=f"^{re.escape(wrong)}$"):
        predict_windows(None, bank, fewer, 8)
    dropped = w.own & (w.movie == 2)[:, None] & (w.start < 10)[:, None]  # movie tt2's first windows answer nothing
    gap = dataclasses.replace(w, own=w.own & ~dropped)
    with pytest.raises(ValueError, match=rf"^movie tt2: {int(dropped.sum())} transitions got no prediction from the "
                                         r"windows$"):
        predict_windows(LGSS(cfg()), bank, gap, 8)


def test_bank_holds_float32_features_and_int64_labels_whatever_it_is_given():
    movies, _, _ = setup()
    wide = [Movie(m.imdb_id, {k: v.astype(np.float64) for k, v in m.features.items()}, m.boundary.astype(np.int32),
                  m.shot_end_frame) for m in movies]
    bank = ShotBank(wide, list(DIMS), torch.device("cpu"), 4)
    assert {f.dtype for f in bank.features.values()} == {torch.float32} and bank.labels.dtype == torch.int64
    assert bank.n_shots.dtype == np.int64 and bank.shot_offset.tolist() == [0, 40, 43, 100]


def test_autocast_is_bf16_on_cuda_and_off_elsewhere():
    import warnings

    from sceneseg.models.lgss.inference import autocast_for

    cpu = autocast_for(torch.device("cpu"))
    assert (cpu.device, cpu._enabled) == ("cpu", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constructing a CUDA autocast without CUDA warns and disables it
        cuda = autocast_for(torch.device("cuda", 0))
    assert (cuda.device, cuda.fast_dtype) == ("cuda", torch.bfloat16)


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")


def test_no_finite_validation_loss_is_a_clear_error(monkeypatch):
    import sceneseg.models.lgss.training as train_mod
    movies, bank, w = setup()
    tr, va = split_windows(w, 0.25, 0)
    monkeypatch.setattr(train_mod, "mean_loss", lambda *a, **k: float("nan"))
    with pytest.raises(ValueError, match="training diverged: the validation loss was not finite in any of the 2"):
        fit(cfg(), Recipe(epochs=2, batch_size=4), (bank, tr), (bank, va), None, torch.device("cpu"), progress=False)


def test_a_nan_epoch_does_not_stop_the_best_epoch_being_kept(monkeypatch):
    import sceneseg.models.lgss.training as train_mod
    movies, bank, w = setup()
    tr, va = split_windows(w, 0.25, 0)
    losses = iter([float("nan"), 0.5, 0.7])
    monkeypatch.setattr(train_mod, "mean_loss", lambda *a, **k: next(losses))
    _, hist = fit(cfg(), Recipe(epochs=3, batch_size=4), (bank, tr), (bank, va), None, torch.device("cpu"), progress=False)
    assert hist.best_epoch == 2
