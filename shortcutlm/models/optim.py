"""The one optimiser the suite trains with: AdamW over :func:`~shortcutlm.models.gpt.weight_decay_groups`."""
from __future__ import annotations

from typing import Any

import torch

#: Devices with a fused AdamW kernel: one pass over every parameter instead of a dozen for each
#: list of tensors. On CPU, 6 layers x 384, two threads (AMD EPYC): 5.4 ms a step against 25 ms.
FUSED_DEVICES = ("cuda", "cpu")


def adamw(groups: list[dict[str, Any]], device: torch.device | str, lr: float,
          betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over ``groups``, fused on the devices that have the kernel (same update, one pass)."""
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=torch.device(device).type in FUSED_DEVICES)
