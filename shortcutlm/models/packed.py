"""Projections that read their weights packed for one-row products while a model decodes on a CPU.

A decoded token multiplies one row by every weight matrix, so batch-1 decoding is bound by how fast
the weights are read. oneDNN can reorder a weight into a blocked layout for such products; whether
that reads faster than PyTorch's plain matrix product depends on the machine and the model (measured
on a 2-core AMD EPYC with a 32 MiB L3, two threads, one pass over every weight: 6 x 384, 45 MB,
plain 3.0 ms, packed 1.4 ms; 12 x 768, plain 18.9 ms, packed 9.9 ms; but 4 x 256, whose 15 MB stay
in the L3, plain 0.30 ms, packed 0.38 ms). So :func:`packing_pays` times both on the model itself,
once per model and thread count, and ``generate`` packs only where it measured a gain.

The packed product is a custom operator: it looks the packed copy of its weight up by the weight's
identity and repacks when the weight's version has changed (an optimiser step, ``load_state_dict``),
so a model that trains between generations never decodes with stale weights, eager or compiled. It
runs in C++ (``models.native``, built on first use) where it can be built, else in Python
(:func:`packed_linear`): the same oneDNN product either way, so the same samples. The packed copies
(the weights' size again; q, k and v stacked into one, see :func:`project`) live as long as their
weights. There is no backward: :class:`Linear` packs only while its ``packed`` flag is set (by
:func:`packed_linears`, around decoding) and gradients are off.
"""
from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shortcutlm.models import native

#: A packed pass must take at most this share of the plain pass's time for decoding to pack. Packed
#: and plain products round differently, so a decision that flipped between runs could change a
#: seed's samples: the margin keeps a borderline machine on the plain product (one thread at 6 x 384
#: on the AMD EPYC above measures about 0.9) and packs where the gain is clear (two threads: 0.65).
PACKING_MARGIN = 0.8

_PACKED: dict[tuple[int, ...], tuple[list[weakref.ref[Tensor]], list[int], Tensor, Tensor | None]] = {}
_PAYS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, bool]] = weakref.WeakKeyDictionary()
#: The C++ operators (``models.native``) once :func:`packed_linears` has looked for them; None: Python's.
_NATIVE: Any = None
#: Tensors (by id) whose C++ packed copies are dropped as they are freed (a finalizer each, set once).
_WATCHED: dict[int, weakref.ref[Tensor]] = {}


def pack_weight(weight: Tensor) -> Tensor:
    """oneDNN's packed copy of one weight matrix [out, in], laid out for products with one row."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, 1)


def packed_product(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    """``x`` [..., in] times a :func:`pack_weight` copy (plus ``bias``): [rows, out], rows = x's
    leading dimensions flattened."""
    return torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), packed, bias, "none", [], "")


def _packed_weights(weights: list[Tensor], biases: list[Tensor]) -> tuple[Tensor, Tensor | None]:
    """oneDNN's packed copy of ``weights`` stacked (one matrix: several products of one input in one
    pass) and their biases stacked, made again when a weight's or bias's version has moved on;
    forgotten when one of them is freed."""
    tensors = [*weights, *biases]
    key = tuple(id(t) for t in tensors)
    hit = _PACKED.get(key)
    if (hit is None or any(ref() is not t for ref, t in zip(hit[0], tensors))
            or hit[1] != [t._version for t in tensors]):
        stacked = torch.cat([w.detach() for w in weights]) if len(weights) > 1 else weights[0].detach()
        packed = pack_weight(stacked)
        bias = torch.cat([b.detach() for b in biases]) if biases else None
        refs = [weakref.ref(t, lambda _: _PACKED.pop(key, None)) for t in tensors]
        hit = (refs, [t._version for t in tensors], packed, bias)
        _PACKED[key] = hit
    return hit[2], hit[3]


@torch.library.custom_op("shortcutlm::packed_linear", mutates_args=())
def packed_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)`` through ``weight``'s packed copy: one opaque call for
    ``torch.compile``, which cannot trace oneDNN's packed tensors."""
    out = packed_product(x, *_packed_weights([weight], [] if bias is None else [bias]))
    return out.view(*x.shape[:-1], out.shape[-1])


