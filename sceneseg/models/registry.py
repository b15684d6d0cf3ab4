"""The models of the pipeline, by the name ``train.model`` selects (and their params section's name).

Each model is one package with a :class:`~sceneseg.models.base.ModelKind` in its ``kind`` module;
register it here and name its params section in :data:`sceneseg.config.MODEL_SECTIONS`. A model's
package is imported only when it is asked for, so the train and evaluate stages import the selected
model's code alone (dvc.yaml lists ``sceneseg/models/${train.model}``: editing one model's package
reruns only its own training).
"""

from __future__ import annotations

import importlib

from sceneseg.config import Params
from sceneseg.models.base import ModelKind

# name -> the ModelKind subclass, as "module:class" (imported on first use)
MODELS: dict[str, str] = {
    "simseq": "sceneseg.models.simseq.kind:SimSeqKind",
    "lgss": "sceneseg.models.lgss.kind:LGSSKind",
}
_loaded: dict[str, ModelKind] = {}


def get_model(name: str) -> ModelKind:
    """The model registered as ``name``; a ValueError naming the known ones otherwise."""
    if name not in MODELS:
        raise ValueError(f"model {name!r}: expected one of {', '.join(MODELS)}")
    if name not in _loaded:
        module, cls = MODELS[name].split(":")
        _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]


def model_params(params: Params, name: str | None = None, source: str = "params.yaml"):
    """The own section of model ``name`` (default: the one ``train.model`` selects), parsed and
    checked; a ValueError naming ``source`` and the key otherwise."""
    name = name or params.train.model
    return get_model(name).parse_params(params.models[name], source)


def all_model_params(params: Params, source: str = "params.yaml") -> dict[str, object]:
    """Every model's own section, parsed and checked: a typo in the section of a model not selected
    is found too (``make exp`` checks them all before DVC starts)."""
    return {name: model_params(params, name, source) for name in MODELS}
