"""Decoding several tokens per compiled call (the bound that reading the weights sets on it is
measured by :mod:`shortcutlm.bench.decode_bound`).

At batch 1 a decoded token multiplies one row by every weight matrix once, so its least cost
is the time to read the weights from memory. What eager PyTorch adds on top is per-operation
dispatch (some 50 operations per layer, each a few microseconds on a CPU); ``torch.compile`` fuses
the pointwise work between the matrix products. A compiled *single* step still pays, per token,
the compiled code's Python wrapper, Dynamo's cache lookup and an eager sampling step. So the
compiled unit here is a chunk: ``n`` model steps, each followed by its sampling, unrolled into one
graph, with the generated wrapper in C++ on the CPU. Measured at 4 layers x 256 on one CPU thread
(``docs/bench/decoding/README.md``): eager 1.85 ms a token, a compiled single step 1.25 ms, a chunk of
4 with the C++ wrapper 1.02 ms. The cache length is a symbol (dynamic shapes), so no recompile per
token. Within a chunk the blocks stage their new keys and values (``KVCache.stage``) and attend
over the cache as it was plus the staged part, so the graph only reads the cache buffers; written
into and then read, a buffer would be copied to the attention kernel every step (the writes are
functionalised): at 6 x 384, one thread, staging took a token from 2.58 to 2.35 ms.

On a GPU the chunk is the unit CUDA graphs would capture (one replay per ``CHUNK`` tokens); with a
dynamic cache length it is not captured (``bench.gpu.COMPILED_DECODING`` says what capturing needs).

The chunk samples exactly what the eager loop samples: the random numbers are drawn outside the
graph, in the eager loop's order, from the same generator (``sampling.sampling_noise``), and the
same ``sampling.choose`` turns them into ids inside it.
"""
from __future__ import annotations

import types
import weakref
from collections.abc import Callable

import torch
from torch import Tensor

from shortcutlm.models.gpt import GPT, KVCache

#: Tokens one compiled call decodes.
CHUNK = 4
#: Calls of one generation loop that run with Dynamo's guards checked before the rest skip them.
GUARDED_CALLS = 2

Chunk = Callable[[Tensor, KVCache, Tensor | None, Tensor, Tensor], Tensor]
_COMPILED: weakref.WeakKeyDictionary[GPT, dict[tuple, Chunk]] = weakref.WeakKeyDictionary()


def chunk_steps(model: GPT, n: int, choose: Callable[[Tensor, Tensor | None], Tensor]) -> Chunk:
    """``n`` steps of decoding as one function: feed the last token, sample the next from its logits
    (``choose(logits, noise)``), ``n`` times. Arguments: the last token [B, 1] or [B, K, 1], the cache,
    the noise of each step [n, ...] (None when greedy), the ids never to sample (possibly none), the
    forced ids [..., n] (-1 = sample). Returns the n new tokens [B, n] or [B, K, n]."""

    def steps(last: Tensor, cache: KVCache, noise: Tensor | None, banned: Tensor, forced: Tensor) -> Tensor:
        picked = []
        for i in range(n):
            logits = model(last, cache=cache, last_only=True)[..., -1, :].index_fill(-1, banned, float("-inf"))
            nxt = choose(logits, None if noise is None else noise[i])
            nxt = torch.where(forced[..., i] >= 0, forced[..., i], nxt)
            last = nxt.unsqueeze(-1)
            picked.append(last)
        return torch.cat(picked, dim=-1)

    # Dynamo keeps its compiled graphs on the function's code object, which every chunk would share
    # (and its recompile limit of 8 with it: a test or benchmark reaches it with three models and a
    # few sampling settings). A copy of the code object gives each chunk a cache of its own.
    return types.FunctionType(steps.__code__.replace(), steps.__globals__, steps.__name__,
                              steps.__defaults__, steps.__closure__)


def compiled_chunk(model: GPT, n: int, key: tuple, choose: Callable[[Tensor, Tensor | None], Tensor]) -> Chunk:
    """``chunk_steps`` compiled once per model and ``key`` (the sampling settings it bakes in); kept
    outside the module so its state dict and checkpoints are unchanged. On the CPU the generated
    wrapper is C++ (``cpp_wrapper``): with n tokens per call its per-kernel Python cost is what is
    left, and the C++ wrapper removes it (one thread, 4 x 256: a chunk of 4 1.12 ms a token with the
    Python wrapper, 1.02 ms with C++; a chunk of 8 no faster than 4, and twice the compile)."""
    per_model = _COMPILED.setdefault(model, {})
    fn = per_model.get((n, key))
    if fn is None:
        cpu = model.ln_f.weight.device.type == "cpu"
        fn = torch.compile(chunk_steps(model, n, choose), dynamic=True, options={"cpp_wrapper": cpu})
        per_model[(n, key)] = fn
    return fn


def guarded_calls(fn: Chunk, n: int) -> Chunk:
    """``fn`` (a chunk of ``n`` steps) for one generation loop, with Dynamo's guards (on every
    parameter, the cache object, grad mode, autocast …, about 0.1 ms a call on a CPU) checked on the
    first ``GUARDED_CALLS`` calls only: within one loop none of that changes. Calls at cache lengths a compiled graph
    specialises are always checked: a cache of 0 or 1 positions, and the call that fills the cache
    to its end (the slice then equals the whole buffer)."""
    calls = 0

    def call(last: Tensor, cache: KVCache, noise: Tensor | None, banned: Tensor, forced: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        end = cache.length + n
        if calls <= GUARDED_CALLS or cache.length < 2 or end >= cache.max_len:
            return fn(last, cache, noise, banned, forced)
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
            return fn(last, cache, noise, banned, forced)

    return call
