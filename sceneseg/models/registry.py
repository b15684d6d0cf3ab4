"""The models of the pipeline, by the name ``train.model`` selects (and their params section's name).

Each model is one module with a :class:`~sceneseg.models.base.ModelKind`; register it here.
"""

from __future__ import annotations

from sceneseg.models.base import ModelKind
from sceneseg.models.lgss.kind import LGSSKind
from sceneseg.models.simseq.kind import SimSeqKind

MODELS: dict[str, ModelKind] = {kind.name: kind for kind in (SimSeqKind(), LGSSKind())}


def get_model(name: str) -> ModelKind:
    """The model registered as ``name``; a ValueError naming the known ones otherwise."""
    if name not in MODELS:
        raise ValueError(f"model {name!r}: expected one of {', '.join(MODELS)}")
    return MODELS[name]
