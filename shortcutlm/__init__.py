"""shortcutlm: GPT-style models on audio, text and MIDI tokens, with layerwise attention shortcuts and
value residual learning.

From Python (:mod:`shortcutlm.api`)::

    model = shortcutlm.load("runs/ckpt/sp")
    sample = model.generate(prompt="prompt.txt", tokens=100, seed=1)

The names below are imported when first used, so ``import shortcutlm`` (and the command line's
``--help``) stay fast: torch loads only once a model is.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Model", "Sample", "load", "prepare", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from shortcutlm import api

        return getattr(api, name)
    raise AttributeError(f"module 'shortcutlm' has no attribute {name!r}")
