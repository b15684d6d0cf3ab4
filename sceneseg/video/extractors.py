"""Per-shot features that need no downloaded weights: numpy (and OpenCV's colour conversion and resize,
which PySceneDetect already requires) on the frames decoded once.

- ``place`` [2048]: what a location looks like, from frames sampled in the shot (its first frame and
  every ``1 / sample_fps`` seconds): a hue/saturation/value histogram per image quadrant (4 x 256
  bins, square-rooted so that cosines compare distributions) and a GIST-like texture descriptor
  (the energy of 4 scales x 8 orientations of log-Gabor filters pooled on a 4 x 8 grid, 1024).
  :mod:`sceneseg.video.resnet` can replace it with a ResNet-50 embedding.
- ``action`` [512]: how the picture moves: the mean and standard deviation over the shot of the
  absolute frame-to-frame difference in each cell of a 16 x 16 grid.
- ``audio`` [512]: what the shot sounds like: 64 log-mel bands (25 ms hops of 32 ms windows at 16 kHz)
  summarised over the shot by 8 statistics (mean, std, min, max, 10/25/75/90th percentiles).

The shapes are those of the MovieScenes features, so a movie made from a video is checked and
stored like any other; ``cast`` (faces) is not computed: it is absent, and models use the rest.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from sceneseg.video.decode import AUDIO_RATE

WEIGHT_FREE = "weightfree/1"  # the extractor's name and version, recorded with the features
HIST_BINS = (16, 4, 4)  # hue, saturation, value
GIST_SIZE = (64, 128)  # (h, w) of the grey image the filters run on
GIST_SCALES, GIST_ORIENTATIONS, GIST_GRID = 4, 8, (4, 8)
MOTION_GRID = 16
N_FFT, HOP, N_MELS = 512, 400, 64
AUDIO_STATS = 8


# ----------------------------------------------------------------------------- place


def colour_histograms(bgr: np.ndarray) -> np.ndarray:
    """[1024]: square-rooted HSV histograms of the 4 quadrants (each of unit norm, the whole of norm 1)."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)  # H in [0, 180), S and V in [0, 256)
    nh, ns, nv = HIST_BINS
    code = (hsv[..., 0].astype(np.int32) * nh // 180) * (ns * nv) + (hsv[..., 1] // (256 // ns)) * nv \
        + hsv[..., 2] // (256 // nv)
    h, w = code.shape
    quads = [code[:h // 2, :w // 2], code[:h // 2, w // 2:], code[h // 2:, :w // 2], code[h // 2:, w // 2:]]
    out = np.concatenate([np.bincount(q.ravel(), minlength=nh * ns * nv) / q.size for q in quads])
    return np.sqrt(out) / 2.0  # each quadrant's sqrt-histogram has norm 1


@lru_cache(maxsize=4)
def gabor_bank(h: int, w: int) -> np.ndarray:
    """[S*O, h, w//2+1] log-Gabor transfer functions (the half spectrum ``rfft2`` gives): centre
    frequencies 1/4 .. 1/32 cycles per pixel, orientations every 180/O degrees."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0  # no log(0); the DC term is zeroed below
    angle = np.arctan2(fy, fx)
    bank = []
    for s in range(GIST_SCALES):
        f0 = 0.25 / 2**s
        radial = np.exp(-np.log(radius / f0) ** 2 / (2 * np.log(0.55) ** 2))
        radial[0, 0] = 0.0
        for o in range(GIST_ORIENTATIONS):
            d = np.angle(np.exp(1j * 2 * (angle - o * np.pi / GIST_ORIENTATIONS))) / 2  # wrapped to [-pi/2, pi/2]
            bank.append(radial * np.exp(-d**2 / (2 * (np.pi / GIST_ORIENTATIONS / 1.2) ** 2)))
    bank = np.stack(bank)
    bank[:, h // 2, :] = bank[:, :, w // 2] = 0.0  # Nyquist: the filters are then even (G(-f) = G(f)) ...
    return bank[:, :, : w // 2 + 1]  # ... so real images give real responses: half the spectrum is enough


def gist(bgr: np.ndarray) -> np.ndarray:
    """[1024] of unit norm: filter energy of each log-Gabor filter averaged over a 4 x 8 grid."""
    h, w = GIST_SIZE
    grey = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (w, h), interpolation=cv2.INTER_AREA).astype(np.float64)
    grey = (grey - grey.mean()) / (grey.std() + 1.0)  # contrast-normalised
    resp = np.abs(np.fft.irfft2(np.fft.rfft2(grey)[None] * gabor_bank(h, w), s=(h, w)))  # [F, h, w]
    gy, gx = GIST_GRID
    pooled = resp.reshape(len(resp), gy, h // gy, gx, w // gx).mean(axis=(2, 4)).ravel()  # [F * gy * gx]
    return pooled / (np.linalg.norm(pooled) + 1e-12)


def place_descriptor(bgr: np.ndarray) -> np.ndarray:
    """[2048] float32 of unit norm: colour histograms and GIST, equally weighted."""
    return (np.concatenate([colour_histograms(bgr), gist(bgr)]) / np.sqrt(2.0)).astype(np.float32)


# ----------------------------------------------------------------------------- action


def motion_cells(prev: np.ndarray | None, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(this frame's grey image, [256] mean absolute difference to ``prev`` per grid cell, in [0, 1])."""
    g = MOTION_GRID
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape[0] // g * g, grey.shape[1] // g * g
    grey = grey[:h, :w].astype(np.int16)
    if prev is None:
        return grey, np.zeros(g * g, dtype=np.float32)
    diff = np.abs(grey - prev).reshape(g, h // g, g, w // g).mean(axis=(1, 3)) / 255.0
    return grey, diff.ravel().astype(np.float32)


def action_features(cells: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """[N, 512] float32: per shot, mean and std over its frames (the first excluded: its difference
    crosses the cut) of the per-frame cell differences ``cells`` [F, 256]."""
    out = np.zeros((len(ends), 2 * cells.shape[1]), dtype=np.float32)
    start = 0
    for i, end in enumerate(ends.tolist()):
        inside = cells[start + 1:end + 1].astype(np.float32)  # [k, 256]
        if len(inside):
            out[i] = np.concatenate([inside.mean(0), inside.std(0)])
        start = end + 1
    return out


# ----------------------------------------------------------------------------- audio


@lru_cache(maxsize=2)
def mel_filters(n_fft: int = N_FFT, n_mels: int = N_MELS, rate: int = AUDIO_RATE) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters evenly spaced on the mel scale (HTK formula), 20 Hz to rate/2."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(20.0), mel(rate / 2), n_mels + 2))  # [n_mels + 2] Hz
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


class LogMel:
    """Log-mel frames of an audio stream fed in chunks: frame k covers samples [k*HOP, k*HOP + N_FFT)."""

    def __init__(self):
        self.start_s: float | None = None
        self.pending = np.zeros(0, dtype=np.float32)
        self.frames: list[np.ndarray] = []
        self.window = np.hanning(N_FFT).astype(np.float32)

    def add(self, start_s: float, samples: np.ndarray) -> None:
        if self.start_s is None:
            self.start_s = start_s
        self.pending = np.concatenate([self.pending, samples])
        n = (len(self.pending) - N_FFT) // HOP + 1
        if n <= 0:
            return
        idx = np.arange(n)[:, None] * HOP + np.arange(N_FFT)[None, :]  # [n, N_FFT]
        power = np.abs(np.fft.rfft(self.pending[idx] * self.window, axis=1)) ** 2  # [n, N_FFT/2+1]
        self.frames.append(np.log(power @ mel_filters().T + 1e-6).astype(np.float32))  # [n, N_MELS]
        self.pending = self.pending[n * HOP:]

    def times(self) -> np.ndarray:
        """[T] centre time (s) of each frame."""
        n = sum(len(f) for f in self.frames)
        return (self.start_s or 0.0) + (np.arange(n) * HOP + N_FFT / 2) / AUDIO_RATE

    def per_shot(self, starts_s: np.ndarray, ends_s: np.ndarray) -> np.ndarray:
        """[N, 512] float32: the 8 statistics of each band over the frames centred in [start, end) of each
        shot (the nearest frame when none is, e.g. a shot shorter than a hop; zeros without audio)."""
        out = np.zeros((len(starts_s), AUDIO_STATS * N_MELS), dtype=np.float32)
        if not self.frames:
            return out
        mel = np.concatenate(self.frames)  # [T, N_MELS]
        t = self.times()
        lo = np.searchsorted(t, starts_s, side="left")
        hi = np.searchsorted(t, ends_s, side="left")
        for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
            if b <= a:  # no frame centred inside: the nearest one
                a = int(np.clip(np.argmin(np.abs(t - (starts_s[i] + ends_s[i]) / 2)), 0, len(t) - 1))
                b = a + 1
            x = mel[a:b]
            q = np.percentile(x, [10, 25, 75, 90], axis=0)
            out[i] = np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0), *q])
        return out
