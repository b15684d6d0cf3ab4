"""``boosted``: the strong reference scored next to every model.

scikit-learn's HistGradientBoostingClassifier per transition on similarity features of every
modality (:func:`sceneseg.data.simfeatures.transition_features`: window cosines of raw and centred
shots at several widths, the best shot-to-shot match across the cut), the same features of the
neighbouring transitions (``context`` on each side), and the dataset's shipped prediction when
every movie has one. Fitted on the training transitions, its threshold chosen on the validation
transitions like the model's, never on test movies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from sceneseg.data.featurecache import FeatureSpec, similarity
from sceneseg.data.movies import Movie
from sceneseg.data.simfeatures import with_context
from sceneseg.models.references.stacked import validation_threshold


@dataclass(frozen=True)
class BoostedSpec:
    """What the reference reads and how it is fitted (the ``evaluate.boosted_*`` params)."""

    modalities: tuple[str, ...]
    widths: tuple[int, ...] = (1, 2, 4, 8, 16)
    cross_widths: tuple[int, ...] = (2, 4, 8)
    context: int = 2  # neighbouring transitions on each side
    max_iter: int = 300
    learning_rate: float = 0.1
    use_shipped: bool = True
    seed: int = 0


@dataclass
class Boosted:
    """A fitted reference: the classifier, what it reads, its validation threshold."""

    model: HistGradientBoostingClassifier
    spec: BoostedSpec
    with_shipped: bool
    threshold: float = 0.5

    def predict(self, movies: list[Movie]) -> dict[str, np.ndarray]:
        """Boundary probability of every transition: id -> [N-1] float64."""
        return {m.imdb_id: self.model.predict_proba(features(m, self.spec, self.with_shipped))[:, 1] for m in movies}


def boosted_spec(e, modalities: list[str], use_shipped: bool = True) -> BoostedSpec:
    """The spec from the ``evaluate`` params section ``e``."""
    return BoostedSpec(tuple(modalities), tuple(e.boosted_widths), tuple(e.boosted_cross_widths), e.boosted_context,
                       e.boosted_max_iter, e.boosted_lr, use_shipped)


def features(movie: Movie, spec: BoostedSpec, shipped_column: bool, use_shipped: bool = True) -> np.ndarray:
    """[N-1, F]: the similarity features with context, then the shipped prediction (NaN when not
    used: the trees send it down the branch they learned for a missing value)."""
    # the features stage's when its widths are these, else computed now with the same code
    f = with_context(similarity(movie, FeatureSpec(spec.modalities, spec.widths, spec.cross_widths)), spec.context)
    if not shipped_column:
        return f
    shipped = np.asarray(movie.baseline, dtype=np.float64) if use_shipped and movie.baseline is not None else \
        np.full(f.shape[0], np.nan)
    return np.concatenate([f, shipped[:, None]], 1)


def _pooled(movies: list[Movie], masks: dict[str, np.ndarray] | None, spec: BoostedSpec, with_shipped: bool):
    xs, ys = [], []
    for m in movies:
        sel = masks[m.imdb_id] if masks is not None else slice(None)
        xs.append(features(m, spec, with_shipped)[sel])
        ys.append(np.asarray(m.boundary, dtype=bool)[sel])
    return np.concatenate(xs), np.concatenate(ys)


def fit_boosted(train: list[Movie], train_masks: dict[str, np.ndarray] | None, val: list[Movie],
                val_masks: dict[str, np.ndarray] | None, spec: BoostedSpec, threshold_metric: str = "f1") -> Boosted:
    """Fit on the masked transitions of ``train`` (all when a mask is None), choose the threshold on ``val``'s.

    ``threshold_metric``: 'f1' (pooled), 'miou' (whole validation movies) or 'fixed' (0.5).
    """
    with_shipped = spec.use_shipped and all(m.baseline is not None for m in train + val)
    x, y = _pooled(train, train_masks, spec, with_shipped)
    if y.all() or not y.any():
        raise ValueError(f"boosted reference: the training transitions need both classes, found {int(y.sum())} "
                         f"boundaries in {y.size}")
    clf = HistGradientBoostingClassifier(max_iter=spec.max_iter, learning_rate=spec.learning_rate,
                                         early_stopping=False, random_state=spec.seed)
    clf.fit(x, y)
    ref = Boosted(clf, spec, with_shipped)
    ref.threshold = validation_threshold(ref.predict(val), val, val_masks, threshold_metric)
    return ref
