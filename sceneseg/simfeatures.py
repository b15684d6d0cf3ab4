"""Scale-free features per transition: how alike the shots before and after it are.

For a movie of N shots and a modality's features ``x [N, D]``, transition t (between shots t and
t+1) gets, for each width k:

- ``cos_k``: cosine between the sum (same direction as the mean) of the k shots before
  (t-k+1 .. t) and the k shots after (t+1 .. t+k), clipped at the movie's edges;
- ``cross_k``: the highest cosine between any shot before and any shot after within k shots:
  a scene filmed from alternating camera set-ups (shot / reverse shot) keeps a high value
  across its cuts, a new scene does not.

Cosines do not change when a movie's features are scaled, so a model reading them transfers
between feature extractors and movies whose features differ in scale. ``centered`` features
subtract the movie's mean shot first (per-movie standardisation: what every shot of the movie
shares, a colour grade or a recording level, stops counting as similarity). All-zero shots
(no face in ``cast``) stay zero and have cosine 0 with everything.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def unit_rows(x: np.ndarray, center: bool) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), optionally after subtracting the mean non-zero row."""
    x = np.asarray(x, dtype=np.float64)  # [N, D]
    nonzero = np.abs(x).sum(1) > 0  # [N]
    if center and nonzero.any():
        x = np.where(nonzero[:, None], x - x[nonzero].mean(0), 0.0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)  # [N, 1]
    return x / np.maximum(norm, EPS)


def window_cosines(u: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """``cos_k`` for each width: [N, D] unit rows -> [N-1, len(widths)]."""
    n = u.shape[0]
    csum = np.concatenate([np.zeros((1, u.shape[1])), np.cumsum(u, 0)])  # [N+1, D]: csum[i] = sum u[:i]
    t = np.arange(n - 1)
    out = np.empty((n - 1, len(widths)))
    for j, k in enumerate(widths):
        before = csum[t + 1] - csum[np.maximum(t + 1 - k, 0)]  # [T, D] shots t-k+1 .. t
        after = csum[np.minimum(t + 1 + k, n)] - csum[t + 1]  # [T, D] shots t+1 .. t+k
        norms = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
        out[:, j] = np.where(norms > EPS, (before * after).sum(1) / np.maximum(norms, EPS), 0.0)
    return out


def cross_max(u: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """``cross_k`` for each width: [N, D] unit rows -> [N-1, len(widths)].

    Only the pairs within ``max(widths)`` shots of each other are ever read, so only those cosines
    are computed: one band of the Gram matrix, ``2 * max(widths) - 1`` diagonals of N values
    (memory and time proportional to N x width, not N x N)."""
    n, kmax = u.shape[0], max(widths)
    span = min(2 * kmax - 1, n - 1)  # the farthest pair: shot t - k + 1 and shot t + k
    band = np.full((span + 1, n), -np.inf)  # band[d, i] = cos(shot i, shot i + d)
    for d in range(1, span + 1):
        band[d, : n - d] = np.einsum("ij,ij->i", u[:-d], u[d:])
    t = np.arange(n - 1)
    out = np.empty((n - 1, len(widths)))
    best = np.full(n - 1, -np.inf)
    done = 0
    for k in sorted(widths):
        for a in range(k):  # shot t - a before the cut
            for b in range(1, k + 1):  # shot t + b after it
                if a < done and b <= done:
                    continue  # already in the smaller square
                i, j = np.maximum(t - a, 0), np.minimum(t + b, n - 1)  # clipped: a pair already counted
                best = np.maximum(best, band[j - i, i])
        done = k
        out[:, widths.index(k)] = best
    return out


def transition_features(features: dict[str, np.ndarray], widths: tuple[int, ...],
                        cross_widths: tuple[int, ...]) -> np.ndarray:
    """[N-1, F]: per modality (in the dict's order), ``cos_k`` of the raw shots, ``cos_k`` of the
    centred shots and ``cross_k`` of the centred shots."""
    cols = []
    for x in features.values():
        raw, centered = unit_rows(x, center=False), unit_rows(x, center=True)
        cols += [window_cosines(raw, widths), window_cosines(centered, widths), cross_max(centered, cross_widths)]
    return np.concatenate(cols, 1)


def with_context(f: np.ndarray, k: int) -> np.ndarray:
    """[T, F] -> [T, (2k + 1) F]: each row followed by the rows of the transitions t-k..t-1, t+1..t+k
    (repeated at the movie's edges)."""
    t = np.arange(len(f))
    shifts = [s for s in range(-k, k + 1) if s]
    return np.concatenate([f] + [f[np.clip(t + s, 0, len(f) - 1)] for s in shifts], 1)


def zscore_columns(f: np.ndarray) -> np.ndarray:
    """Each column minus its mean over the movie, over its std (0 where the column is constant)."""
    sd = f.std(0)
    return np.where(sd > 1e-6, (f - f.mean(0)) / np.maximum(sd, 1e-6), 0.0)
