"""The device a stage runs on."""

from __future__ import annotations

import torch

from sceneseg.training.distributed import claim_gpu


def pick_device(name: str = "auto", claim: bool = True) -> torch.device:
    """``auto`` -> CUDA if present, else Apple MPS, else CPU; otherwise the named device (checked).

    With several GPUs, CUDA means the GPU this process claims (``claim``, see
    :func:`sceneseg.training.distributed.claim_gpu`), so parallel jobs land on different GPUs."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch finds no CUDA device (use 'auto' or 'cpu')")
    if name == "mps" and not has_mps:
        raise ValueError("device 'mps' was asked for, but torch finds no Apple MPS device (use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: expected auto, cpu, cuda or mps, found {name!r}")
    if name == "cuda" and claim and torch.cuda.device_count() > 1:
        index = claim_gpu()
        torch.cuda.set_device(index)  # stray allocations (autocast, cuBLAS workspaces) go there too
        return torch.device("cuda", index)
    return torch.device(name)
