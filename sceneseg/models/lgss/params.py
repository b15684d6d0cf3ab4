"""LGSS's params section (``lgss`` in params.yaml): its fields and their checks. Imports neither
torch nor scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass

from sceneseg.config import check_choice, check_class_weights, check_modalities, check_range, parse_section


@dataclass(frozen=True)
class LGSSParams:
    """The ``lgss`` section of params.yaml (the published recipe by default)."""

    modalities: list[str]
    fusion_weights: dict[str, float]
    sim_channel: int
    lstm_hidden: int
    fc_hidden: int
    lr: float  # used when train.lr is null
    weight_decay: float
    lr_decay_epochs: list[int]
    lr_decay_gamma: float
    class_weights: list[float]
    select_epoch: str
    scale_inputs: bool
    batch_size: int = 8  # windows per training step (the seed's), used when train.batch_size is null
    shot_num: int = 4  # shots each transition sees: 2 before, 2 after (was featurize.shot_num)
    eval_batch_size: int = 256  # windows per inference batch (was train.eval_batch_size)
    epochs: int = 30  # used when train.epochs is null


def validate(p: LGSSParams, section: str = "lgss") -> None:
    """Range and choice checks of the section; errors name ``section.key``."""
    check_modalities(f"{section}.modalities", p.modalities)
    if set(p.fusion_weights) != set(p.modalities):
        raise ValueError(f"params key '{section}.fusion_weights': expected one weight per modality "
                         f"{p.modalities}, found weights for {sorted(p.fusion_weights)}")
    for key in ("sim_channel", "lstm_hidden", "fc_hidden"):
        check_range(f"{section}.{key}", getattr(p, key), 1, 1_000_000)
    check_range(f"{section}.lr", p.lr, 0, 10, lo_open=True)
    check_range(f"{section}.batch_size", p.batch_size, 1, 1_000_000)
    check_range(f"{section}.eval_batch_size", p.eval_batch_size, 1, 1_000_000)
    check_range(f"{section}.epochs", p.epochs, 1, 1_000_000)
    check_range(f"{section}.weight_decay", p.weight_decay, 0, 1)
    check_range(f"{section}.lr_decay_gamma", p.lr_decay_gamma, 0, 1, lo_open=True)
    check_class_weights(f"{section}.class_weights", p.class_weights)
    check_choice(f"{section}.select_epoch", p.select_epoch, ("best_val", "last"))
    if p.shot_num < 2 or p.shot_num % 2:
        raise ValueError(f"params key '{section}.shot_num': expected an even number >= 2, found {p.shot_num}")


def parse(raw: dict, source: str = "params.yaml", section: str = "lgss") -> LGSSParams:
    """The ``lgss`` section of a params file (``raw``: the section's mapping), built and checked;
    a ValueError naming ``source`` and the key otherwise."""
    return parse_section(raw, LGSSParams, section, validate, source)
