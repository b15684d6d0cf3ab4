"""Scale-free features per transition: how alike the shots before and after it are.

For a movie of N shots and a modality's features ``x [N, D]``, transition t (between shots t and
t+1) gets, for each width k:

- ``cos_k``: cosine between the sum (same direction as the mean) of the k shots before
  (t-k+1 .. t) and the k shots after (t+1 .. t+k), clipped at the movie's edges;
- ``cross_k``: the highest cosine between any shot before and any shot after within k shots:
  a scene filmed from alternating camera set-ups (shot / reverse shot) keeps a high value
  across its cuts, a new scene does not;
- ``match_k`` (two columns): each of the k shots after the cut takes its best cosine with one of
  the k shots before, and these are averaged; then the same from the shots before. Where
  ``cross_k`` asks whether *some* pair matches (one coincidence is enough), ``match_k`` asks
  how many shots find a partner across the cut: within a scene most do, across a boundary few.

Cosines do not change when a movie's features are scaled, so a model reading them transfers
between feature extractors and movies whose features differ in scale. ``centered`` features
subtract the movie's mean shot first (per-movie standardisation: what every shot of the movie
shares, a colour grade or a recording level, stops counting as similarity). All-zero shots
(no face in ``cast``) stay zero and have cosine 0 with everything.

How it is computed (the same numbers as the direct formulas, in a fraction of the time): every
cosine that a width reads is between two shots at most ``2 * max(widths) - 1`` apart, so one band
of the Gram matrix of the centred shots, ``S = 2 * max(widths)`` diagonals of N values, holds all
of them (:func:`_band`, tiled matrix products: memory and time proportional to N x S, never
N x N). The raw shots' products follow from the centred ones by adding the mean back
(``x_i . x_j = c_i . c_j + c_i . m + c_j . m + m . m``), and dividing by the norms of both shots
turns products into cosines. The norms and the product of the window sums ``before`` and
``after`` are sums of these cosines over squares and triangles of the band, read from a
two-level prefix sum (:func:`_window_terms`); ``cross_k`` is a maximum over the same band, read
from a table of maxima over runs of 1, 2, 4, ... diagonals (:func:`_cross_from_band`). Where
this loses precision the direct formula is used instead: window sums that nearly cancel
(squared norm below ``CANCEL``; the prefix sums lose about 1e-9 in absolute terms) and shots
much shorter than the movie's mean (``SHORT``: adding the mean back would lose digits).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

EPS = 1e-8
CANCEL = 1e-2  # window sums with a squared norm below this are recomputed from the shots
SHORT = 10.0  # a shot shorter than 1/SHORT of (its centred norm + the mean's norm) gets its raw products directly
CHUNK = 512  # rows converted to float64 at a time
TILE = 64  # rows per matrix product (tile x (tile + S - 1) products for tile x S band entries)


def unit_rows(x: np.ndarray, center: bool) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), optionally after subtracting the mean non-zero row."""
    x = np.asarray(x, dtype=np.float64)  # [N, D]
    nonzero = np.abs(x).sum(1) > 0  # [N]
    if center and nonzero.any():
        x = np.where(nonzero[:, None], x - x[nonzero].mean(0), 0.0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)  # [N, 1]
    return x / np.maximum(norm, EPS)


