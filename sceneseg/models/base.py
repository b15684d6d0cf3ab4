"""The small interface every model of the pipeline implements.

Train, evaluate, threshold and predict only talk to a :class:`ModelKind`: it trains itself on a
:class:`TrainData`, rebuilds a network from the config stored in a checkpoint, and predicts the
boundary probability of every transition of whole movies. Adding a model means one module with
one ``ModelKind`` subclass, registered in :mod:`sceneseg.models.registry`, and its params section
in params.yaml (parsed by the model: ``parse_params``); no stage changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from sceneseg.data.featurecache import attach
from sceneseg.data.movies import Movie, load_movies
from sceneseg.data.windows import Windows, transition_index
from sceneseg.training.loop import EpochCallback
from sceneseg.training.resume import ResumeStore


@dataclass
class TrainData:
    """What the train stage hands to a model: the converted movies, the split, featurize's windows and
    the features stage's similarity features.

    The windows define validation for every model: with ``split.val_by: window`` the validation
    transitions are those the val windows own (inside the train movies), otherwise whole movies.
    """

    movies_dir: Path
    split: dict[str, list[str]]
    windows: dict[str, Windows]  # "train" / "val" / "test"
    features_dir: Path | None = None  # the features stage's output, attached to the movies (sceneseg.data.featurecache)
    _movies: dict[str, Movie] = field(default_factory=dict, repr=False)

    def movies(self, name: str) -> list[Movie]:
        """The movies that the ``name`` windows index ("train", "val" or "test"), loaded once."""
        ids = self.windows[name].movie_ids
        todo = [i for i in ids if i not in self._movies]
        if todo:
            self._movies.update({m.imdb_id: m for m in attach(load_movies(self.movies_dir, todo), self.features_dir)})
        return [self._movies[i] for i in ids]

    def owned(self, name: str) -> dict[str, np.ndarray]:
        """Per movie of the ``name`` windows, a bool mask [N-1] of the transitions those windows own."""
        return owned_transitions(self.windows[name])


def owned_transitions(w: Windows) -> dict[str, np.ndarray]:
    """Movie id -> bool [N-1]: the transitions that the windows ``w`` answer for."""
    masks = {mid: np.zeros(int(n) - 1, dtype=bool) for mid, n in zip(w.movie_ids, w.n_shots)}
    trans = transition_index(w)  # [W, S]
    for i, mid in enumerate(w.movie_ids):
        rows = w.movie == i
        masks[mid][trans[rows][w.own[rows]]] = True
    return masks


@dataclass
class Trained:
    """A trained model and what its training measured."""

    model: torch.nn.Module
    config: dict  # everything ``ModelKind.build`` needs (plain builtins: stored in the checkpoint)
    threshold: float  # chosen on validation
    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int  # 1-based epoch whose weights are kept
    test_loss: float | None = None
    seconds: float = 0.0
    transitions_per_epoch: int = 0  # training transitions seen per epoch (for throughput)
    extra: dict = field(default_factory=dict)  # model-specific summary numbers (e.g. validation AP)


def train_data_parallel(train_fn: Callable, data: TrainData, p, common, device: torch.device, on_epoch,
                        progress: bool, resume) -> Trained:
    """``train_fn(data, p, common, device, on_epoch, progress, resume, dist)`` on ``common.world_size``
    processes (see :mod:`sceneseg.training.distributed`); rank 0's result, its epochs reported to ``on_epoch``.

    ``train_fn`` must be a module-level function (the processes are spawned) that returns the
    trained model on rank 0 and None elsewhere. Every rank loads the movies itself: nothing large
    travels to the processes, only the trained model comes back."""
    from sceneseg.training.distributed import available_cores, cpu_threads, jobs_from_env, launch, nodes_from_env

    fresh = TrainData(data.movies_dir, data.split, data.windows, data.features_dir)
    nodes = nodes_from_env()
    threads = cpu_threads(common.num_threads, jobs_from_env(), common.world_size // nodes, available_cores())
    if nodes > 1:  # each machine has its own cache: ranks could resume from different epochs
        resume = None
    trained, epochs = launch(common.world_size, device.type, _train_rank,
                             (train_fn, fresh, p, common, progress, resume), threads)
    trained.model.to(device)
    for e, losses in enumerate(epochs):
        if on_epoch:
            on_epoch(e + 1, losses)
    return trained


def _train_rank(dist, train_fn: Callable, data: TrainData, p, common, progress: bool, resume):
    """One process of :func:`train_data_parallel`: rank 0 returns (trained model on the CPU, epoch losses)."""
    epochs: list[dict] = []
    trained = train_fn(data, p, common, dist.device, lambda e, losses: epochs.append(losses),
                       progress and dist.rank == 0, resume, dist)
    if trained is None:
        return None
    trained.model.cpu()
    return trained, epochs


class ModelKind:
    """One model of the pipeline. Subclasses set ``name`` and ``Params`` and implement the methods."""

    name: ClassVar[str]
    Params: ClassVar[type]  # frozen dataclass of its params.yaml section (the model's ``params`` module)

    def parse_params(self, raw: dict, source: str = "params.yaml"):
        """The model's own params section (``raw``: its mapping in ``source``) as its ``Params``,
        checked; a ValueError naming ``source`` and ``section.key`` otherwise."""
        raise NotImplementedError

    def train(self, data: TrainData, p, common, device: torch.device, on_epoch: EpochCallback | None = None,
              progress: bool = True, resume: ResumeStore | None = None) -> Trained:
        """Train on ``data`` with the model's params ``p`` and the shared ``train`` params ``common``.

        With ``resume``, save the full state after every epoch there and continue a saved state of
        the same run (reporting its finished epochs to ``on_epoch`` again)."""
        raise NotImplementedError

    def build(self, config: dict) -> torch.nn.Module:
        """An untrained network of the architecture ``config`` describes (weights are loaded after)."""
        raise NotImplementedError

    def feature_dims(self, config: dict) -> dict[str, int]:
        """Modality -> feature dimension the model reads."""
        raise NotImplementedError

    def predict(self, model: torch.nn.Module, config: dict, movies: list[Movie], device: torch.device,
                batch_size: int | None = None, with_shipped: bool = True) -> dict[str, np.ndarray]:
        """Boundary probability of every transition of each movie (>= 2 shots): id -> [N-1] float64.
        ``batch_size``: sequences per inference batch for a model that batches them (None: the model's own).
        ``with_shipped=False``: without the dataset's shipped prediction even where a movie has one
        (a model that never reads it ignores the flag)."""
        raise NotImplementedError

    def inputs_used(self, config: dict, movie: Movie) -> list[str]:
        """The inputs the model used for ``movie`` (for ``sceneseg predict``)."""
        return list(self.feature_dims(config))
