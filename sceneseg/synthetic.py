"""A seeded synthetic sample in exactly the MovieScenes pickle format.

Used by tests, the tiny end-to-end pipeline and benchmarks: it goes through the same
safe-load / validate / convert path as the real archive. The generative story mimics
what a scene-boundary model sees in real movies:

- scene lengths are heavy-tailed (log-normal, mean ~13 shots, most < 20, a few long),
  so about 7-8% of transitions are boundaries;
- a movie has a pool of locations smaller than its number of scenes: places recur and
  two adjacent scenes can share a location, so "place changed" is not the label;
- a scene is shot from 2-3 camera set-ups (location + set-up offset, one character each)
  and cuts alternate between them (shot / reverse shot), so shot i+1 often resembles
  shot i-1 rather than shot i: a 4-shot window sees more than adjacent distance;
- cast: recurring characters (a few main ones), some shots without a face (zeros);
- action and audio: a scene-level component plus per-shot noise;
- shot lengths 1-10 s at 24 fps.

The shipped baseline is a noisy squashed distance between adjacent shots: informative
(AP ~0.4) but weaker than what a 4-shot window model can learn.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sceneseg.movies import END_FRAME_KEY, FEATURE_DIMS, GT_KEY, PRED_KEY

FPS = 24
# Log-normal scene length: median ~9.3 shots, mean ~13, P(< 20) ~ 0.82 (the real statistics).
SCENE_LEN_MU = float(np.log(9.3))
SCENE_LEN_SIGMA = 0.9
P_SAME_LOCATION = 0.2  # a new scene keeps the previous scene's location
P_STAY_ON_SETUP = 0.25  # a cut goes back to the same camera set-up
P_NO_FACE = 0.25  # a set-up that shows no face (cast = zeros)
P_LAST_SHOT_ALONE = 0.6  # real data: 38 of 64 movies end with a one-shot scene
SETUP_OFFSET = 2.5  # how far a camera set-up's place vector lies from its location
BASELINE_WEIGHTS = {"place": 1.0, "action": 0.5}
BASELINE_NOISE = 0.5
NOISE = {"place": 3.0, "cast": 0.35, "action": 4.0, "audio": 6.0}  # per-shot noise std


@dataclass(frozen=True)
class SyntheticSpec:
    """How many synthetic movies to make, how long, from which seed."""

    n_movies: int
    min_shots: int
    max_shots: int
    seed: int
    # Generator settings (defaults: the built-in sample). Other values make sets with other
    # statistics, for checking that a model does not only fit one generator.
    noise: float = 1.0  # multiplies every modality's per-shot noise
    min_setups: int = 2  # camera set-ups per scene, drawn in [min_setups, max_setups]
    max_setups: int = 3
    scale_spread: float = 0.0  # each movie's modality times 10**U(-s, s): feature scales differ between movies

    def __post_init__(self) -> None:
        if self.n_movies < 1:
            raise ValueError(f"synthetic.n_movies: expected >= 1, got {self.n_movies}")
        if not 2 <= self.min_shots <= self.max_shots:
            raise ValueError(
                f"synthetic.min_shots/max_shots: expected 2 <= min_shots <= max_shots, "
                f"got {self.min_shots} and {self.max_shots}"
            )
        if not 1 <= self.min_setups <= self.max_setups:
            raise ValueError(f"synthetic.min_setups/max_setups: expected 1 <= min_setups <= max_setups, "
                             f"got {self.min_setups} and {self.max_setups}")
        if not self.noise > 0 or not self.scale_spread >= 0:
            raise ValueError(f"synthetic.noise / scale_spread: expected > 0 and >= 0, got {self.noise} and {self.scale_spread}")


def synthetic_ids(n_movies: int, seed: int) -> list[str]:
    """``n_movies`` distinct fake 7-digit imdb ids (``tt`` + digits), sorted, deterministic from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    numbers = rng.choice(9_000_000, size=n_movies, replace=False) + 1_000_000
    return [f"tt{n:07d}" for n in sorted(numbers.tolist())]


def _scene_lengths(rng: np.random.Generator, n_shots: int) -> np.ndarray:
    """Heavy-tailed scene lengths summing to ``n_shots``."""
    draws = np.maximum(1, np.rint(rng.lognormal(SCENE_LEN_MU, SCENE_LEN_SIGMA, size=n_shots))).astype(np.int64)
    ends = np.cumsum(draws)
    k = int(np.searchsorted(ends, n_shots))  # first scene reaching the end
    lengths = draws[: k + 1].copy()
    lengths[-1] -= ends[k] - n_shots
    if lengths[-1] > 1 and rng.random() < P_LAST_SHOT_ALONE:
        lengths[-1] -= 1
        lengths = np.append(lengths, 1)
    return lengths


