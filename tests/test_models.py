"""Every registered model through the one interface; the simseq model and the stacked reference."""

import dataclasses
from pathlib import Path

import eluvio_reference as eluvio
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from test_threshold import brute_force_best, pooled_f1, tie_break

from sceneseg.config import load_params
from sceneseg.data.movies import Movie, load_movies, read_index, save_movie
from sceneseg.data.simfeatures import cross_max, unit_rows, window_cosines, zscore_columns
from sceneseg.data.sources import materialize
from sceneseg.data.split import split_all_windows, split_movies
from sceneseg.data.synthetic import SyntheticSpec
from sceneseg.models.base import TrainData, owned_transitions
from sceneseg.models.checkpoint import load_checkpoint, save_checkpoint
from sceneseg.models.references.stacked import features as stacked_features
from sceneseg.models.references.stacked import fit_stacked
from sceneseg.models.registry import MODELS, get_model, model_params
from sceneseg.predict import predict_input

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def tiny(params, model: str, epochs: int = 4, **own):
    """Shared and own params of a tiny, fast run of ``model``."""
    common = dataclasses.replace(params.train, model=model, epochs=epochs, batch_size=4)
    small = {"lgss": dict(sim_channel=8, lstm_hidden=8, fc_hidden=8, lr_decay_epochs=[2], eval_batch_size=16),
             "simseq": dict(hidden=16, crop_len=32, patience=0)}[model]
    return common, dataclasses.replace(model_params(params, model), **{**small, **own})


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def make_data(root: Path, spec: SyntheticSpec, params, val_by: str = "window") -> TrainData:
    materialize("synthetic", root, cache_dir=root.parent, synthetic=spec)
    n_shots = {m["imdb_id"]: m["n_shots"] for m in read_index(root)["movies"]}
    split = split_movies(sorted(n_shots), 0.25, "last", 0.25, val_by, 0)
    return TrainData(root, split, split_all_windows(split, n_shots, 5, val_by, 0.25, 0))


@pytest.fixture(scope="module")
def data(tmp_path_factory, params) -> TrainData:
    return make_data(tmp_path_factory.mktemp("a") / "movies", SyntheticSpec(8, 60, 90, seed=1, min_setups=2, max_setups=3, preset="easy"), params)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_saves_loads_and_predicts_through_the_interface(name, data, params, tmp_path):
    kind = get_model(name)
    common, own = tiny(params, name, epochs=3)
    epochs = []
    trained = kind.train(data, own, common, CPU, on_epoch=lambda e, losses: epochs.append((e, losses)), progress=False)
    assert [e for e, _ in epochs] == [1, 2, 3] and all({"train", "val"} <= set(v) for _, v in epochs)
    assert 1 <= trained.best_epoch <= 3 and 0.0 <= trained.threshold <= 1.0 and trained.test_loss > 0
    test = data.movies("test")
    prob = kind.predict(trained.model, trained.config, test, CPU, 16)
    assert set(prob) == {m.imdb_id for m in test}
    for m in test:
        assert prob[m.imdb_id].shape == (m.n_shots - 1,) and ((prob[m.imdb_id] >= 0) & (prob[m.imdb_id] <= 1)).all()
    save_checkpoint(tmp_path / "m.pt", name, trained.model, trained.config, trained.threshold, "f1", {}, "x")
    ck = load_checkpoint(tmp_path / "m.pt")
    assert ck.kind is kind and ck.threshold == trained.threshold and set(ck.feature_dims) == set(own.modalities)
    again = ck.predict(test, CPU)  # the model's own inference batch: LGSS's is its run's lgss.eval_batch_size
    assert ck.config.get("eval_batch_size", 16) == 16
    for m in test:
        np.testing.assert_array_equal(again[m.imdb_id], prob[m.imdb_id])
    # the same seed gives the same model (CPU)
    twice = kind.train(data, own, dataclasses.replace(common, epochs=1), CPU, progress=False)
    assert twice.train_loss == trained.train_loss[:1]


