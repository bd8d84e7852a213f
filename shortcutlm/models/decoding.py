"""Fast single-token decoding: a compiled step, and the bound that reading the weights sets on it.

At batch 1 a decoded token multiplies one row by every weight matrix once, so its least cost
is the time to read the weights from memory. What eager PyTorch adds on top is per-operation
dispatch (some 50 operations per layer, each a few microseconds on a CPU, more on a GPU's launch
path); at small sizes that overhead, not the weights, is most of a token. ``torch.compile``
fuses the pointwise work between the matrix products into a few kernels. The step is compiled
with dynamic shapes so that the growing cache length is a symbol, not a recompile per token.
"""
from __future__ import annotations

import time
import weakref
from typing import Callable

import torch
from torch import Tensor, nn

from shortcutlm.models.config import GPTConfig
from shortcutlm.models.gpt import GPT, KVCache

#: Calls of one generation loop that run with Dynamo's guards checked before the rest skip them.
GUARDED_CALLS = 2
_COMPILED: "weakref.WeakKeyDictionary[GPT, Callable[..., Tensor]]" = weakref.WeakKeyDictionary()


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


def weight_bytes(model: nn.Module) -> int:
    """Bytes a batch-1 token reads: every Linear's weight (and the shortcut's per-depth matrices);
    embedding tables contribute one row, which is negligible."""
    total = sum(m.weight.nbytes for m in model.modules() if isinstance(m, nn.Linear))
    shortcut = getattr(model, "shortcut", None)
    if shortcut is not None:
        total += shortcut.w1.nbytes + shortcut.w2.nbytes
    return total  # a tied head is a Linear sharing its Embedding's weight: counted once, as read


def copy_bandwidth(device: str, nbytes: int = 1 << 28, repeats: int = 5) -> float:
    """Bytes per second the device moves in a large copy (read + write both counted): the
    memory bandwidth a weight-reading decode can hope for (HBM on a GPU, DRAM on a CPU)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def decode_bound(config: GPTConfig, device: str, dtype: str, compiled: bool, new_tokens: int = 256,
                 repeats: int = 3) -> dict[str, float | int | str | bool]:
    """Batch-1 cached decoding (16-token prompt, top-k 50) of a fresh ``config`` model with its
    weights in ``dtype``, against one read of those weights per token at the copy bandwidth."""
    from shortcutlm.models.sampling import SamplingSettings, generate

    torch.manual_seed(0)
    model = GPT(config).to(device=device, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32).eval()
    prompt = torch.randint(0, config.vocab_size, (1, 16), device=device)
    settings = SamplingSettings(temperature=1.0, top_k=50, seed=0)
    generate(model, prompt, min(8, new_tokens), settings, compile=compiled)  # warm-up (and the compile)
    seconds = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        generate(model, prompt, new_tokens, settings, compile=compiled)
        _sync(device)
        seconds.append((time.perf_counter() - start) / new_tokens)
    per_token = sorted(seconds)[len(seconds) // 2]
    read = weight_bytes(model)
    bandwidth = copy_bandwidth(device, nbytes=(1 << 30) if device == "cuda" else (1 << 26))
    bound = read / bandwidth
    return {"dtype": dtype, "compiled": compiled, "new_tokens": new_tokens, "seconds_per_token_median": per_token,
            "tokens_per_second": 1 / per_token, "weight_bytes": read, "copy_bandwidth_bytes_per_second": bandwidth,
            "weight_read_bound_seconds": bound, "share_of_bound": bound / per_token}