def _setup_sequence(rng: np.random.Generator, length: int, n_setups: int) -> np.ndarray:
    """Camera set-up index of each shot of one scene: cuts mostly switch set-up."""
    seq = np.empty(length, dtype=np.int64)
    if n_setups == 1:
        return np.zeros(length, dtype=np.int64)
    seq[0] = rng.integers(n_setups)
    switch = rng.random(length) >= P_STAY_ON_SETUP
    step = rng.integers(1, n_setups, size=length)  # to another set-up
    for i in range(1, length):
        seq[i] = (seq[i - 1] + step[i]) % n_setups if switch[i] else seq[i - 1]
    return seq


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _baseline_prediction(rng: np.random.Generator, feats: dict[str, np.ndarray]) -> np.ndarray:
    """The "shipped" heuristic: a noisy squashed cosine distance between adjacent shots."""
    dist = np.zeros(feats["place"].shape[0] - 1, dtype=np.float32)
    for name, weight in BASELINE_WEIGHTS.items():
        f = feats[name]
        norms = np.linalg.norm(f, axis=1) + 1e-6
        cos = np.sum(f[:-1] * f[1:], axis=1) / (norms[:-1] * norms[1:])
        dist += weight * (1.0 - cos)
    z = (dist - dist.mean()) / (dist.std() + 1e-6)
    logit = 2.0 * z - 3.0 + rng.normal(0.0, BASELINE_NOISE, size=z.shape)
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def generate_movie(rng: np.random.Generator, imdb_id: str, n_shots: int, noise: float = 1.0,
                   setups: tuple[int, int] = (2, 3), scales: dict[str, float] | None = None) -> dict:
    """One synthetic movie as the MovieScenes pickle dict (torch tensors, real dims and dtypes).

    ``noise`` multiplies the per-shot noise, ``setups`` bounds the camera set-ups per scene and
    ``scales`` multiplies each modality (after the shipped prediction is made from the raw ones).
    """
    if n_shots < 2:
        raise ValueError(f"n_shots: expected >= 2, got {n_shots}")
    lengths = _scene_lengths(rng, n_shots)
    n_scenes = len(lengths)
    dims = FEATURE_DIMS

    # Locations recur: a pool smaller than the number of scenes, sometimes kept across a boundary.
    n_locations = max(2, int(np.ceil(n_scenes / 3)))
    locations = _normal(rng, (n_locations, dims["place"]))
    scene_loc = rng.integers(n_locations, size=n_scenes)
    keep = rng.random(n_scenes) < P_SAME_LOCATION
    for k in range(1, n_scenes):
        if keep[k]:
            scene_loc[k] = scene_loc[k - 1]

    # Recurring characters: a few main ones appear in many scenes.
    n_chars = max(4, n_scenes // 4)
    chars = _unit(_normal(rng, (n_chars, dims["cast"])))
    popularity = 1.0 / np.arange(1, n_chars + 1)
    popularity /= popularity.sum()

    setup_place, setup_char, shot_setup, shot_scene = [], [], [], []
    n_setups_total = 0
    for k, length in enumerate(lengths):
        n_setups = int(rng.integers(setups[0], setups[1] + 1))
        cast = rng.choice(n_chars, size=min(n_setups, n_chars), replace=False, p=popularity)
        for s in range(n_setups):
            setup_place.append(locations[scene_loc[k]] + SETUP_OFFSET * _normal(rng, (dims["place"],)))
            setup_char.append(-1 if rng.random() < P_NO_FACE else int(cast[s % len(cast)]))
        shot_setup.append(n_setups_total + _setup_sequence(rng, int(length), n_setups))
        shot_scene.append(np.full(length, k))
        n_setups_total += n_setups
    setup_of = np.concatenate(shot_setup)  # [N] global set-up index per shot
    scene_of = np.concatenate(shot_scene)  # [N] scene index per shot

    # [N, 2048] non-negative like pooled ResNet features (ReLU of set-up vector + noise).
    nz = {k: v * noise for k, v in NOISE.items()}
    place = np.stack(setup_place)[setup_of] + nz["place"] * _normal(rng, (n_shots, dims["place"]))
    place = np.maximum(place, 0.0, dtype=np.float32)
    char_of = np.asarray(setup_char)[setup_of]
    cast = np.where(char_of[:, None] >= 0, chars[np.maximum(char_of, 0)], 0.0).astype(np.float32)
    cast += (char_of[:, None] >= 0) * nz["cast"] * _normal(rng, (n_shots, dims["cast"])) / np.sqrt(dims["cast"])
    action = _normal(rng, (n_scenes, dims["action"]))[scene_of] + nz["action"] * _normal(rng, (n_shots, dims["action"]))
    audio = _normal(rng, (n_scenes, dims["audio"]))[scene_of] + nz["audio"] * _normal(rng, (n_shots, dims["audio"]))
    feats = {"place": place, "cast": cast.astype(np.float32), "action": action, "audio": audio}

    boundary = np.zeros(n_shots - 1, dtype=bool)
    boundary[np.cumsum(lengths)[:-1] - 1] = True  # a scene ends after its last shot
    shot_frames = rng.integers(1 * FPS, 10 * FPS + 1, size=n_shots)
    shipped = _baseline_prediction(rng, feats)
    if scales is not None:
        feats = {name: a * np.float32(scales[name]) for name, a in feats.items()}
    return {
        "imdb_id": imdb_id,
        **{name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for name, a in feats.items()},
        GT_KEY: torch.from_numpy(boundary),
        END_FRAME_KEY: torch.from_numpy(np.cumsum(shot_frames) - 1),
        PRED_KEY: torch.from_numpy(shipped),
    }


def write_synthetic_pickles(spec: SyntheticSpec, folder: Path) -> list[Path]:
    """Write ``spec.n_movies`` pickles ``tt*.pkl`` into ``folder`` (plain pickle.dump, like the archive)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, imdb_id in enumerate(synthetic_ids(spec.n_movies, spec.seed)):
        rng = np.random.default_rng([spec.seed, 2, i])  # one stream per movie: order-independent
        n_shots = int(rng.integers(spec.min_shots, spec.max_shots + 1))
        scales = None
        if spec.scale_spread > 0:  # its own stream, so the default sample's draws are unchanged
            exps = np.random.default_rng([spec.seed, 3, i]).uniform(-spec.scale_spread, spec.scale_spread, len(FEATURE_DIMS))
            scales = {name: float(10.0 ** e) for name, e in zip(FEATURE_DIMS, exps)}
        path = folder / f"{imdb_id}.pkl"
        with open(path, "wb") as f:
            pickle.dump(generate_movie(rng, imdb_id, n_shots, spec.noise, (spec.min_setups, spec.max_setups), scales), f)
        paths.append(path)
    return paths