@pytest.mark.parametrize("name", list(MODELS))
def test_train_lr_overrides_the_models_own(name, data, params):
    kind = get_model(name)
    common, own = tiny(params, name)
    a = kind.train(data, own, dataclasses.replace(common, epochs=1), CPU, progress=False)
    b = kind.train(data, own, dataclasses.replace(common, epochs=1, lr=own.lr), CPU, progress=False)
    c = kind.train(data, own, dataclasses.replace(common, epochs=1, lr=own.lr / 10), CPU, progress=False)
    assert a.train_loss == b.train_loss and a.train_loss != c.train_loss


def test_simseq_loss_reads_only_the_transitions_the_train_windows_own(data, params):
    """Flipping every label that no train window owns (validation and test) leaves training unchanged."""
    kind = get_model("simseq")
    common, own = tiny(params, "simseq", epochs=2)
    base = kind.train(data, own, common, CPU, progress=False)
    flipped = TrainData(data.movies_dir, data.split, data.windows)
    owned = data.owned("train")
    for m in data.movies("train"):
        b = np.asarray(m.boundary).copy()
        b[~owned[m.imdb_id]] = ~b[~owned[m.imdb_id]]
        flipped._movies[m.imdb_id] = Movie(m.imdb_id, m.features, b, m.shot_end_frame, m.baseline)
    other = kind.train(flipped, own, common, CPU, progress=False)
    assert other.train_loss == base.train_loss  # (the validation labels flipped too: the kept epoch may differ)
    flipped._movies = {m.imdb_id: Movie(m.imdb_id, m.features, ~np.asarray(m.boundary), m.shot_end_frame, m.baseline)
                       for m in data.movies("train")}
    assert kind.train(flipped, own, common, CPU, progress=False).train_loss != base.train_loss


def test_simseq_threshold_is_the_validation_f1_optimum(data, params):
    kind = get_model("simseq")
    common, own = tiny(params, "simseq")
    trained = kind.train(data, own, common, CPU, progress=False)
    val_mask = data.owned("val")
    prob = kind.predict(trained.model, trained.config, data.movies("val"), CPU, 16)
    gt = np.concatenate([np.asarray(m.boundary)[val_mask[m.imdb_id]] for m in data.movies("val")])
    p = np.concatenate([prob[m.imdb_id][val_mask[m.imdb_id]] for m in data.movies("val")])

    def f1(t):
        tp = np.sum((p >= t) & gt)
        return 2 * tp / max(np.sum(p >= t) + gt.sum(), 1)

    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    assert f1(trained.threshold) == pytest.approx(max(f1(t) for t in grid), abs=1e-12)
    _, winners = brute_force_best(lambda t: pooled_f1(gt.tolist(), p.tolist(), t))
    assert trained.threshold == tie_break(winners)


def test_simseq_works_without_the_shipped_prediction_and_says_so(data, params, tmp_path):
    kind = get_model("simseq")
    common, own = tiny(params, "simseq", epochs=6)
    trained = kind.train(data, own, common, CPU, progress=False)
    test = data.movies("test")
    with_p = kind.predict(trained.model, trained.config, test, CPU, 16)
    bare = [Movie(m.imdb_id, m.features, m.boundary, m.shot_end_frame, None) for m in test]
    without = kind.predict(trained.model, trained.config, bare, CPU, 16)
    gt = np.concatenate([np.asarray(m.boundary) for m in test])
    ap = average_precision_score(gt, np.concatenate([without[m.imdb_id] for m in test]))
    assert ap > 3 * gt.mean()  # still finds boundaries
    assert any(not np.array_equal(with_p[i], without[i]) for i in with_p)  # the input is used when present
    assert kind.inputs_used(trained.config, test[0])[-1] == "shipped prediction"
    assert "shipped prediction" not in kind.inputs_used(trained.config, bare[0])


