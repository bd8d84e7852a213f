"""What the machine allows: the floors under any implementation's step and decode times, and the
ratios against theirs that an implementation reaching those floors would attain."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shortcutlm.bench.common import matmul_peak_flops, timed
from shortcutlm.models import GPT, GPTConfig, flops_per_token

#: What the floors mean, written beside them in the JSON.
MEANING = ("train_step_floor_seconds: the step at 100% of the measured matmul peak; "
           "decode_weight_read_seconds: one batch-1 pass through every weight matrix, the least a decoded "
           "token costs. 'attainable' in targets is the ratio an implementation that reached these floors "
           "would get against theirs")


def weight_read_seconds(model: nn.Module, device: str, dtype: torch.dtype, repeats: int = 20) -> float:
    """Best time of one pass through every Linear of ``model`` on a single row.

    Decoding a token at batch 1 multiplies one row by every weight matrix once; on a CPU that is
    bound by reading the weights from memory, so no implementation of this model decodes a
    token faster than this (attention over the cache and sampling come on top).
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    rows = [torch.zeros(1, m.in_features, device=device, dtype=dtype) for m in linears]
    weights = [m.weight.to(dtype) for m in linears]

    @torch.no_grad()
    def one_pass() -> None:
        for row, weight in zip(rows, weights):
            F.linear(row, weight)

    one_pass()
    return min(timed(one_pass, device) for _ in range(repeats))


def floors(config: GPTConfig, batch: int, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Step time at 100% of the measured matmul peak, and the weight-read time per decoded token."""
    model = GPT(config).to(device)
    peak = matmul_peak_flops(device, dtype)
    flops = flops_per_token(config, model.num_params())
    step = flops * batch * config.block_size / peak
    read = weight_read_seconds(model, device, dtype)
    weight_bytes = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)) * \
        torch.finfo(dtype).bits // 8
    return {"matmul_peak_flops": peak, "flops_per_token": flops,
            "flops_formula": "6N + 12·L·d·T (models.gpt.flops_per_token)",
            "train_step_floor_seconds": step, "decode_weight_read_seconds": read,
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
