"""``stacked``: the standing strong reference scored next to every model.

A scikit-learn logistic regression per transition on scale-free features: for each modality and
width k, the cosine between the mean of the k shots before and the k shots after the transition
(:func:`sceneseg.data.simfeatures.window_cosines`), plus the dataset's shipped prediction when every
movie has one. Fitted on the training transitions, its threshold chosen on the validation
transitions (the same ones the model's threshold is chosen on), never on test movies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sceneseg.data.featurecache import cached_raw_cosines
from sceneseg.data.movies import Movie
from sceneseg.data.simfeatures import unit_rows, window_cosines
from sceneseg.training.threshold import choose_on_validation


@dataclass
class Stacked:
    """A fitted reference: the sklearn pipeline, what it reads, its validation threshold."""

    pipeline: Pipeline
    modalities: list[str]
    widths: tuple[int, ...]
    with_shipped: bool
    threshold: float

    def predict(self, movies: list[Movie]) -> dict[str, np.ndarray]:
        """Boundary probability of every transition: id -> [N-1] float64."""
        return {m.imdb_id: self.pipeline.predict_proba(features(m, self.modalities, self.widths, self.with_shipped))[:, 1]
                for m in movies}


def features(movie: Movie, modalities: list[str], widths: tuple[int, ...], with_shipped: bool) -> np.ndarray:
    """[N-1, F]: window cosines of each modality at each width, then the shipped prediction if asked
    (the features stage's columns when it computed these widths, equal to computing them to about 1e-12)."""
    cached = cached_raw_cosines(movie, tuple(modalities), tuple(widths))
    cols = [cached] if cached is not None else \
        [window_cosines(unit_rows(movie.features[m], center=False), widths) for m in modalities]
    if with_shipped:
        if movie.baseline is None:
            raise ValueError(f"movie {movie.imdb_id}: the stacked reference was fitted with the shipped prediction, "
                             "found none")
        cols.append(np.asarray(movie.baseline, dtype=np.float64)[:, None])
    return np.concatenate(cols, 1)


def _pooled(movies: list[Movie], masks: dict[str, np.ndarray] | None, modalities, widths, with_shipped):
    xs, ys = [], []
    for m in movies:
        sel = masks[m.imdb_id] if masks is not None else slice(None)
        xs.append(features(m, modalities, widths, with_shipped)[sel])
        ys.append(np.asarray(m.boundary, dtype=bool)[sel])
    return np.concatenate(xs), np.concatenate(ys)


def fit_stacked(train: list[Movie], train_masks: dict[str, np.ndarray] | None, val: list[Movie],
                val_masks: dict[str, np.ndarray] | None, modalities: list[str], widths: tuple[int, ...] = (1, 2, 4, 8),
                c: float = 1.0, threshold_metric: str = "f1", use_shipped: bool = True) -> Stacked:
    """Fit on the masked transitions of ``train`` (all when a mask is None), choose the threshold on ``val``'s.

    ``threshold_metric``: 'f1' (pooled), 'miou' (whole validation movies) or 'fixed' (0.5).
    """
    with_shipped = use_shipped and all(m.baseline is not None for m in train + val)
    x, y = _pooled(train, train_masks, modalities, widths, with_shipped)
    if y.all() or not y.any():
        raise ValueError(f"stacked reference: the training transitions need both classes, found {int(y.sum())} "
                         f"boundaries in {y.size}")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    pipe.fit(x, y)
    ref = Stacked(pipe, list(modalities), tuple(widths), with_shipped, 0.5)
    ref.threshold = validation_threshold(ref.predict(val), val, val_masks, threshold_metric)
    return ref


def validation_threshold(prob: dict[str, np.ndarray], val: list[Movie], val_masks: dict[str, np.ndarray] | None,
                         metric: str) -> float:
    """A reference's decision threshold from its probabilities on the validation movies: 'f1' pooled over
    the masked transitions (all when the mask is None), 'miou' on the whole movies, 'fixed' 0.5."""
    sel = {m.imdb_id: val_masks[m.imdb_id] if val_masks is not None and metric == "f1" else slice(None) for m in val}
    gt = {m.imdb_id: np.asarray(m.boundary, dtype=bool)[sel[m.imdb_id]] for m in val}
    ends = {m.imdb_id: np.asarray(m.shot_end_frame) for m in val}
    return choose_on_validation(metric, gt, {i: prob[i][sel[i]] for i in gt}, ends)
