"""params.yaml parsed once into typed, frozen dataclasses, one per stage section.

An unknown key, a missing key or a value of the wrong type is a ``ValueError``
naming the key, what was expected and what was found. Each model's own section (named after the
model) is kept as read here and parsed where the model is used (its ``params`` module, e.g.
:mod:`sceneseg.models.simseq.params`, with :func:`parse_section`), so this module imports no
model: a stage that reads no model's params imports neither torch nor scikit-learn through it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from sceneseg.data.movies import MODALITIES

# the models' own params sections (one per model of sceneseg.models.registry, named after it)
MODEL_SECTIONS = ("simseq", "lgss")
# keys that moved: an old params.yaml stops with one line naming the new key
MOVED = {"featurize.shot_num": "lgss.shot_num", "train.eval_batch_size": "lgss.eval_batch_size"}


@dataclass(frozen=True)
class SyntheticParams:
    n_movies: int
    min_shots: int
    max_shots: int
    seed: int
    noise: float
    min_setups: int
    max_setups: int
    scale_spread: float
    length_scale: float
    scene_scale: float
    preset: str


@dataclass(frozen=True)
class VideoParams:
    """``data.video``: how videos become movies (``data.source: video`` and ``sceneseg video``)."""

    detector: str  # PySceneDetect detector: content | adaptive | hash | histogram | threshold
    threshold: float | None  # the detector's threshold; None = its own default
    min_shot_frames: int  # shortest shot the detector reports
    frame_width: int  # frames are scaled to this width by the decoder (height keeps the aspect)
    sample_fps: float  # frames per second described for ``place`` (plus each shot's first frame)
    extractor: str  # weightfree | resnet50 (place from ResNet-50 with ``weights``; action and audio weight-free)
    weights: str  # resnet50: the weights file (ImageNet or Places365); never downloaded
    tolerance_s: float  # an annotated scene start further than this from every cut is reported, not used


# what `sceneseg video` uses when not told otherwise: params.yaml's data.video holds the same values (a test checks)
VIDEO_DEFAULTS = VideoParams(detector="content", threshold=27.0, min_shot_frames=8, frame_width=192, sample_fps=1.0,
                             extractor="weightfree", weights="", tolerance_s=0.5)
VIDEO_DETECTORS = ("content", "adaptive", "hash", "histogram", "threshold")
VIDEO_EXTRACTORS = ("weightfree", "resnet50")


@dataclass(frozen=True)
class DataParams:
    source: str
    path: str
    gdrive_id: str
    url: str
    cache_dir: str
    timeout_s: float
    retries: int
    synthetic: SyntheticParams
    video: VideoParams


@dataclass(frozen=True)
class SplitParams:
    test_fraction: float
    test_movies: str
    val_fraction: float
    val_by: str
    seed: int


@dataclass(frozen=True)
class FeaturizeParams:
    seq_len: int  # transitions per window (LGSS's sequence; simseq's validation transitions with val_by: window)


@dataclass(frozen=True)
class TrainParams:
    """What every model's training shares; each model's own keys live in its own section."""

    model: str
    lr: float | None  # None: the model's own default (its section's ``lr``)
    epochs: int | None  # None: the model's own default (its section's ``epochs``)
    batch_size: int | None  # None: the model's own default (its section's ``batch_size``)
    threshold_metric: str
    device: str
    num_threads: int
    seed: int
    world_size: int = 1  # data-parallel processes (torch.distributed); 1 = plain single-process training


@dataclass(frozen=True)
class EvaluateParams:
    fps: float
    recall_window_s: float
    chance_seed: int
    timeline_movies: int
    stacked_widths: list[int]
    stacked_c: float
    boosted_widths: list[int]
    boosted_cross_widths: list[int]
    boosted_context: int
    boosted_max_iter: int
    boosted_lr: float


@dataclass(frozen=True)
class Params:
    data: DataParams
    split: SplitParams
    featurize: FeaturizeParams
    train: TrainParams
    evaluate: EvaluateParams
    models: dict[str, dict]  # model name -> its own section as read (parsed by the model: ``parse_section``)


def _check_type(key: str, value, tp):
    """Return ``value`` converted to ``tp`` or raise a ValueError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if type(None) in args:  # X | None
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"params key '{key}': expected a list, found {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"params key '{key}': expected a mapping, found {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _check_type(f"{key}.{k}", v, vt) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"params key '{key}': expected true or false, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"params key '{key}': expected a number, found {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"params key '{key}': expected an integer, found {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"params key '{key}': expected a string, found {value!r}")
        return value
    raise TypeError(f"unsupported params type {tp} for '{key}'")  # internal: a schema bug


def _build(cls, raw, prefix: str):
    if not isinstance(raw, dict):
        raise ValueError(f"params key '{prefix}': expected a mapping, found {raw!r}")
    if cls is Params:
        return _build_params(raw)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ValueError(f"unknown params key '{where}': expected one of {', '.join(names)}")
    kwargs = {}
    for name in names:
        where = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            raise ValueError(f"params key '{where}' is missing")
        kwargs[name] = _check_type(where, raw[name], hints[name])
    return cls(**kwargs)


def _build_params(raw: dict) -> Params:
    """The stage sections, then one section per model (named after it), kept as read."""
    stages = [f.name for f in dataclasses.fields(Params) if f.name != "models"]
    for old, new in MOVED.items():
        section, key = old.split(".")
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raise ValueError(f"params key '{old}' is now '{new}' (only that model reads it): move it there")
    for key in raw:
        if key not in stages and key not in MODEL_SECTIONS:
            raise ValueError(f"unknown params key '{key}': expected one of {', '.join(stages + list(MODEL_SECTIONS))}")
    hints = typing.get_type_hints(Params)
    kwargs = {}
    for name in stages:
        if name not in raw:
            raise ValueError(f"params key '{name}' is missing")
        kwargs[name] = _check_type(name, raw[name], hints[name])
    models = {}
    for name in MODEL_SECTIONS:
        if name not in raw:
            raise ValueError(f"params key '{name}' (the section of model {name!r}) is missing")
        if not isinstance(raw[name], dict):
            raise ValueError(f"params key '{name}': expected a mapping, found {raw[name]!r}")
        models[name] = raw[name]
    return Params(**kwargs, models=models)


def parse_section(raw: dict, cls: type, section: str, check: Callable[[object, str], None], source: str):
    """One model's own section: ``raw`` (its mapping in ``source``) built into the frozen dataclass
    ``cls`` and checked with ``check(p, section)``; a ValueError naming ``source`` and the key otherwise."""
    try:
        p = _build(cls, raw, section)
        check(p, section)
        return p
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"params key '{key}': expected one of {', '.join(allowed)}, found {value!r}")


def check_modalities(key: str, modalities: list[str]) -> None:
    """A model's ``modalities`` param: distinct names of known modalities."""
    if not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"params key '{key}': expected distinct names from {MODALITIES}, found {modalities}")
    for m in modalities:
        check_choice(key, m, MODALITIES)


