"""Projections that read their weights packed for one-row products while a model decodes on a CPU.

A decoded token multiplies one row by every weight matrix, so batch-1 decoding is bound by how fast
the weights are read. oneDNN can reorder a weight into a blocked layout for such products; whether
that reads faster than PyTorch's plain matrix product depends on the machine and the model (measured
on a 2-core AMD EPYC with a 32 MiB L3, two threads, one pass over every weight: 6 x 384, 45 MB,
plain 3.0 ms, packed 1.4 ms; 12 x 768, plain 18.9 ms, packed 9.9 ms; but 4 x 256, whose 15 MB stay
in the L3, plain 0.30 ms, packed 0.38 ms). So :func:`packing_pays` times both on the model itself,
once per model and thread count, and ``generate`` packs only where it measured a gain.

The packed product is a custom operator (:func:`packed_linear`): it looks the packed copy of its
weight up by the weight's identity and repacks when the weight's version has changed (an optimiser
step, ``load_state_dict``), so a model that trains between generations never decodes with stale
weights, eager or compiled. The packed copies (one per weight, the weights' size again) live as
long as their weights. There is no backward: :class:`Linear` packs only while its ``packed`` flag is
set (by :func:`packed_linears`, around decoding) and gradients are off.
"""
from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: A packed pass must take at most this share of the plain pass's time for decoding to pack. Packed
#: and plain products round differently, so a decision that flipped between runs could change a
#: seed's samples: the margin keeps a borderline machine on the plain product (one thread at 6 x 384
#: on the AMD EPYC above measures about 0.9) and packs where the gain is clear (two threads: 0.65).
PACKING_MARGIN = 0.8

_PACKED: dict[int, tuple[weakref.ref[Tensor], int, Tensor]] = {}
_PAYS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, bool]] = weakref.WeakKeyDictionary()


def _packed_weight(weight: Tensor) -> Tensor:
    """oneDNN's packed copy of ``weight`` (for products with one row), made again when the weight's
    version has moved on; forgotten when the weight is freed."""
    key = id(weight)
    hit = _PACKED.get(key)
    if hit is None or hit[0]() is not weight or hit[1] != weight._version:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
        hit = (weakref.ref(weight, lambda _: _PACKED.pop(key, None)), weight._version, packed)
        _PACKED[key] = hit
    return hit[2]


@torch.library.custom_op("shortcutlm::packed_linear", mutates_args=())
def packed_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)`` through ``weight``'s packed copy (one opaque call for
    ``torch.compile``, which cannot trace oneDNN's packed tensors)."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(rows, _packed_weight(weight), bias, "none", [], "")
    return out.view(*x.shape[:-1], weight.shape[0])


@packed_linear.register_fake
def _packed_linear_shape(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose product reads a packed weight while
    ``packed`` is set and gradients are off."""

    packed = False

    def forward(self, x: Tensor) -> Tensor:
        if self.packed and not torch.is_grad_enabled():
            return packed_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def can_pack(model: nn.Module) -> bool:
    """Whether packing is possible at all: on a CPU with oneDNN, fp32 or bf16 weights, no autocast
    (the packed product would not cast its input as autocast's linear does)."""
    weight = next((m.weight for m in model.modules() if isinstance(m, Linear)), None)
    return (weight is not None and weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and weight.dtype in (torch.float32, torch.bfloat16) and not torch.is_autocast_enabled("cpu"))


@contextlib.contextmanager
def packed_linears(model: nn.Module, on: bool = True) -> Iterator[None]:
    """Within the block, every :class:`Linear` of ``model`` reads packed weights (when ``on``)."""
    linears = [m for m in model.modules() if isinstance(m, Linear)] if on else []
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
    the custom operator, so its dispatch (about 15 µs a call) is in the comparison."""
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
    return known[key]