def test_simseq_transfers_to_movies_with_other_feature_scales(data, params, tmp_path):
    """Trained on one set, `sceneseg predict` on another set whose features are scaled x0.03-x30 per
    movie and modality still finds boundaries from the features alone (the shipped input withheld):
    AP far above chance, never a constant output."""
    kind = get_model("simseq")
    common, own = tiny(params, "simseq", epochs=8)
    trained = kind.train(data, own, common, CPU, progress=False)
    save_checkpoint(tmp_path / "m.pt", "simseq", trained.model, trained.config, trained.threshold, "f1", {}, "x")
    other = tmp_path / "other"
    materialize("synthetic", other, cache_dir=tmp_path, synthetic=SyntheticSpec(3, 80, 120, seed=9, min_setups=2, max_setups=3, scale_spread=1.5, preset="easy"))
    doc = predict_input(other, tmp_path / "m.pt", ignore_shipped=True)
    gt, prob = [], []
    for rec, m in zip(doc["movies"], load_movies(other)):
        assert m.baseline is not None and "shipped prediction" not in rec["inputs"]
        p = np.asarray(rec["boundary_prob"])
        assert p.std() > 0.05 and rec["n_scenes"] > 1  # not a constant output, not one scene
        gt.append(np.asarray(m.boundary))
        prob.append(p)
    gt, prob = np.concatenate(gt), np.concatenate(prob)
    assert average_precision_score(gt, prob) > 4 * gt.mean()


def test_similarity_features_against_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 7))
    x[3] = 0.0  # a faceless shot stays zero
    u = unit_rows(x, center=True)
    assert np.all(u[3] == 0) and np.allclose(np.linalg.norm(np.delete(u, 3, 0), axis=1), 1)
    mean = np.delete(x, 3, 0).mean(0)
    np.testing.assert_allclose(u[5], (x[5] - mean) / np.linalg.norm(x[5] - mean))
    cos, cross = window_cosines(u, (1, 3)), cross_max(u, (2, 3))
    for t in range(11):
        for j, k in enumerate((1, 3)):
            a, b = u[max(0, t - k + 1):t + 1].sum(0), u[t + 1:t + 1 + k].sum(0)
            norms = np.linalg.norm(a) * np.linalg.norm(b)  # 0 next to the faceless shot alone: cosine 0
            assert cos[t, j] == pytest.approx(a @ b / norms if norms > 0 else 0.0)
        for j, k in enumerate((2, 3)):
            best = max(u[i] @ u[jj] for i in range(max(0, t - k + 1), t + 1) for jj in range(t + 1, min(12, t + 1 + k)))
            assert cross[t, j] == pytest.approx(best)
    # scale-free: scaling a movie's features changes nothing
    np.testing.assert_allclose(window_cosines(unit_rows(x * 37.0, True), (1, 3)), cos, atol=1e-12)
    z = zscore_columns(np.c_[np.arange(5.0), np.ones(5)])
    assert np.allclose(z[:, 0].mean(), 0) and np.allclose(z[:, 0].std(), 1) and np.all(z[:, 1] == 0)


