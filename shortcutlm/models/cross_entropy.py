"""Cross-entropy of each target over logits of any float dtype, in fp32, without an fp32 copy of them.

Why our own: ``F.cross_entropy(logits.float())`` writes the logits again in fp32, then fp32
log-probabilities, and its backward a zeroed fp32 gradient, its fp32 result and the cast back: five
passes over ``tokens x vocab`` in memory the size of the fp32 logits, which a bf16 step on a CPU
pays in memory traffic. Here the fp32 maths runs on row chunks that stay in cache, reading the
logits once each way and writing the gradient once, in the logits' own dtype. Measured at the
benchmark size (4096 rows x 2048 ids, two threads, AMD EPYC), forward + backward, medians: bf16
logits 8.2 ms against 42.8 for ``F.cross_entropy(logits.float())``; fp32 logits 7.9 ms against 23.5.

The result is the same maths: nats = -log_softmax(row)[target] in fp32; gradient
(softmax(row) - onehot(target)) x the incoming gradient, rounded once to the logits' dtype.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: fp32 bytes of one row chunk on the CPU: small enough to stay in a core's cache.
CHUNK_BYTES = 2**20


def _chunks(logits: Tensor) -> range:
    """Row starts of the chunks: chunks of about :data:`CHUNK_BYTES` in fp32 on the CPU, one chunk
    elsewhere (a GPU's kernels run best on the whole tensor)."""
    rows = logits.shape[0]
    step = max(1, CHUNK_BYTES // (4 * logits.shape[1])) if logits.device.type == "cpu" else max(rows, 1)
    return range(0, rows, step)


class _TargetNats(torch.autograd.Function):
    """Nats of each row's target (0 where it is ``ignore``), logits [N, V], targets [N]. Each chunk is
    one fp32 (log-)softmax kernel reading the logits in their dtype (``dtype=torch.float32``): 8.3 ms
    forward + backward at 4096 x 2048 in bf16, against 12.2 ms for logsumexp, subtraction and exp
    as separate passes. Chunks of 1 MiB were the fastest of 256 KiB to 2 MiB."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor, ignore: int) -> Tensor:
        counted = targets != ignore
        safe = targets.where(counted, 0)
        picked = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        starts = _chunks(logits)
        for s in starts:
            e = s + starts.step
            log_probs = torch.log_softmax(logits[s:e], dim=-1, dtype=torch.float32)
            picked[s:e] = log_probs.gather(1, safe[s:e, None]).squeeze(1)
        ctx.save_for_backward(logits, safe, counted)
        return picked.neg_().where(counted, 0.0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        logits, safe, counted = ctx.saved_tensors
        weights = grad.float().where(counted, 0.0)
        out = torch.empty_like(logits)
        starts = _chunks(logits)
        for s in starts:
            e = min(s + starts.step, logits.shape[0])
            x = torch.softmax(logits[s:e], dim=-1, dtype=torch.float32).mul_(weights[s:e, None])
            x[torch.arange(e - s, device=x.device), safe[s:e]] -= weights[s:e]
            out[s:e] = x
        return out, None, None


def target_nats(logits: Tensor, targets: Tensor, ignore: int) -> Tensor:
    """fp32 cross-entropy of each target: ``logits`` [N, V] (any float dtype), ``targets`` [N] ids;
    0 (with no gradient) where a target equals ``ignore``."""
    return _TargetNats.apply(logits, targets, ignore)
