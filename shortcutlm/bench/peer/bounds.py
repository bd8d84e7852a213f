"""What the machine allows: the floors under any implementation's step and decode times, and the
ratios against theirs that an implementation reaching those floors would attain."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shortcutlm.bench.common import matmul_peak_flops, timed
from shortcutlm.models import GPT, GPTConfig, flops_per_token
from shortcutlm.models.packed import pack_weight, packed_product

#: Rounds of weight-read passes, a second apart, whose best is the decoding floor (see weight_read_times).
FLOOR_ROUNDS = 5
#: What the floors mean, written beside them in the JSON.
MEANING = ("train_step_floor_seconds: the step at 100% of the measured matmul peak; "
           "decode_weight_read_seconds: one batch-1 pass through every weight matrix in the fastest weight layout "
           "this machine offers (plain, MKL-packed, oneDNN-packed; each in decode_weight_read_seconds_by_layout), "
           f"the best of {FLOOR_ROUNDS} rounds a second apart, "
           "the least a decoded token costs. 'attainable' in targets is the ratio an implementation that "
           "reached these floors would get against theirs")


def weight_passes(model: nn.Module, device: str, dtype: torch.dtype) -> dict[str, Callable[[], list[torch.Tensor]]]:
    """One batch-1 pass through every Linear of ``model``, in each weight layout this machine's
    libraries offer: plain (what ``F.linear`` reads), and on a CPU the blocked layouts that MKL and
    oneDNN pack a weight into for a one-row product (what Inductor's freezing uses). Which layout
    reads fastest depends on the machine and the size: on an AMD EPYC with a 32 MiB L3, one thread,
    6 x 384 (45 MB of weights), plain 2.47 ms, MKL-packed 2.15, oneDNN-packed 1.87; at 4 x 256 (15
    MB) plain 0.24, MKL 0.33, oneDNN 0.40. Each pass returns its products (the same in every layout)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    rows = [torch.randn(1, m.in_features, device=device, dtype=dtype) for m in linears]
    weights = [m.weight.detach().to(dtype) for m in linears]

    def plain() -> list[torch.Tensor]:
        return [F.linear(row, weight) for row, weight in zip(rows, weights)]

    passes = {"plain": plain}
    if device == "cpu" and torch._C.has_mkl and dtype == torch.float32:
        mkl = [torch.ops.mkl._mkl_reorder_linear_weight(w, 1) for w in weights]

        def mkl_packed() -> list[torch.Tensor]:
            return [torch.ops.mkl._mkl_linear(row, packed, weight, None, 1)
                    for row, packed, weight in zip(rows, mkl, weights)]

        passes["mkl_packed"] = mkl_packed
    if device == "cpu" and torch.backends.mkldnn.is_available():
        onednn = [pack_weight(w) for w in weights]

        def onednn_packed() -> list[torch.Tensor]:  # the raw product: no operator dispatch, a floor
            return [packed_product(row, packed, None) for row, packed in zip(rows, onednn)]

        passes["onednn_packed"] = onednn_packed
    return passes


def weight_read_times(model: nn.Module, device: str, dtype: torch.dtype, repeats: int = 20, rounds: int = 1,
                      pause: float = 0.0) -> dict[str, float]:
    """Best time of one weight pass (``weight_passes``) per layout, over ``rounds`` rounds ``pause``
    seconds apart. Each layout's passes run back to back, as decoding runs them: interleaved, the
    layouts together outgrow the cache that one of them fits (4 x 256 on a 32 MiB L3: a plain pass
    0.24 ms alone, 1.04 ms interleaved). Rounds spread over seconds because a shared machine's memory
    bandwidth comes and goes in bursts: the best of 20 passes read 1.30-1.64 ms at 6 x 384 in eight
    rounds a second apart (AMD EPYC, idle), and 1.86 ms once in a benchmark's single round."""
    best: dict[str, float] = {}
    passes = weight_passes(model, device, dtype)
    with torch.no_grad():
        for round_ in range(rounds):
            if round_:
                time.sleep(pause)
            for name, fn in passes.items():
                fn()
                best[name] = min(best.get(name, float("inf")), *(timed(fn, device) for _ in range(repeats)))
    return best


def weight_read_seconds(model: nn.Module, device: str, dtype: torch.dtype, repeats: int = 20) -> float:
    """The least time in which this machine passes one row through every Linear of ``model``: the
    fastest layout of ``weight_read_times``.

    Decoding a token at batch 1 multiplies one row by every weight matrix once; on a CPU that is
    bound by reading the weights from memory, so no implementation of this model decodes a
    token faster than this (attention over the cache and sampling come on top). The fastest
    layout is taken, not the plain one: a ceiling that a packed layout beats is not a ceiling.
    """
    return min(weight_read_times(model, device, dtype, repeats).values())


def floors(config: GPTConfig, batch: int, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Step time at 100% of the measured matmul peak, and the weight-read time per decoded token."""
    model = GPT(config).to(device)
    peak = matmul_peak_flops(device, dtype)
    flops = flops_per_token(config, model.num_params())
    step = flops * batch * config.block_size / peak
    layouts = weight_read_times(model, device, dtype, rounds=FLOOR_ROUNDS, pause=1.0)
    read = min(layouts.values())
    weight_bytes = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)) * \
        torch.finfo(dtype).bits // 8
    return {"matmul_peak_flops": peak, "flops_per_token": flops,
            "flops_formula": "6N + 12·L·d·T (models.gpt.flops_per_token)",
            "train_step_floor_seconds": step, "decode_weight_read_seconds": read,
            "decode_weight_read_seconds_by_layout": layouts,
            "decode_weight_read_layout": min(layouts, key=lambda name: layouts[name]),
            "decode_weight_bytes": weight_bytes, "decode_weight_read_bytes_per_second": weight_bytes / read}


def attainable(ours: dict[str, Any], theirs: dict[str, Any], floor: dict[str, Any]) -> dict[str, float]:
    """The best any implementation could do against theirs on this machine (a step at 100% of the
    matmul peak, a decoded token that costs nothing beyond reading the weights once), and how
    near ours comes to those floors."""
    return {
        "step_time_ratio_floor": floor["train_step_floor_seconds"] / theirs["train_step_seconds_median"],
        "generation_ratio_ceiling": 1 / (floor["decode_weight_read_seconds"] *
                                         theirs["generate_tokens_per_second_cached"]),
        "our_mfu": floor["train_step_floor_seconds"] / ours["train_step_seconds_median"],
        "our_decode_share_reading_weights": floor["decode_weight_read_seconds"] *
        ours["generate_tokens_per_second_cached"],
    }
