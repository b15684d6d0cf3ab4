"""Self-contained checkpoints: weights plus everything needed to use them.

A checkpoint holds the model's name (``train.model``) and its own config (for LGSS: feature
dimensions, fusion weights, input scales, window geometry), the decision threshold chosen on validation, the
params it was trained with (no git commit: the same run gives the same bytes in every clone, and
dvc.lock pins the code). It holds only tensors and builtins,
so it loads with ``torch.load(weights_only=True)``: no code runs from a checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sceneseg.data.movies import DATASET_FEATURES
from sceneseg.models.base import ModelKind

FORMAT = "sceneseg/2"  # any model: the model's name and its config
LGSS_FORMAT_V1 = "sceneseg-lgss/1"  # checkpoints written before models became a choice (LGSS only)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model with its metadata."""

    model: torch.nn.Module
    kind: ModelKind  # the model's entry in sceneseg.models (train, build, predict)
    config: dict  # the model's own config
    threshold: float
    threshold_metric: str
    params: dict
    git_commit: str
    extractor: str = DATASET_FEATURES  # what computed the features it was trained on (checkpoints before: the data set's)

    @property
    def feature_dims(self) -> dict[str, int]:
        """Modality -> dimension of the features the model reads."""
        return self.kind.feature_dims(self.config)

    def predict(self, movies: list, device: torch.device, batch_size: int | None = None) -> dict:
        """Boundary probability of every transition of each movie (>= 2 shots): id -> [N-1] float64;
        ``batch_size`` None: the model's own (LGSS: ``lgss.eval_batch_size`` of its run)."""
        return self.kind.predict(self.model, self.config, movies, device, batch_size)


def save_checkpoint(path: Path, model_name: str, model: torch.nn.Module, config: dict, threshold: float,
                    threshold_metric: str, params: dict, commit: str, extractor: str = DATASET_FEATURES) -> None:
    """Write a checkpoint atomically (temp file, then rename). ``extractor``: what computed the training
    movies' features (``Movie.extractor``), so that predicting on other features can be said."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "model": model_name,
        "model_config": config,
        "threshold": float(threshold),
        "threshold_metric": threshold_metric,
        "params": params,
        "git_commit": commit,
        "extractor": extractor,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(doc, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True``) and rebuild the model in eval mode."""
    from sceneseg.models.registry import get_model

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: expected a sceneseg checkpoint file, found nothing")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a valid checkpoint"
        # no word of torch's message: it goes on to advise weights_only=False, which would run the file's code
        raise ValueError(f"{path}: not a sceneseg checkpoint (it holds more than tensors and plain values, or is "
                         f"damaged: {type(e).__name__}); it was not loaded. Checkpoints come from this "
                         f"pipeline's train stage (models/model.pt after dvc repro)") from None
    if isinstance(doc, dict) and doc.get("format") == LGSS_FORMAT_V1:
        doc = {**doc, "model": "lgss", "model_config": {"net": doc["model_config"], "seq_len": doc["seq_len"]}}
    elif not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{path}: expected checkpoint format {FORMAT!r}, found {found!r}")
    try:
        kind = get_model(doc.get("model"))
    except ValueError as e:
        raise ValueError(f"{path}: a checkpoint of {e}") from None
    model = kind.build(doc["model_config"])
    try:
        model.load_state_dict(doc["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the stored model config: {e}") from None
    model.to(device).eval()
    return Checkpoint(model, kind, doc["model_config"], float(doc["threshold"]), str(doc["threshold_metric"]),
                      doc["params"], str(doc["git_commit"]), str(doc.get("extractor", DATASET_FEATURES)))
