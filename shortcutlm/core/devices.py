"""Which torch device a command runs on: ``auto`` means the GPU when there is one.

One rule for every command (generate, evaluate, diagnose, bench, and training's ``accelerator``),
so ``auto`` means the same everywhere.
"""
from __future__ import annotations

import torch

AUTO = "auto"


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | torch.device | None = AUTO) -> str | torch.device:
    """``name`` as given, except ``"auto"`` (or None): :func:`default_device`."""
    if name is None or (isinstance(name, str) and name == AUTO):
        return default_device()
    return name


def accelerator_device(accelerator: str) -> str:
    """The torch device a Lightning ``accelerator`` setting trains on: the GPU unless it says
    ``cpu`` or none is visible (a ``gpu`` setting without one is refused before training)."""
    return "cpu" if accelerator == "cpu" else default_device()
