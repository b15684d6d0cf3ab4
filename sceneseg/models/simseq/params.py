"""SimSeq's params section (``simseq`` in params.yaml): its fields and their checks.

Imports neither torch nor scikit-learn: the features stage reads these params (the similarity
features' widths) without the model's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sceneseg.config import check_choice, check_class_weights, check_modalities, check_range, parse_section


@dataclass(frozen=True)
class SimSeqParams:
    """The ``simseq`` section of params.yaml."""

    modalities: list[str]
    widths: list[int]  # k of the window cosines
    cross_widths: list[int]  # k of the best shot-to-shot match across the cut
    use_shipped: bool  # read the dataset's shipped prediction when a movie has one
    shipped_dropout: float  # share of training crops that see no shipped prediction
    hidden: int
    dropout: float
    crop_len: int  # transitions per training crop
    lr: float  # used when train.lr is null
    weight_decay: float
    warmup_epochs: int
    class_weights: list[float]
    patience: int  # stop after this many epochs without a better validation AP; 0 = never
    match_widths: list[int] = field(default_factory=list)  # k of the mean best match across the cut
    tree_iters: int = 250  # boosted trees averaged with the GRU (log-odds); 0 = the GRU alone
    tree_lr: float = 0.1
    tree_leaves: int = 31  # leaves per tree (LightGBM's num_leaves)
    tree_bins: int = 63  # histogram bins per column (LightGBM's max_bin)
    tree_context: int = 2  # the trees read the features of this many neighbouring transitions on each side
    bare_tree_fits: int = 3  # the trees without the shipped input: this many fits, averaged
    bare_tree_features: float = 0.3  # share of the columns each of those trees reads (LightGBM feature_fraction)
    temporal: str = "gru"  # gru (bidirectional GRU) | lstm (the same with LSTMs) | conv (residual dilated convolutions, parallel over time)
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])  # of the conv layers
    batch_size: int = 64  # crops per training step, used when train.batch_size is null
    epochs: int = 20  # used when train.epochs is null
    sharpen: float = 0.2  # each final logit minus this times how far its two neighbours' mean lies above it (0 = off)


def validate(p: SimSeqParams, section: str = "simseq") -> None:
    """Range and choice checks of the section; errors name ``section.key``."""
    check_modalities(f"{section}.modalities", p.modalities)
    for key in ("widths", "cross_widths", "match_widths"):
        ks = getattr(p, key)
        if (not ks and key != "match_widths") or len(set(ks)) != len(ks) or min(ks, default=1) < 1 \
                or max(ks, default=1) > 256:
            raise ValueError(f"params key '{section}.{key}': expected distinct widths in [1, 256], found {ks}")
    check_range(f"{section}.shipped_dropout", p.shipped_dropout, 0, 1)
    check_range(f"{section}.hidden", p.hidden, 1, 4096)
    check_choice(f"{section}.temporal", p.temporal, ("gru", "lstm", "conv"))
    if not p.dilations or len(set(p.dilations)) != len(p.dilations) or min(p.dilations) < 1 \
            or max(p.dilations) > 4096:
        raise ValueError(f"params key '{section}.dilations': expected distinct dilations in [1, 4096], "
                         f"found {p.dilations}")
    check_range(f"{section}.dropout", p.dropout, 0, 1, hi_open=True)
    check_range(f"{section}.crop_len", p.crop_len, 2, 1_000_000)
    check_range(f"{section}.lr", p.lr, 0, 10, lo_open=True)
    check_range(f"{section}.batch_size", p.batch_size, 1, 1_000_000)
    check_range(f"{section}.epochs", p.epochs, 1, 1_000_000)
    check_range(f"{section}.weight_decay", p.weight_decay, 0, 10)
    check_range(f"{section}.warmup_epochs", p.warmup_epochs, 0, 10_000)
    check_class_weights(f"{section}.class_weights", p.class_weights)
    check_range(f"{section}.patience", p.patience, 0, 10_000)
    check_range(f"{section}.tree_iters", p.tree_iters, 0, 100_000)
    check_range(f"{section}.tree_lr", p.tree_lr, 0, 10, lo_open=True)
    check_range(f"{section}.tree_leaves", p.tree_leaves, 2, 100_000)
    check_range(f"{section}.tree_bins", p.tree_bins, 2, 65_535)
    check_range(f"{section}.tree_context", p.tree_context, 0, 64)
    check_range(f"{section}.bare_tree_fits", p.bare_tree_fits, 1, 100)
    check_range(f"{section}.bare_tree_features", p.bare_tree_features, 0, 1, lo_open=True)
    check_range(f"{section}.sharpen", p.sharpen, 0, 10)


def parse(raw: dict, source: str = "params.yaml", section: str = "simseq") -> SimSeqParams:
    """The ``simseq`` section of a params file (``raw``: the section's mapping), built and checked;
    a ValueError naming ``source`` and the key otherwise."""
    return parse_section(raw, SimSeqParams, section, validate, source)