def check_class_weights(key: str, weights: list[float]) -> None:
    """A model's ``class_weights`` param: two positive weights."""
    if len(weights) != 2 or min(weights) <= 0:
        raise ValueError(f"params key '{key}': expected two positive weights, found {weights}")


def check_range(key: str, value: float, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
    bad = value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi)
    if bad:
        lb, hb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ValueError(f"params key '{key}': expected a value in {lb}{lo}, {hi}{hb}, found {value!r}")


def validate(p: Params) -> Params:
    """Range and choice checks that types alone cannot express."""
    check_choice("data.source", p.data.source, ("synthetic", "moviescenes", "local", "video"))
    check_video(p.data.video)
    s = p.data.synthetic
    check_range("data.synthetic.n_movies", s.n_movies, 2, 10_000)
    if (s.min_shots, s.max_shots) != (0, 0):  # both 0: the real shot counts times length_scale
        check_range("data.synthetic.min_shots", s.min_shots, 2, 100_000)
        check_range("data.synthetic.max_shots", s.max_shots, s.min_shots, 100_000)
    check_range("data.synthetic.length_scale", s.length_scale, 0, 10, lo_open=True)
    check_range("data.synthetic.scene_scale", s.scene_scale, 0, 10, lo_open=True)
    check_choice("data.synthetic.preset", s.preset, ("realistic", "easy"))
    check_range("data.synthetic.noise", s.noise, 0, 100, lo_open=True)
    check_range("data.synthetic.min_setups", s.min_setups, 1, 20)
    check_range("data.synthetic.max_setups", s.max_setups, s.min_setups, 20)
    check_range("data.synthetic.scale_spread", s.scale_spread, 0, 6)
    check_range("data.timeout_s", p.data.timeout_s, 0, 3600, lo_open=True)
    check_range("data.retries", p.data.retries, 0, 100)
    check_range("split.test_fraction", p.split.test_fraction, 0, 1, lo_open=True, hi_open=True)
    check_choice("split.test_movies", p.split.test_movies, ("last", "random"))
    check_range("split.val_fraction", p.split.val_fraction, 0, 1, lo_open=True, hi_open=True)
    check_choice("split.val_by", p.split.val_by, ("window", "movie"))
    check_range("featurize.seq_len", p.featurize.seq_len, 1, 10_000)
    t = p.train
    check_choice("train.model", t.model, MODEL_SECTIONS)
    for key in ("epochs", "batch_size"):
        if getattr(t, key) is not None:
            check_range(f"train.{key}", getattr(t, key), 1, 1_000_000)
    if t.lr is not None:
        check_range("train.lr", t.lr, 0, 10, lo_open=True)
    check_choice("train.threshold_metric", t.threshold_metric, ("f1", "miou", "fixed"))
    if t.threshold_metric == "miou" and p.split.val_by != "movie":
        raise ValueError("params key 'train.threshold_metric': 'miou' needs whole validation movies (split.val_by: movie), "
                         f"found split.val_by: {p.split.val_by!r}")
    check_choice("train.device", t.device, ("auto", "cpu", "cuda", "mps"))
    check_range("train.num_threads", t.num_threads, 0, 1024)
    check_range("train.world_size", t.world_size, 1, 1024)
    for key, seed in (("data.synthetic.seed", s.seed), ("split.seed", p.split.seed), ("train.seed", t.seed),
                      ("evaluate.chance_seed", p.evaluate.chance_seed)):
        check_range(key, seed, 0, 2**32 - 1)
    check_range("evaluate.fps", p.evaluate.fps, 0, 1000, lo_open=True)
    check_range("evaluate.recall_window_s", p.evaluate.recall_window_s, 0, 3600)
    check_range("evaluate.timeline_movies", p.evaluate.timeline_movies, 0, 10_000)
    ws = p.evaluate.stacked_widths
    if not ws or len(set(ws)) != len(ws) or min(ws) < 1 or max(ws) > 256:
        raise ValueError(f"params key 'evaluate.stacked_widths': expected distinct widths in [1, 256], found {ws}")
    check_range("evaluate.stacked_c", p.evaluate.stacked_c, 0, 1e6, lo_open=True)
    for key in ("boosted_widths", "boosted_cross_widths"):
        ws = getattr(p.evaluate, key)
        if not ws or len(set(ws)) != len(ws) or min(ws) < 1 or max(ws) > 256:
            raise ValueError(f"params key 'evaluate.{key}': expected distinct widths in [1, 256], found {ws}")
    check_range("evaluate.boosted_context", p.evaluate.boosted_context, 0, 64)
    check_range("evaluate.boosted_max_iter", p.evaluate.boosted_max_iter, 1, 100_000)
    check_range("evaluate.boosted_lr", p.evaluate.boosted_lr, 0, 10, lo_open=True)
    return p