def _band(x: np.ndarray, span: int, mean: np.ndarray | None = None,
          keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The band of the Gram matrix of the rows ``c_i = x_i - mean`` (``c_i = 0`` where ``keep`` is False),
    in float64: [N, span] with ``[i, d] = c_i . c_{i+d}`` (0 past the last row); also ``|x_i|^2`` [N]
    and ``c_i . mean`` [N]. Rows are converted ``CHUNK`` at a time, products taken ``TILE`` rows at a time."""
    n, dim = x.shape
    band, sq, proj = np.zeros((n, span)), np.zeros(n), np.zeros(n)
    buf = np.zeros((min(CHUNK, n) + span - 1, dim))  # [rows + span - 1, D]: a chunk and the rows its band reaches
    for c0 in range(0, n, CHUNK):
        c1, stop = min(c0 + CHUNK, n), min(c0 + CHUNK + span - 1, n)
        rows = buf[: stop - c0]
        rows[...] = x[c0:stop]
        buf[stop - c0:] = 0.0  # past the movie
        sq[c0:c1] = np.vecdot(rows[: c1 - c0], rows[: c1 - c0])
        if mean is not None:
            rows -= mean
            proj[c0:c1] = rows[: c1 - c0] @ mean
        if keep is not None:
            rows[~keep[c0:stop]] = 0.0
            proj[c0:c1] *= keep[c0:c1]
        for s in range(0, c1 - c0, TILE):
            e = min(s + TILE, c1 - c0)
            prod = buf[s:e] @ buf[s:e + span - 1].T  # [e-s, e-s+span-1]: c_{c0+s+r} . c_{c0+s+q}
            st0, st1 = prod.strides  # band row r is prod[r, r:r+span]: a view that walks along the diagonal
            band[c0 + s:c0 + e] = as_strided(prod, (e - s, span), (st0 + st1, st1))
    return band, sq, proj


def _partner(n: int, span: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, span] index ``i + d`` of the second shot of each band entry (clipped) and whether it exists."""
    j = np.arange(n)[:, None] + np.arange(span)[None, :]
    return np.minimum(j, max(n - 1, 0)), j < n


def _cosine_band(band: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Products -> cosines: each entry over both rows' norms (at least EPS, as :func:`unit_rows` divides)."""
    j, _ = _partner(*band.shape)
    d = np.maximum(norm, EPS)
    return band / d[:, None] / d[j]


def _window_terms(g: np.ndarray, widths: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From a band of row products ``g`` [N, S >= 2 max(widths)]: for each transition t and width k,
    ``before . after``, ``|before|^2`` and ``|after|^2`` of the window sums; 3 x [N-1, len(widths)].

    With ``Q(a, b)`` = the sum of ``g`` over the pairs ``a <= i <= j <= b`` (a triangle of the band):
    ``before . after = Q(t-k+1, t+k) - Q(t+1, t+k) - Q(t-k+1, t)`` and
    ``|before|^2 = 2 Q(t-k+1, t) - sum_i g[i, 0]``. ``Q(b - m, b)`` for every b and m < S is a prefix
    sum along each row of the band, then along the anti-diagonals (``Z`` below)."""
    n, span = g.shape
    k_max = max(widths)
    # rows of rp: span zero rows (the skewed view reads above the movie), k_max zero rows, the movie, k_max zero rows
    rp = np.zeros((span + n + 2 * k_max, span))
    np.cumsum(g, axis=1, out=rp[span + k_max:span + k_max + n])  # rp[., e] = sum of g[i, :e+1]
    st0, st1 = rp.strides
    skew = as_strided(rp[span:], (n + 2 * k_max, span), (st0, st1 - st0))  # skew[r, m] = rp[span + r - m, m]
    z = np.cumsum(skew, axis=1)  # z[b + k_max, m] = Q(b - m, b)
    diag = np.zeros(n + 2 * k_max + 1)  # diag[b + k_max + 1] = sum of g[i, 0] for shots i <= b
    np.cumsum(g[:, 0], out=diag[k_max + 1:k_max + 1 + n])
    diag[k_max + 1 + n:] = diag[k_max + n]
    t = np.arange(n - 1) + k_max  # row of shot t
    dot, before, after = (np.empty((n - 1, len(widths))) for _ in range(3))
    for j, k in enumerate(widths):
        q_before, q_after = z[t, k - 1], z[t + k, k - 1]  # Q(t-k+1, t), Q(t+1, t+k)
        dot[:, j] = z[t + k, 2 * k - 1] - q_after - q_before
        before[:, j] = 2 * q_before - (diag[t + 1] - diag[t + 1 - k])
        after[:, j] = 2 * q_after - (diag[t + k + 1] - diag[t + 1])
    return dot, before, after


def _cosines(dot: np.ndarray, before_sq: np.ndarray, after_sq: np.ndarray) -> np.ndarray:
    """``before . after / (|before| |after|)``, 0 where that denominator is at most EPS (as the direct formula)."""
    norms = np.sqrt(np.maximum(before_sq, 0.0)) * np.sqrt(np.maximum(after_sq, 0.0))
    return np.where(norms > EPS, dot / np.maximum(norms, EPS), 0.0)


def _window_cosines(g: np.ndarray, widths: tuple[int, ...], rows: Callable[[np.ndarray], np.ndarray],
                    nonzero: np.ndarray) -> np.ndarray:
    """``cos_k`` [N-1, len(widths)] from the band of row products ``g``; where a window sum nearly cancels,
    from the rows themselves (``rows(idx)`` -> [len(idx), D] float64; ``nonzero`` [N]: rows that are not 0)."""
    n = len(g)
    dot, before_sq, after_sq = _window_terms(g, widths)
    out = _cosines(dot, before_sq, after_sq)
    count = np.concatenate([[0], np.cumsum(nonzero)])  # windows of zero rows only are exactly 0 in the band too
    t = np.arange(n - 1)
    for j, k in enumerate(widths):
        has_before = count[t + 1] > count[np.maximum(t + 1 - k, 0)]
        has_after = count[np.minimum(t + 1 + k, n)] > count[t + 1]
        todo = np.flatnonzero((has_before & (before_sq[:, j] < CANCEL)) | (has_after & (after_sq[:, j] < CANCEL)))
        if len(todo):
            out[todo, j] = _direct_window_cosines(rows, n, todo, k)
    return out


def _direct_window_cosines(rows: Callable[[np.ndarray], np.ndarray], n: int, ts: np.ndarray, k: int) -> np.ndarray:
    """``cos_k`` of the transitions ``ts`` summed from the rows (the definition, for the few that need it)."""
    sums = []
    for side in (np.arange(-k + 1, 1), np.arange(1, k + 1)):  # shots t-k+1 .. t, then t+1 .. t+k
        idx = ts[:, None] + side[None, :]  # [T, k]
        inside = (idx >= 0) & (idx < n)
        r = rows(np.clip(idx, 0, n - 1).ravel()).reshape(*idx.shape, -1)  # [T, k, D]
        sums.append((r * inside[..., None]).sum(1))  # [T, D]
    b, a = sums
    norms = np.linalg.norm(b, axis=1) * np.linalg.norm(a, axis=1)
    return np.where(norms > EPS, (b * a).sum(1) / np.maximum(norms, EPS), 0.0)


def _cross_from_band(g: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """``cross_k`` [N-1, len(widths)] from the band of cosines ``g`` [N, S >= 2 max(widths)].

    Shot ``i = t - q`` (q < k) before the cut meets the shots ``i + d`` after it for d in q+1 .. q+k, so
    ``cross_k(t) = max_q max_{d=q+1}^{q+k} g[t-q, d]``: the inner maximum over k consecutive diagonals
    comes from a table of maxima over runs of 2^p diagonals (two overlapping runs when k is not a power of 2)."""
    n = len(g)
    k_max = max(widths)
    span = 2 * k_max  # diagonals 0 .. 2 k_max - 1
    # level[p][d, c]: max of the diagonals d .. d + 2^p - 1 at the before-shot c - (k_max - 1); -inf for missing pairs
    first = np.full((span, n + k_max - 1), -np.inf)
    first[1:, k_max - 1:] = g[:, 1:span].T
    first[1:, k_max - 1:][np.arange(n)[None, :] + np.arange(1, span)[:, None] >= n] = -np.inf  # after-shot past the end
    levels = [first]
    for p in range(1, k_max.bit_length()):
        prev, h = levels[-1], 1 << (p - 1)
        nxt = np.full_like(prev, -np.inf)
        np.maximum(prev[:-h], prev[h:], out=nxt[:-h])
        levels.append(nxt)
    t = np.arange(n - 1)
    out = np.empty((n - 1, len(widths)))
    for j, k in enumerate(widths):
        p = k.bit_length() - 1
        q = np.arange(k)[:, None]  # [k, 1]
        col = t[None, :] - q + k_max - 1  # [k, T]: the before-shot t - q
        runs = np.maximum(levels[p][q + 1, col], levels[p][q + 1 + k - (1 << p), col])  # diagonals q+1 .. q+k
        out[:, j] = runs.max(0)
    return out


def _match_from_band(g: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """``match_k`` [N-1, 2 len(widths)] (per width: after, before) from the band of cosines ``g``
    [N, S >= 2 max(widths)]: the pair (shot t - a, shot t + 1 + b) is ``g[t - a, a + b + 1]``."""
    n = len(g)
    t = np.arange(n - 1)[:, None, None]
    out = np.empty((n - 1, 2 * len(widths)))
    for j, k in enumerate(widths):
        a, b = np.arange(k)[None, :, None], np.arange(k)[None, None, :]  # before t - a, after t + 1 + b
        i = t - a  # [T, k, 1]
        ok_i, ok_j = i >= 0, t + 1 + b < n  # [T, k, 1], [T, 1, k]
        pair = np.where(ok_i & ok_j, g[np.maximum(i, 0), a + b + 1], -np.inf)  # [T, k, k]
        n_i, n_j = ok_i.sum(1)[:, 0], ok_j.sum(2)[:, 0]  # shots that exist before / after
        out[:, 2 * j] = np.where(ok_j[:, 0], pair.max(1), 0.0).sum(1) / n_j  # after-shots' best partner
        out[:, 2 * j + 1] = np.where(ok_i[..., 0], pair.max(2), 0.0).sum(1) / n_i
    return out


def match_means(u: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """``match_k`` for each width: [N, D] unit rows -> [N-1, 2 len(widths)] (after, before per width)."""
    u = np.asarray(u, dtype=np.float64)
    if len(u) < 2:
        return np.zeros((0, 2 * len(widths)))
    return _match_from_band(_band(u, 2 * max(widths))[0], tuple(widths))


def window_cosines(u: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """``cos_k`` for each width: [N, D] unit rows -> [N-1, len(widths)]."""
    u = np.asarray(u, dtype=np.float64)
    if len(u) < 2:
        return np.zeros((0, len(widths)))
    band, sq, _ = _band(u, 2 * max(widths))
    return _window_cosines(band, tuple(widths), lambda idx: u[idx], sq > 0)


def cross_max(u: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """``cross_k`` for each width: [N, D] unit rows -> [N-1, len(widths)]."""
    u = np.asarray(u, dtype=np.float64)
    if len(u) < 2:
        return np.zeros((0, len(widths)))
    return _cross_from_band(_band(u, 2 * max(widths))[0], tuple(widths))


def modality_features(x: np.ndarray, widths: tuple[int, ...], cross_widths: tuple[int, ...],
                      match_widths: tuple[int, ...] = ()) -> np.ndarray:
    """[N-1, 2 len(widths) + len(cross_widths) + 2 len(match_widths)] of one modality's shots ``x`` [N, D]:
    ``cos_k`` of the raw shots, ``cos_k`` of the centred shots, ``cross_k`` and ``match_k`` of the centred
    shots; equal to ``window_cosines(unit_rows(x, False))``, ``window_cosines(unit_rows(x, True))``,
    ``cross_max(unit_rows(x, True))`` and ``match_means(unit_rows(x, True))`` (to about 1e-12), from one
    band of products of the centred shots."""
    widths, cross_widths, match_widths = tuple(widths), tuple(cross_widths), tuple(match_widths)
    x = np.asarray(x)
    n = len(x)
    if n < 2:
        return np.zeros((0, 2 * len(widths) + len(cross_widths) + 2 * len(match_widths)))
    keep = (x != 0).any(1)  # all-zero shots stay zero, centred or not
    mean = x.sum(0, dtype=np.float64) / max(int(keep.sum()), 1)  # the mean non-zero shot
    span = 2 * max(max(widths), max(cross_widths), max(match_widths, default=1))
    cen, sq, proj = _band(x, span, mean, keep)  # c_i . c_{i+d}; |x_i|^2; c_i . mean
    j, inside = _partner(n, span)
    both = keep[:, None] & keep[j] & inside
    raw = np.where(both, cen + proj[:, None] + proj[j] + mean @ mean, 0.0)  # x_i . x_{i+d}
    raw[:, 0] = sq
    mean_norm = np.sqrt(mean @ mean)
    for i in np.flatnonzero(keep & (SHORT * np.sqrt(sq) < np.sqrt(cen[:, 0]) + mean_norm)):
        lo, hi = max(i - span + 1, 0), min(i + span, n)  # a short shot: its products directly
        xi = np.asarray(x[i], dtype=np.float64)
        prods = np.asarray(x[lo:hi], dtype=np.float64) @ xi  # x_lo..x_{hi-1} . x_i
        raw[i, :hi - i] = prods[i - lo:]
        raw[np.arange(lo, i), i - np.arange(lo, i)] = prods[:i - lo]
    raw_norm, cen_norm = np.sqrt(sq), np.sqrt(cen[:, 0])
    raw_cos, cen_cos = _cosine_band(raw, raw_norm), _cosine_band(cen, cen_norm)
    xf = x  # rows for the few windows that need the direct formula, scaled like unit_rows

    def raw_rows(idx: np.ndarray) -> np.ndarray:
        return np.asarray(xf[idx], dtype=np.float64) / np.maximum(raw_norm[idx], EPS)[:, None]

    def cen_rows(idx: np.ndarray) -> np.ndarray:
        c = (np.asarray(xf[idx], dtype=np.float64) - mean) * keep[idx][:, None]
        return c / np.maximum(cen_norm[idx], EPS)[:, None]

    return np.concatenate([_window_cosines(raw_cos, widths, raw_rows, sq > 0),
                           _window_cosines(cen_cos, widths, cen_rows, cen[:, 0] > 0),
                           _cross_from_band(cen_cos, cross_widths)]
                          + ([_match_from_band(cen_cos, match_widths)] if match_widths else []), 1)


def transition_features(features: dict[str, np.ndarray], widths: tuple[int, ...],
                        cross_widths: tuple[int, ...], match_widths: tuple[int, ...] = ()) -> np.ndarray:
    """[N-1, F]: per modality (in the dict's order), ``cos_k`` of the raw shots, ``cos_k`` of the
    centred shots, ``cross_k`` and ``match_k`` of the centred shots (:func:`modality_features`)."""
    return np.concatenate([modality_features(x, widths, cross_widths, match_widths) for x in features.values()], 1)


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
