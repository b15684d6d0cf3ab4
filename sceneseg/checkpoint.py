"""Self-contained checkpoints: weights plus everything needed to use them.

A checkpoint holds the model's own config (feature dimensions, modalities, fusion
weights), the window geometry, the decision threshold chosen on validation, the
params and the git commit it was trained from. It holds only tensors and builtins,
so it loads with ``torch.load(weights_only=True)``: no code runs from a checkpoint.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from sceneseg.model import LGSS, ModelConfig

FORMAT = "sceneseg-lgss/1"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model with its metadata."""

    model: LGSS
    config: ModelConfig
    seq_len: int
    threshold: float
    threshold_metric: str
    params: dict
    git_commit: str


def git_commit(cwd: Path | str = ".") -> str:
    """The current commit (with '-dirty' when the tree has changes), or 'unknown' outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save_checkpoint(path: Path, model: LGSS, config: ModelConfig, seq_len: int, threshold: float,
                    threshold_metric: str, params: dict, commit: str) -> None:
    """Write a checkpoint atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "model_config": config.to_dict(),
        "seq_len": int(seq_len),
        "threshold": float(threshold),
        "threshold_metric": threshold_metric,
        "params": params,
        "git_commit": commit,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(doc, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True``) and rebuild the model in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: expected a sceneseg checkpoint file, found nothing")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a valid checkpoint"
        # first line only: torch's message goes on to suggest weights_only=False, which would run code
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path}: not a loadable sceneseg checkpoint ({type(e).__name__}: {reason})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{path}: expected checkpoint format {FORMAT!r}, found {found!r}")
    config = ModelConfig.from_dict(doc["model_config"])
    model = LGSS(config)
    try:
        model.load_state_dict(doc["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the stored model config: {e}") from None
    model.to(device).eval()
    return Checkpoint(model, config, int(doc["seq_len"]), float(doc["threshold"]), str(doc["threshold_metric"]),
                      doc["params"], str(doc["git_commit"]))