@packed_linear.register_fake
def _packed_linear_shape(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@torch.library.custom_op("shortcutlm::packed_linears", mutates_args=())
def packed_linears_of_one_input(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> list[Tensor]:
    """``[F.linear(x, w, b) for w, b in zip(weights, biases)]`` (``biases`` empty: none) as one
    product through the weights' stacked packed copy: each call costs some 17 µs of dispatch and
    oneDNN set-up, so q, k and v in one call save two of three. (A list-taking operator costs more to
    call than ``packed_linear``, about 8 µs, so single products keep their own.)"""
    out = packed_product(x, *_packed_weights(weights, biases))
    # A custom operator's outputs must not alias one another: each part is its own copy (a few rows).
    return [part.reshape(*x.shape[:-1], part.shape[-1]).clone()
            for part in out.split([w.shape[0] for w in weights], dim=-1)]


@packed_linears_of_one_input.register_fake
def _packed_linears_shape(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> list[Tensor]:
    return [x.new_empty(*x.shape[:-1], w.shape[0]) for w in weights]


def project(x: Tensor, *layers: Linear | None) -> list[Tensor | None]:
    """Each layer applied to ``x`` (None stays None): one packed product for all of them while they
    read packed weights (q, k and v of an attention), each layer's own product otherwise."""
    present = [m for m in layers if m is not None]
    biased = {m.bias is not None for m in present}
    stackable = len(present) > 1 and len(biased) == 1 and all(m.packed for m in present)
    if not stackable or torch.is_grad_enabled():
        if len(present) > 1 and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))  # autocast would cast x once per layer
        return [None if m is None else m(x) for m in layers]
    outs = iter(_stacked_products(x, [m.weight for m in present], [m.bias for m in present]))
    return [None if m is None else next(outs) for m in layers]


def _one_product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """One packed product, through the C++ operator when it is loaded."""
    if _NATIVE is not None:
        return _NATIVE.packed_linear(x, weight, bias)
    return packed_linear(x, weight, bias)


def _stacked_products(x: Tensor, weights: list[Tensor], biases: list[Tensor | None]) -> list[Tensor]:
    """Products of ``x`` with each weight as one product over their stacked packed copy. The C++
    operator returns them side by side, split here into views (no copies); it takes up to three
    weights, as separate arguments (a list would make Inductor's C++ wrapper call back into Python)."""
    if _NATIVE is not None and len(weights) <= 3:
        args = [t for pair in zip(weights, biases) for t in pair]
        return list(_NATIVE.packed_linear(x, *args).split([w.shape[0] for w in weights], dim=-1))
    return packed_linears_of_one_input(x, weights, [b for b in biases if b is not None])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose product reads a packed weight while
    ``packed`` is set and gradients are off."""

    packed = False

    def forward(self, x: Tensor) -> Tensor:
        if self.packed and not torch.is_grad_enabled():
            return _one_product(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def can_pack(model: nn.Module) -> bool:
    """Whether packing is possible at all: on a CPU with oneDNN, fp32 or bf16 weights, no autocast
    (the packed product would not cast its input as autocast's linear does)."""
    weight = next((m.weight for m in model.modules() if isinstance(m, Linear)), None)
    return (weight is not None and weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and weight.dtype in (torch.float32, torch.bfloat16) and not torch.is_autocast_enabled("cpu"))


@contextlib.contextmanager
def packed_linears(model: nn.Module, on: bool = True) -> Iterator[None]:
    """Within the block, every :class:`Linear` of ``model`` reads packed weights (when ``on``), through
    the C++ operators where they build."""
    global _NATIVE
    linears = [m for m in model.modules() if isinstance(m, Linear)] if on else []
    if linears:
        _NATIVE = native.operators()
        if _NATIVE is not None:
            for m in linears:
                _watch(m.weight)
                if m.bias is not None:
                    _watch(m.bias)
    before = [vars(m).get("packed") for m in linears]
    for m in linears:
        m.packed = True
    try:
        yield
    finally:
        for m, was in zip(linears, before):
            if was is None:
                del m.packed  # back to the class's False
            else:
                m.packed = was


def _pass_seconds(linears: list[Linear], rows: list[Tensor], repeats: int) -> float:
    """Best time of one pass of a row through every projection, the passes back to back (as
    decoding runs them, so that a model whose weights fit the cache is timed with them there)."""
    def one_pass() -> None:
        for m, row in zip(linears, rows):
            m(row)

    one_pass()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def packing_pays(model: nn.Module, repeats: int = 10) -> bool:
    """Whether one row's pass through every projection of ``model`` is faster packed than plain, by
    ``PACKING_MARGIN``, measured here (once per model, thread count and weight dtype; some tenths of
    a second at 6 x 384). Both passes go through the projections themselves, the packed one through
    the custom operator, so its cost beyond the reading (17–20 µs a call) is in the comparison."""
    if not can_pack(model):
        return False
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    key = (torch.get_num_threads(), linears[0].weight.dtype)
    known = _PAYS.setdefault(model, {})
    if key not in known:
        rows = [torch.randn(1, 1, m.in_features, dtype=m.weight.dtype) for m in linears]
        plain = _pass_seconds(linears, rows, repeats)
        with packed_linears(model):
            packed = _pass_seconds(linears, rows, repeats)
        known[key] = packed <= PACKING_MARGIN * plain
        _forget(linears)  # decoding packs q, k and v stacked: the measurement's single copies would linger
    return known[key]


def _forget(linears: list[Linear]) -> None:
    """Drop the packed copies made of these projections' weights (made again when next needed)."""
    tensors = [m.weight for m in linears] + [m.bias for m in linears if m.bias is not None]
    ids = {id(t) for t in tensors}
    for key in [k for k in _PACKED if set(k) <= ids]:
        _PACKED.pop(key, None)
    native.forget(tensors)


def _watch(tensor: Tensor) -> None:
    """Drop the C++ operator's packed copies of ``tensor`` when it is freed (they would outlive it:
    the C++ side holds only weak references, which it sweeps when it next packs)."""
    known = _WATCHED.get(id(tensor))
    if known is None or known() is not tensor:
        _WATCHED[id(tensor)] = weakref.ref(tensor)
        weakref.finalize(tensor, _freed, id(tensor), tensor._cdata).atexit = False  # exiting frees all


def _freed(key: int, address: int) -> None:
    _WATCHED.pop(key, None)
    native.forget_addresses([address])
