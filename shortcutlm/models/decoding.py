"""Fast single-token decoding: a compiled step (the bound that reading the weights sets on it is
measured by :mod:`shortcutlm.bench.decode_bound`).

At batch 1 a decoded token multiplies one row by every weight matrix once, so its least cost
is the time to read the weights from memory. What eager PyTorch adds on top is per-operation
dispatch (some 50 operations per layer, each a few microseconds on a CPU, more on a GPU's launch
path); at small sizes that overhead, not the weights, is most of a token. ``torch.compile``
fuses the pointwise work between the matrix products into a few kernels. The step is compiled
with dynamic shapes so that the growing cache length is a symbol, not a recompile per token.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor

from shortcutlm.models.gpt import GPT, KVCache

#: Calls of one generation loop that run with Dynamo's guards checked before the rest skip them.
GUARDED_CALLS = 2
_COMPILED: weakref.WeakKeyDictionary[GPT, Callable[..., Tensor]] = weakref.WeakKeyDictionary()


def compiled_step(model: GPT) -> Callable[..., Tensor]:
    """``model``'s forward compiled for cached single-token steps (compiled once per model; kept
    outside the module so its state dict and checkpoints are unchanged)."""
    step = _COMPILED.get(model)
    if step is None:
        step = torch.compile(model, dynamic=True)
        _COMPILED[model] = step
    return step


def decode_steps(model: GPT, compile: bool) -> Callable[..., Tensor]:
    """The single-token step of one generation loop: ``model`` itself, or its compiled step.

    Dynamo checks its guards (on every parameter, the cache object, grad mode, autocast …) on
    each call: about 0.1 ms, 10-15% of a compiled token at 4 layers x 256 on a CPU. Within one
    loop none of that changes, so after ``GUARDED_CALLS`` checked calls (which compile whatever
    the loop needs) the rest skip the guards (``skip_guard_eval_unsafe``). Calls at lengths a
    compiled graph specialises are always checked: a cache of 0 or 1 positions, and the step that
    fills the cache to its end (the slice then equals the whole buffer).
    """
    if not compile:
        return model
    fn = compiled_step(model)
    calls = 0

    def step(idx: Tensor, cache: KVCache, last_only: bool = True) -> Tensor:
        nonlocal calls
        calls += 1
        end = cache.length + idx.shape[-1]
        if calls <= GUARDED_CALLS or cache.length < 2 or end >= cache.max_len:
            return fn(idx, cache=cache, last_only=last_only)
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
            return fn(idx, cache=cache, last_only=last_only)

    return step