def test_stacked_fits_on_train_transitions_and_picks_its_threshold_on_validation(data, params):
    tr, va = data.movies("train"), data.movies("val")
    masks_tr, masks_va = data.owned("train"), data.owned("val")
    mods = ["place", "cast", "action", "audio"]
    ref = fit_stacked(tr, masks_tr, va, masks_va, mods, (1, 2, 4, 8))
    assert ref.with_shipped and ref.pipeline[-1].coef_.shape == (1, 17)  # 4 modalities x 4 widths + shipped
    # only the training transitions are fitted: flipping the others' labels changes nothing
    flipped = []
    for m in tr:
        b = np.asarray(m.boundary).copy()
        b[~masks_tr[m.imdb_id]] = ~b[~masks_tr[m.imdb_id]]
        flipped.append(Movie(m.imdb_id, m.features, b, m.shot_end_frame, m.baseline))
    again = fit_stacked(flipped, masks_tr, va, masks_va, mods, (1, 2, 4, 8))
    np.testing.assert_array_equal(again.pipeline[-1].coef_, ref.pipeline[-1].coef_)
    # the threshold maximises pooled F1 over the validation transitions
    x = np.concatenate([stacked_features(m, mods, (1, 2, 4, 8), True)[masks_va[m.imdb_id]] for m in va])
    y = np.concatenate([np.asarray(m.boundary)[masks_va[m.imdb_id]] for m in va])
    _, winners = brute_force_best(lambda t: pooled_f1(y.tolist(), ref.pipeline.predict_proba(x)[:, 1].tolist(), t))
    assert ref.threshold == tie_break(winners)
    # without a shipped prediction on some movie, the reference does without it
    bare = [Movie(m.imdb_id, m.features, m.boundary, m.shot_end_frame, None) for m in tr]
    assert not fit_stacked(bare, masks_tr, va, masks_va, mods).with_shipped


def test_owned_transitions_partition_the_train_movies(data):
    tr, va = owned_transitions(data.windows["train"]), owned_transitions(data.windows["val"])
    for m in data.movies("train"):
        assert not (tr[m.imdb_id] & va[m.imdb_id]).any() and (tr[m.imdb_id] | va[m.imdb_id]).all()


def test_whole_validation_movies_and_the_miou_threshold(tmp_path, params):
    """With split.val_by: movie both models validate on whole held-out movies; 'miou' picks the
    threshold that maximises their mean Miou."""
    data = make_data(tmp_path / "movies", SyntheticSpec(8, 40, 60, seed=3, min_setups=2, max_setups=3, preset="easy"), params, val_by="movie")
    assert set(data.split["val"]).isdisjoint(data.split["train"]) and data.split["val"]
    kind = get_model("simseq")
    common, own = tiny(params, "simseq", epochs=3)
    trained = kind.train(data, own, dataclasses.replace(common, threshold_metric="miou"), CPU, progress=False)
    val = data.movies("val")
    prob = kind.predict(trained.model, trained.config, val, CPU, 16)

    def best_by_miou(p: dict) -> float:  # brute force: mean Miou of the reference at every candidate
        _, winners = brute_force_best(lambda t: np.mean([eluvio.miou(m.boundary, eluvio.boundaries(p[m.imdb_id], t),
                                                                     m.shot_end_frame) for m in val]))
        return tie_break(winners)

    assert trained.threshold == best_by_miou(prob)
    ref = fit_stacked(data.movies("train"), None, val, None, own.modalities, threshold_metric="miou")
    assert ref.threshold == best_by_miou(ref.predict(val))


