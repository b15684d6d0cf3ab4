"""The similarity features as a DVC output: computed once per movie set and feature params.

The ``features`` stage computes :func:`sceneseg.data.simfeatures.transition_features` of every movie
with simseq's modalities and widths and saves them; train and evaluate attach the saved arrays to
the movies they load (:func:`attach`), so a sweep over learning rates, seeds or epochs reads them
instead of computing them again. One function, :func:`similarity`, gives a movie's features in
every case: the attached array when it was computed with the same modalities and widths, else
computed now with the same code (``sceneseg predict`` on new movies, the boosted reference with its
own widths). Cached and computed features are the same numbers.

``data/features/`` holds ``spec.json`` (the modalities, widths and cross widths) and one
``<imdb_id>.npy`` per movie: float64 [N-1, F], the columns of ``transition_features``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sceneseg.data.movies import Movie, load_movie, read_index, replacing_folder
from sceneseg.data.simfeatures import transition_features
from sceneseg.progress import progress

SPEC_FILE = "spec.json"
_KEY = "similarity"  # Movie.extra[_KEY] = (FeatureSpec, [N-1, F] array)


@dataclass(frozen=True)
class FeatureSpec:
    """What the similarity features of a movie are computed from."""

    modalities: tuple[str, ...]
    widths: tuple[int, ...]
    cross_widths: tuple[int, ...]
    match_widths: tuple[int, ...] = ()

    @property
    def n_columns(self) -> int:
        return len(self.modalities) * (2 * len(self.widths) + len(self.cross_widths) + 2 * len(self.match_widths))

    def columns_of(self, other: FeatureSpec) -> np.ndarray | None:
        """The columns of ``other``'s features inside this spec's (``other``'s order), when this spec
        computes all of them (the same modalities in the same order, its widths among these); else None."""
        if other.modalities != self.modalities or not (set(other.widths) <= set(self.widths) and set(
                other.cross_widths) <= set(self.cross_widths) and set(other.match_widths) <= set(self.match_widths)):
            return None
        w, c, m = len(self.widths), len(self.cross_widths), len(self.match_widths)
        per = 2 * w + c + 2 * m  # one modality: raw cos_k, centred cos_k, cross_k, match_k (after, before)
        one = ([self.widths.index(k) for k in other.widths] + [w + self.widths.index(k) for k in other.widths]
               + [2 * w + self.cross_widths.index(k) for k in other.cross_widths]
               + [2 * w + c + 2 * self.match_widths.index(k) + s for k in other.match_widths for s in (0, 1)])
        return np.concatenate([np.asarray(one, dtype=np.int64) + i * per for i in range(len(self.modalities))])

    def to_json(self) -> dict:
        return {"modalities": list(self.modalities), "widths": list(self.widths),
                "cross_widths": list(self.cross_widths), "match_widths": list(self.match_widths)}


def similarity(movie: Movie, spec: FeatureSpec) -> np.ndarray:
    """[N-1, F] float64 similarity features of ``movie``: the attached ones if they were computed with
    ``spec`` or with a spec that holds all of its columns (the boosted reference's widths among
    simseq's: those columns, equal to computing them now to about 1e-12), else
    :func:`sceneseg.data.simfeatures.transition_features` now."""
    cached = cached_columns(movie, spec)
    if cached is not None:
        return cached
    return transition_features({m: movie.features[m] for m in spec.modalities}, spec.widths, spec.cross_widths,
                               spec.match_widths)


def cached_columns(movie: Movie, spec: FeatureSpec) -> np.ndarray | None:
    """[N-1, F] the attached features of ``spec`` (the whole array, or the columns it names of a
    spec that holds them all), or None when nothing attached holds them."""
    cached = movie.extra.get(_KEY)
    if cached is None:
        return None
    if cached[0] == spec:
        return cached[1]
    cols = cached[0].columns_of(spec)
    return None if cols is None else np.asarray(cached[1][:, cols])


def cached_raw_cosines(movie: Movie, modalities: tuple[str, ...], widths: tuple[int, ...]) -> np.ndarray | None:
    """[N-1, modalities x widths] the attached ``cos_k`` of the raw shots (the stacked reference's
    window cosines), or None when nothing attached holds them."""
    cached = movie.extra.get(_KEY)
    cols = cached[0].columns_of(FeatureSpec(tuple(modalities), tuple(widths), ())) if cached is not None else None
    if cols is None:
        return None
    w = len(widths)  # per modality: raw cos_k, then centred cos_k
    return np.asarray(cached[1][:, cols.reshape(len(modalities), 2 * w)[:, :w].reshape(-1)])


def write_features(movies_dir: Path, out: Path, spec: FeatureSpec, show_progress: bool = True) -> int:
    """Compute the features of every movie in ``movies_dir`` (index order) and write them to ``out``
    (replaced as a whole: a temp folder renamed at the end, so a failure leaves nothing half-written).
    Returns the number of transitions."""
    ids = [m["imdb_id"] for m in read_index(Path(movies_dir))["movies"]]
    total = 0
    with replacing_folder(Path(out)) as tmp:
        for imdb_id in progress(ids, desc="features", unit="movie", disable=not show_progress):
            f = similarity(load_movie(Path(movies_dir) / imdb_id), spec)
            np.save(tmp / f"{imdb_id}.npy", f)
            total += len(f)
        (tmp / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=2) + "\n")
    return total


def read_spec(features_dir: Path) -> FeatureSpec:
    """The spec a features folder was computed with; a missing or malformed one names the file."""
    f = Path(features_dir) / SPEC_FILE
    try:
        doc = json.loads(f.read_text())
        return FeatureSpec(tuple(doc["modalities"]), tuple(int(k) for k in doc["widths"]),
                           tuple(int(k) for k in doc["cross_widths"]),
                           tuple(int(k) for k in doc.get("match_widths", [])))
    except FileNotFoundError:
        raise ValueError(f"{f}: expected the spec of the cached features (run the features stage), "
                         f"found nothing") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{f}: expected modalities, widths and cross_widths (rerun the features stage), "
                         f"found {type(e).__name__}: {e}") from None


def attach(movies: list[Movie], features_dir: Path | None) -> list[Movie]:
    """The movies with their cached features (memory-mapped) attached, for :func:`similarity` to read.

    Each movie must have its file, of shape [N-1, F] for the spec; otherwise an error names it."""
    if features_dir is None:
        return movies
    spec = read_spec(features_dir)
    out = []
    for m in movies:
        f = Path(features_dir) / f"{m.imdb_id}.npy"
        if not f.exists():
            raise ValueError(f"{f}: expected the cached features of movie {m.imdb_id} (rerun the features "
                             f"stage), found nothing")
        arr = np.load(f, mmap_mode="r", allow_pickle=False)
        if arr.shape != (m.n_shots - 1, spec.n_columns) or arr.dtype != np.float64:
            raise ValueError(f"{f}: expected float64 [{m.n_shots - 1}, {spec.n_columns}] for {m.n_shots} shots, "
                             f"found {arr.dtype} {list(arr.shape)} (rerun the features stage)")
        out.append(dataclasses.replace(m, extra={**m.extra, _KEY: (spec, arr)}))
    return out
