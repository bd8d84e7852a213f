"""The decoding bound the GPU check judges: batch-1 cached decoding against one read of the weights
per token at the device's measured copy bandwidth (HBM on a GPU, DRAM on a CPU)."""
from __future__ import annotations

import torch
from torch import nn

from shortcutlm.models import GPT, GPTConfig
from shortcutlm.models.sampling import SamplingSettings, generate
from shortcutlm.bench.common import timed


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
    best = min(timed(lambda: dst.copy_(src), device) for _ in range(repeats + 1))
    return 2 * nbytes / best


def decode_bound(config: GPTConfig, device: str, dtype: str, compiled: bool, new_tokens: int = 256,
                 repeats: int = 3) -> dict[str, float | int | str | bool]:
    """Batch-1 cached decoding (16-token prompt, top-k 50) of a fresh ``config`` model with its
    weights in ``dtype``, against one read of those weights per token at the copy bandwidth."""
    torch.manual_seed(0)
    model = GPT(config).to(device=device, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32).eval()
    prompt = torch.randint(0, config.vocab_size, (1, 16), device=device)
    settings = SamplingSettings(temperature=1.0, top_k=50, seed=0)
    generate(model, prompt, min(8, new_tokens), settings, compile=compiled)  # warm-up (and the compile)
    seconds = [timed(lambda: generate(model, prompt, new_tokens, settings, compile=compiled), device) / new_tokens
               for _ in range(repeats)]
    per_token = sorted(seconds)[len(seconds) // 2]
    read = weight_bytes(model)
    bandwidth = copy_bandwidth(device, nbytes=(1 << 30) if device == "cuda" else (1 << 26))
    bound = read / bandwidth
    return {"dtype": dtype, "compiled": compiled, "new_tokens": new_tokens, "seconds_per_token_median": per_token,
            "tokens_per_second": 1 / per_token, "weight_bytes": read, "copy_bandwidth_bytes_per_second": bandwidth,
            "weight_read_bound_seconds": bound, "share_of_bound": bound / per_token}
