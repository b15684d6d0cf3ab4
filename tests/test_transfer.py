"""Transfer, tested honestly: the default model trained on one realistic set and applied with
`sceneseg predict` to the held-out movies of another (other seed, noise and feature scales), with
the shipped prediction withheld so that the features alone must carry it. Compared with a model
trained on the target set itself, and with a broken feature path (shots shuffled) that must fail."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from sceneseg.config import load_params
from sceneseg.data.movies import Movie, load_movies, read_index, save_movie
from sceneseg.data.sources import materialize
from sceneseg.data.split import split_all_windows, split_movies
from sceneseg.data.synthetic import SyntheticSpec
from sceneseg.models.base import TrainData
from sceneseg.models.checkpoint import save_checkpoint
from sceneseg.models.registry import get_model, model_params
from sceneseg.predict import predict_input

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def realistic(root: Path, spec: SyntheticSpec) -> TrainData:
    materialize("synthetic", root, cache_dir=root.parent, synthetic=spec)
    n_shots = {m["imdb_id"]: m["n_shots"] for m in read_index(root)["movies"]}
    split = split_movies(sorted(n_shots), 0.25, "last", 0.2, "window", 0)
    return TrainData(root, split, split_all_windows(split, n_shots, 10, "window", 0.2, 0))


def train_and_save(data: TrainData, path: Path) -> Path:
    params = load_params(ROOT / "params.yaml")
    common = dataclasses.replace(params.train, epochs=10, batch_size=8)
    own = dataclasses.replace(model_params(params, "simseq"), tree_iters=100, patience=0)
    trained = get_model("simseq").train(data, own, common, CPU, progress=False)
    save_checkpoint(path, "simseq", trained.model, trained.config, trained.threshold, "f1", {}, "test")
    return path


def without_shipped(movies: list[Movie], root: Path, shuffle: bool = False) -> Path:
    """The movies with no shipped prediction (and, to break the feature path, shots shuffled)."""
    rng = np.random.default_rng(0)
    for m in movies:
        feats = m.features
        if shuffle:
            order = rng.permutation(m.n_shots)
            feats = {k: v[order] for k, v in feats.items()}
        save_movie(Movie(m.imdb_id, feats, m.boundary, m.shot_end_frame, None), root)
    return root


def scores(folder: Path, model: Path, movies: list[Movie]) -> tuple[float, list[int]]:
    doc = predict_input(folder, model, device_name="cpu")
    assert all(rec["inputs"] == ["place", "cast", "action", "audio"] for rec in doc["movies"])  # features only
    by_id = {rec["imdb_id"]: rec for rec in doc["movies"]}
    gt = np.concatenate([m.boundary for m in movies])
    prob = np.concatenate([by_id[m.imdb_id]["boundary_prob"] for m in movies])
    return float(average_precision_score(gt, prob)), [by_id[m.imdb_id]["n_scenes"] for m in movies]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer")
    source = realistic(tmp / "source" / "movies", SyntheticSpec(12, seed=21, length_scale=0.15))
    target = realistic(tmp / "target" / "movies", SyntheticSpec(12, seed=22, length_scale=0.15, noise=1.2,
                                                                scale_spread=1.0))
    return tmp, source, target


def test_a_model_trained_on_one_set_finds_the_scenes_of_another_from_the_features_alone(sets):
    tmp, source, target = sets
    test = load_movies(target.movies_dir, target.split["test"])
    rate = np.concatenate([m.boundary for m in test]).mean()
    bare = without_shipped(test, tmp / "bare")
    transfer_ap, n_scenes = scores(bare, train_and_save(source, tmp / "source.pt"), test)
    own_ap, _ = scores(bare, train_and_save(target, tmp / "target.pt"), test)
    print(f"boundary rate {rate:.3f}: transfer AP {transfer_ap:.3f}, trained on the target {own_ap:.3f}, scenes {n_scenes}")
    assert transfer_ap >= 3 * rate, (transfer_ap, rate)
    assert transfer_ap >= 0.8 * own_ap, (transfer_ap, own_ap)
    assert min(n_scenes) > 1  # no movie collapses to one scene
    # the same check with the feature path broken (each movie's shots in random order) fails
    broken_ap, _ = scores(without_shipped(test, tmp / "broken", shuffle=True), tmp / "source.pt", test)
    print(f"broken feature path: AP {broken_ap:.3f}")
    assert broken_ap < 3 * rate, (broken_ap, rate)