@pytest.mark.parametrize("temporal", ["gru", "lstm", "conv"])
def test_simseq_padding_reaches_no_layer(temporal):
    """A movie shorter than the crop gives the same logits alone and zero-padded in a batch with a
    longer one, in training mode (dropout off): the standardised padding (-mean/std) would otherwise
    reach the convolutions and the reverse GRU (or the dilated convolutions beyond its end)."""
    from sceneseg.models.simseq.features import n_features
    from sceneseg.models.simseq.network import SimSeqNet

    cfg = {"feature_dims": {"place": 4, "cast": 3}, "widths": [1, 2], "cross_widths": [2], "hidden": 8, "dropout": 0.0,
           "temporal": temporal, "dilations": [1, 2, 4]}
    torch.manual_seed(0)
    net = SimSeqNet(cfg).train()
    with torch.no_grad():
        net.mean.normal_()
        net.std.uniform_(0.5, 2.0)
    short, long = torch.randn(1, 7, n_features(cfg)), torch.randn(1, 12, n_features(cfg))
    short[..., -1], long[..., -1] = 1.0, 1.0
    alone = net(short)
    batch = torch.zeros(2, 12, n_features(cfg))
    batch[0, :7], batch[1] = short[0], long[0]
    padded = net(batch, torch.tensor([7, 12]))
    np.testing.assert_allclose(padded[0, :7].detach().numpy(), alone[0].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(padded[1].detach().numpy(), net(long)[0].detach().numpy(), atol=1e-6)
    # without the lengths the padding does change the short movie's logits (what the test guards)
    assert not np.allclose(net(batch)[0, :7].detach().numpy(), alone[0].detach().numpy(), atol=1e-4)


def test_simseq_divergence_is_one_sentence(data, params):
    common, own = tiny(params, "simseq", epochs=3, tree_iters=0)
    common = dataclasses.replace(common, lr=1e30)
    with pytest.raises(ValueError, match=r"^training diverged in epoch 1: .* not finite|^training diverged in epoch 1: the training loss is nan") as e:
        get_model("simseq").train(data, own, common, CPU, progress=False)
    assert "learning rate 1e+30 is likely too high" in str(e.value)



def test_a_diverged_simseq_run_gives_the_torch_threads_back(data, params):
    """Beside the tree fit the network runs on one torch thread; a run that raises restores the count."""
    common, own = tiny(params, "simseq", epochs=3, tree_iters=5)
    common = dataclasses.replace(common, lr=1e30)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match="^training diverged in epoch 1"):
            get_model("simseq").train(data, own, common, CPU, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

def test_predict_can_ignore_a_shipped_prediction_present_in_the_input(data, params, tmp_path):
    common, own = tiny(params, "simseq", epochs=2, tree_iters=20)
    trained = get_model("simseq").train(data, own, common, CPU, progress=False)
    save_checkpoint(tmp_path / "m.pt", "simseq", trained.model, trained.config, trained.threshold, "f1", {}, "")
    movie = data.movies("test")[0]
    assert movie.baseline is not None
    save_movie(movie, tmp_path / "with")
    save_movie(Movie(movie.imdb_id, movie.features, movie.boundary, movie.shot_end_frame, None), tmp_path / "without")
    used = predict_input(tmp_path / "with", tmp_path / "m.pt", device_name="cpu")["movies"][0]
    ignored = predict_input(tmp_path / "with", tmp_path / "m.pt", device_name="cpu", ignore_shipped=True)["movies"][0]
    absent = predict_input(tmp_path / "without", tmp_path / "m.pt", device_name="cpu")["movies"][0]
    assert used["inputs"][-1] == "shipped prediction" and "shipped prediction" not in ignored["inputs"]
    assert ignored["boundary_prob"] == absent["boundary_prob"] != used["boundary_prob"]


def test_simseq_lstm_is_torchs_bidirectional_lstm():
    """``temporal: lstm``'s two unpadded LSTMs equal torch's bidirectional LSTM with the same weights, on
    whole rows and on zero-padded rows of other lengths (packed for torch's)."""
    from sceneseg.models.simseq.network import SimSeqNet

    cfg = {"feature_dims": {"place": 4}, "widths": [1], "cross_widths": [2], "hidden": 6, "dropout": 0.0,
           "temporal": "lstm", "dilations": [1]}
    torch.manual_seed(1)
    net = SimSeqNet(cfg)
    bi = torch.nn.LSTM(6, 6, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name, value in net.fwd.named_parameters():
            getattr(bi, name).copy_(value)
        for name, value in net.bwd.named_parameters():
            getattr(bi, f"{name}_reverse").copy_(value)
    h = torch.randn(3, 9, 6)
    torch.testing.assert_close(net._bilstm(h, None), bi(h)[0], rtol=0, atol=1e-6)
    lengths = torch.tensor([9, 4, 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
    want = torch.nn.utils.rnn.pad_packed_sequence(bi(packed)[0], batch_first=True, total_length=9)[0]
    got = net._bilstm(h, lengths)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(got[row, :n], want[row, :n], rtol=0, atol=1e-6)
    assert not torch.allclose(got[1, :4, 6:], net._bilstm(h[1:2, :4].flip(1), None)[0, :, 6:], atol=1e-3)
