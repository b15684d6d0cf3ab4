"""A seeded synthetic sample in exactly the MovieScenes pickle format, as hard as the real data.

Used by the pipeline's default run, tests and benchmarks: it goes through the same safe-load /
validate / convert path as the real archive. The default story (``preset="realistic"``) is
calibrated to the statistics of the 64 real movies (MovieNet's scene annotations; see README,
"The built-in sample"):

- shot counts per movie: the real counts of ``moviescenes_manifest.csv`` (607-3,096), times
  ``length_scale``;
- scene lengths in shots: median 5, p25 2, p75 15, p90 ~32, mean ~13, a quarter of the scenes a
  single shot, a few hundreds of shots long; each movie has its own scene-length scale, so its
  boundary rate lies anywhere from ~3% to ~17% (7.65% pooled);
- what makes the real task hard: a new scene often keeps the location (a time jump), the
  characters or the music of the previous one, so some boundaries are invisible in one or
  more modalities; inside a scene, long scenes are filmed from many camera set-ups and cut to
  inserts and cutaways (a shot from elsewhere), so a visual change is often no boundary;
- ``cast`` and ``action`` are all-zero for shots without a person; the modalities' scales are
  the real ones (adjacent-shot dot products: place ~100-500, action ~3k, cast ~1, audio ~0.5);
- the "shipped" prediction stands for a model trained elsewhere on frames: a noisy read of the
  visual change around the cut plus some knowledge of the true boundary, calibrated to the
  published numbers of the real one (AP ~0.45, Miou ~0.45, recall ~0.75 at 0.5).

``preset="easy"`` is the generator before it was calibrated (2-3 set-ups per scene, nothing
shared across a boundary, no inserts; every model scores AP > 0.9 there): kept for comparison.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sceneseg.data.movies import END_FRAME_KEY, FEATURE_DIMS, GT_KEY, PRED_KEY
from sceneseg.data.simfeatures import unit_rows, window_cosines
from sceneseg.data.validate import load_manifest

FPS = 24
PRESETS = ("realistic", "easy")


@dataclass(frozen=True)
class Story:
    """The constants of one generative story (see the module docstring)."""

    scene_len_median: float  # of the log-normal part of scene lengths (before rounding)
    scene_len_sigma: float
    p_single: float  # share of one-shot scenes drawn directly
    movie_len_sd: float  # per-movie log scale of scene lengths: the per-movie boundary rate spread
    p_same_location: float  # a new scene keeps the previous scene's location
    p_same_cast: float  # ... its characters
    p_same_audio: float  # ... its sound (music over the cut)
    setups_per_log2_len: float  # camera set-ups ~ 1 + Poisson(this * log2(scene length)), clipped
    p_insert: float  # a shot from elsewhere inside a scene (cutaway, insert): no set-up of the scene
    setup_offset: float  # how far a camera set-up's place vector lies from its location
    noise: dict  # per-shot noise std of each modality (times the spec's ``noise``)
    scale: dict  # each modality's overall scale (real adjacent-shot dot products)
    shipped_modalities: dict  # the shipped prediction reads the change of these modalities (weights)
    shipped_width: int  # ... between the means of this many shots on each side (centred when > 1)
    shipped_change: float  # shipped logit: weight of the standardised change around the cut
    shipped_truth: float  # ... of the true label (what a model trained on frames knows beyond these features)
    shipped_noise: float  # ... std of its noise
    shipped_bias: float


REALISTIC = Story(scene_len_median=9.0, scene_len_sigma=1.15, p_single=0.23, movie_len_sd=0.35,
                  p_same_location=0.5, p_same_cast=0.5, p_same_audio=0.5, setups_per_log2_len=0.8,
                  p_insert=0.12, setup_offset=2.5,
                  noise={"place": 9.0, "cast": 1.05, "action": 12.0, "audio": 18.0},
                  scale={"place": 0.08, "cast": 1.0, "action": 0.33, "audio": 0.0015},
                  shipped_modalities={"place": 1.0, "cast": 0.5, "action": 0.5, "audio": 0.5}, shipped_width=2,
                  shipped_change=1.0, shipped_truth=2.0, shipped_noise=0.7, shipped_bias=-1.3)
EASY = Story(scene_len_median=9.3, scene_len_sigma=0.9, p_single=0.0, movie_len_sd=0.0,
             p_same_location=0.2, p_same_cast=0.0, p_same_audio=0.0, setups_per_log2_len=0.0,
             p_insert=0.0, setup_offset=2.5,
             noise={"place": 3.0, "cast": 0.35, "action": 4.0, "audio": 6.0},
             scale={"place": 1.0, "cast": 1.0, "action": 1.0, "audio": 1.0},
             shipped_modalities={"place": 1.0, "action": 0.5}, shipped_width=1,
             shipped_change=2.0, shipped_truth=0.0, shipped_noise=0.5, shipped_bias=-3.0)
P_LAST_SHOT_ALONE = 0.6  # real data: 38 of 64 movies end with a one-shot scene
P_NO_PERSON = 0.25  # a set-up that shows nobody (cast and action = zeros)
P_STAY_ON_SETUP = 0.25  # a cut goes back to the same camera set-up
MAX_SCENE_LEN = 600  # the real longest scene: 587 shots


@dataclass(frozen=True)
class SyntheticSpec:
    """How many synthetic movies to make, how long, from which seed, with which story."""

    n_movies: int
    min_shots: int = 0  # min_shots = max_shots = 0: the real shot counts (manifest) times length_scale
    max_shots: int = 0
    seed: int = 0
    # Generator settings (defaults: the built-in sample). Other values make sets with other
    # statistics, for checking that a model does not only fit one generator.
    noise: float = 1.0  # multiplies every modality's per-shot noise
    min_setups: int = 1  # camera set-ups per scene clipped to [min_setups, max_setups] (easy: drawn uniformly there)
    max_setups: int = 8
    scale_spread: float = 0.0  # each movie's modality times 10**U(-s, s): feature scales differ between movies
    length_scale: float = 1.0  # real shot counts times this (when min_shots = max_shots = 0)
    scene_scale: float = 1.0  # scene lengths times this: the boundary rate divided by about this
    preset: str = "realistic"  # realistic | easy (the uncalibrated generator)

    def __post_init__(self) -> None:
        if self.n_movies < 1:
            raise ValueError(f"synthetic.n_movies: expected >= 1, got {self.n_movies}")
        if (self.min_shots, self.max_shots) != (0, 0) and not 2 <= self.min_shots <= self.max_shots:
            raise ValueError(
                f"synthetic.min_shots/max_shots: expected 2 <= min_shots <= max_shots (or both 0 for the real "
                f"shot counts), got {self.min_shots} and {self.max_shots}"
            )
        if not 1 <= self.min_setups <= self.max_setups:
            raise ValueError(f"synthetic.min_setups/max_setups: expected 1 <= min_setups <= max_setups, "
                             f"got {self.min_setups} and {self.max_setups}")
        if not self.noise > 0 or not self.scale_spread >= 0:
            raise ValueError(f"synthetic.noise / scale_spread: expected > 0 and >= 0, got {self.noise} and {self.scale_spread}")
        if not 0 < self.length_scale <= 10 or not 0 < self.scene_scale <= 10:
            raise ValueError(f"synthetic.length_scale / scene_scale: expected in (0, 10], got {self.length_scale} "
                             f"and {self.scene_scale}")
        if self.preset not in PRESETS:
            raise ValueError(f"synthetic.preset: expected one of {PRESETS}, got {self.preset!r}")

    @property
    def story(self) -> Story:
        return REALISTIC if self.preset == "realistic" else EASY


def synthetic_ids(n_movies: int, seed: int) -> list[str]:
    """``n_movies`` distinct fake 7-digit imdb ids (``tt`` + digits), sorted, deterministic from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    numbers = rng.choice(9_000_000, size=n_movies, replace=False) + 1_000_000
    return [f"tt{n:07d}" for n in sorted(numbers.tolist())]