def check_video(v: VideoParams, prefix: str = "data.video.") -> None:
    """Range and choice checks of ``data.video`` (also the options of ``sceneseg video``)."""
    check_choice(f"{prefix}detector", v.detector, VIDEO_DETECTORS)
    if v.threshold is not None:
        check_range(f"{prefix}threshold", v.threshold, 0, 1000, lo_open=True)
    check_range(f"{prefix}min_shot_frames", v.min_shot_frames, 1, 100_000)
    check_range(f"{prefix}frame_width", v.frame_width, 32, 4096)
    check_range(f"{prefix}sample_fps", v.sample_fps, 0, 1000, lo_open=True)
    check_choice(f"{prefix}extractor", v.extractor, VIDEO_EXTRACTORS)
    if v.extractor == "resnet50" and not v.weights:
        raise ValueError(f"params key '{prefix}weights': extractor resnet50 needs a weights file (ImageNet or "
                         f"Places365 ResNet-50), found ''")
    check_range(f"{prefix}tolerance_s", v.tolerance_s, 0, 3600)


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Build and validate :class:`Params` from a loaded params mapping."""
    try:
        return validate(_build(Params, raw, ""))
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: expected the pipeline parameters file, found nothing")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    return parse_params(raw, str(path))


def to_dict(obj) -> dict:
    """A params object as plain builtins (for checkpoints and logs)."""
    return dataclasses.asdict(obj)