def scene_lengths(rng: np.random.Generator, n_shots: int, story: Story = REALISTIC, scene_scale: float = 1.0) -> np.ndarray:
    """Heavy-tailed scene lengths summing to ``n_shots``, with a per-movie length scale."""
    mu = np.log(story.scene_len_median * scene_scale) + story.movie_len_sd * rng.standard_normal()
    n = n_shots + 1  # enough draws to reach the end (every scene has >= 1 shot)
    draws = np.clip(np.rint(rng.lognormal(mu, story.scene_len_sigma, size=n)), 2 if story.p_single else 1,
                    MAX_SCENE_LEN).astype(np.int64)
    draws[rng.random(n) < story.p_single] = 1
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
    if n_setups == 1:
        return np.zeros(length, dtype=np.int64)
    seq = np.empty(length, dtype=np.int64)
    seq[0] = rng.integers(n_setups)
    switch = rng.random(length) >= P_STAY_ON_SETUP
    step = rng.integers(1, n_setups, size=length)  # to another set-up
    for i in range(1, length):
        seq[i] = (seq[i - 1] + step[i]) % n_setups if switch[i] else seq[i - 1]
    return seq


def _n_setups(rng: np.random.Generator, length: int, story: Story, setups: tuple[int, int]) -> int:
    if not story.setups_per_log2_len:  # easy: uniform in the range
        return int(rng.integers(setups[0], setups[1] + 1))
    n = 1 + rng.poisson(story.setups_per_log2_len * np.log2(length)) if length > 1 else 1
    return int(np.clip(n, setups[0], setups[1]))


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _carry(rng: np.random.Generator, n_scenes: int, p: float, pool: int) -> np.ndarray:
    """Per scene an index into a pool of ``pool`` items; a new scene keeps the previous one's with prob. ``p``."""
    idx = rng.integers(pool, size=n_scenes)
    keep = rng.random(n_scenes) < p
    for k in range(1, n_scenes):
        if keep[k]:
            idx[k] = idx[k - 1]
    return idx


def _shipped_prediction(rng: np.random.Generator, feats: dict[str, np.ndarray], visible: np.ndarray,
                        story: Story) -> np.ndarray:
    """The "shipped" prediction: a squashed, noisy read of the change across the cut plus knowledge of
    the boundaries that the features also show (``visible``: 0 inside a scene, else the share of
    location, characters, sound and action that change there): what a model trained elsewhere on
    the same kind of cues knows, so it is correlated with the features, not a second opinion."""
    change = np.zeros(len(visible))
    for name, weight in story.shipped_modalities.items():
        u = unit_rows(feats[name], center=story.shipped_width > 1)
        change += weight * (1.0 - window_cosines(u, (story.shipped_width,))[:, 0])
    z = (change - change.mean()) / (change.std() + 1e-6)
    logit = (story.shipped_change * z + story.shipped_truth * visible + story.shipped_bias
             + rng.normal(0.0, story.shipped_noise, size=z.shape))
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def generate_movie(rng: np.random.Generator, imdb_id: str, n_shots: int, noise: float = 1.0,
                   setups: tuple[int, int] = (1, 8), scales: dict[str, float] | None = None,
                   story: Story = REALISTIC, scene_scale: float = 1.0) -> dict:
    """One synthetic movie as the MovieScenes pickle dict (torch tensors, real dims and dtypes).

    ``noise`` multiplies the per-shot noise, ``setups`` bounds the camera set-ups per scene and
    ``scales`` multiplies each modality (after the shipped prediction is made from the raw ones).
    """
    if n_shots < 2:
        raise ValueError(f"n_shots: expected >= 2, got {n_shots}")
    lengths = scene_lengths(rng, n_shots, story, scene_scale)
    n_scenes = len(lengths)
    dims = FEATURE_DIMS

    # Locations, characters and sounds recur, and a new scene may keep the previous scene's.
    n_locations = max(2, int(np.ceil(n_scenes / 3)))
    locations = _normal(rng, (n_locations, dims["place"]))
    scene_loc = _carry(rng, n_scenes, story.p_same_location, n_locations)
    n_chars = max(4, n_scenes // 4)
    chars = _unit(_normal(rng, (n_chars, dims["cast"])))
    popularity = 1.0 / np.arange(1, n_chars + 1)
    popularity /= popularity.sum()
    scene_sound = _carry(rng, n_scenes, story.p_same_audio, n_scenes)
    sounds = _normal(rng, (n_scenes, dims["audio"]))
    actions = _normal(rng, (n_scenes, dims["action"]))
    same_cast = rng.random(n_scenes) < story.p_same_cast

    setup_place, setup_char, shot_setup, shot_scene = [], [], [], []
    n_setups_total = 0
    cast_of_scene = None
    for k, length in enumerate(lengths):
        n_setups = _n_setups(rng, int(length), story, setups)
        drawn = rng.choice(n_chars, size=min(n_setups, n_chars), replace=False, p=popularity)
        cast = cast_of_scene if (k and same_cast[k]) else drawn
        cast_of_scene = cast
        for s in range(n_setups):
            setup_place.append(locations[scene_loc[k]] + story.setup_offset * _normal(rng, (dims["place"],)))
            setup_char.append(-1 if rng.random() < P_NO_PERSON else int(cast[s % len(cast)]))
        shot_setup.append(n_setups_total + _setup_sequence(rng, int(length), n_setups))
        shot_scene.append(np.full(length, k))
        n_setups_total += n_setups
    setup_of = np.concatenate(shot_setup)  # [N] global set-up index per shot
    scene_of = np.concatenate(shot_scene)  # [N] scene index per shot

    nz = {k: v * noise for k, v in story.noise.items()}
    place_mean = np.stack(setup_place)[setup_of]  # [N, 2048]
    char_of = np.asarray(setup_char)[setup_of]  # [N] -1: nobody in the shot
    insert = (rng.random(n_shots) < story.p_insert) & (np.bincount(scene_of)[scene_of] > 2)
    if insert.any():  # cutaways: a shot of another location, nobody in it
        place_mean[insert] = locations[rng.integers(n_locations, size=int(insert.sum()))] + \
            story.setup_offset * _normal(rng, (int(insert.sum()), dims["place"]))
        char_of[insert] = -1
    person = char_of[:, None] >= 0  # [N, 1]
    # [N, 2048] non-negative like pooled ResNet features (ReLU of set-up vector + noise).
    place = np.maximum(place_mean + nz["place"] * _normal(rng, (n_shots, dims["place"])), 0.0, dtype=np.float32)
    cast = np.where(person, chars[np.maximum(char_of, 0)], 0.0).astype(np.float32)
    cast += person * nz["cast"] * _normal(rng, (n_shots, dims["cast"])) / np.sqrt(dims["cast"])
    action = actions[scene_of] + nz["action"] * _normal(rng, (n_shots, dims["action"]))
    if story.p_insert:  # realistic: no action features without a person, non-negative like pooled ones
        action = np.where(person, np.maximum(action + 4.0, 0.0), 0.0)
    audio = sounds[scene_sound[scene_of]] + nz["audio"] * _normal(rng, (n_shots, dims["audio"]))
    if story.p_insert:  # realistic: what every shot's sound shares (the recording), as in real embeddings
        audio = audio + 20.0 * _normal(rng, (1, dims["audio"]))
    feats = {"place": place, "cast": cast, "action": action, "audio": audio}
    feats = {name: (a * np.float32(story.scale[name])).astype(np.float32) for name, a in feats.items()}

    boundary = np.zeros(n_shots - 1, dtype=bool)
    boundary[np.cumsum(lengths)[:-1] - 1] = True  # a scene ends after its last shot
    shot_frames = rng.integers(1 * FPS, 10 * FPS + 1, size=n_shots)
    changed = np.stack([scene_loc[1:] != scene_loc[:-1], ~same_cast[1:], scene_sound[1:] != scene_sound[:-1],
                        np.ones(n_scenes - 1, bool)]).mean(0)  # [scenes - 1] what changes at each boundary
    visible = np.zeros(n_shots - 1)
    visible[boundary] = changed
    shipped = _shipped_prediction(rng, feats, visible, story)
    if scales is not None:
        feats = {name: a * np.float32(scales[name]) for name, a in feats.items()}
    return {
        "imdb_id": imdb_id,
        **{name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for name, a in feats.items()},
        GT_KEY: torch.from_numpy(boundary),
        END_FRAME_KEY: torch.from_numpy(np.cumsum(shot_frames) - 1),
        PRED_KEY: torch.from_numpy(shipped),
    }


def shot_count(rng: np.random.Generator, spec: SyntheticSpec) -> int:
    """One movie's shot count: uniform in [min_shots, max_shots], or a real movie's times ``length_scale``."""
    if spec.max_shots:
        return int(rng.integers(spec.min_shots, spec.max_shots + 1))
    real = sorted(load_manifest().values())
    return max(2, int(round(real[int(rng.integers(len(real)))] * spec.length_scale)))


def write_synthetic_pickles(spec: SyntheticSpec, folder: Path) -> list[Path]:
    """Write ``spec.n_movies`` pickles ``tt*.pkl`` into ``folder`` (plain pickle.dump, like the archive)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, imdb_id in enumerate(synthetic_ids(spec.n_movies, spec.seed)):
        rng = np.random.default_rng([spec.seed, 2, i])  # one stream per movie: order-independent
        n_shots = shot_count(rng, spec)
        scales = None
        if spec.scale_spread > 0:  # its own stream, so the other draws do not change
            exps = np.random.default_rng([spec.seed, 3, i]).uniform(-spec.scale_spread, spec.scale_spread, len(FEATURE_DIMS))
            scales = {name: float(10.0 ** e) for name, e in zip(FEATURE_DIMS, exps)}
        movie = generate_movie(rng, imdb_id, n_shots, spec.noise, (spec.min_setups, spec.max_setups), scales,
                               spec.story, spec.scene_scale)
        path = folder / f"{imdb_id}.pkl"
        with open(path, "wb") as f:
            pickle.dump(movie, f)
        paths.append(path)
    return paths
