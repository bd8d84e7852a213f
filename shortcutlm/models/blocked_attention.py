"""Causal attention in query blocks through batched matrix products, for CPU training.

Why our own: PyTorch's CPU flash kernel runs no faster in bf16 than in fp32, and a bf16 training
step spent 42-49% of its time in it. Attention written as batched products instead reaches the
machine's bf16 matrix units. Measured at the benchmark size (batch 8, 6 heads, 512 positions, head
64; forward + backward, two threads, AMD EPYC with AVX-512 BF16):

=========  ==========================  ================
dtype      scaled_dot_product (flash)  blocked (block)
=========  ==========================  ================
bf16       61.9 ms                     19.7 ms (128)
fp32       76.1 ms                     47.7 ms (64)
=========  ==========================  ================

At 1024 positions bf16 is still 1.7x faster and fp32 level; at 2048 bf16 1.5x, fp32 slower. Forward
only (evaluation, a prefill) only bf16 gains (8 x 6 x 512: 0.47 of the flash kernel's time; fp32 1.26x
slower), and tiny calls lose to the per-block calls: :func:`fits` holds the measured limits.

The sequence is cut into blocks of queries; block ``i`` attends to the keys up to its own end, so the
products skip most of the masked half (blocks of 128 at 512 positions compute 10/16 of the full
square). Unlike flash attention it keeps each block's probabilities for the backward pass: that is
``batch x heads x (about T^2/2) x itemsize`` bytes a layer (15.7 MB at the benchmark size in bf16),
so :func:`chosen` leaves long or large calls to the flash kernel.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

#: Query block per dtype: the fastest of 64, 128, 256 measured above.
BLOCK = {torch.bfloat16: 128, torch.float32: 64}
#: Longest sequence per dtype where the blocked path was measured faster than the flash kernel.
LONGEST = {torch.bfloat16: 2048, torch.float32: 512}
#: Most probability bytes one call may keep for its backward pass (else the flash kernel's O(T) memory).
MAX_SAVED_BYTES = 256 * 2**20
#: Least work (batch x heads x T^2) where the blocked path's per-block calls pay, with a backward to
#: run and forward only. Forward + backward: 1 x 6 heads x 32 positions 1.2-1.6x slower than the flash
#: kernel, 8 x 6 x 32 (49k) 0.29-0.73 of its time. Forward only (evaluation, a prefill), bf16 alone
#: gains, and from more work: 1 x 6 x 128 (98k) 1.12x slower, 1 x 6 x 256 (393k) 0.62 of its time;
#: fp32's forward is no faster (8 x 6 x 512: 1.26x slower), its gain is all in the backward.
MIN_WORK = {"backward": 2**15, "forward": 2**18}


def compute_dtype(q: Tensor) -> torch.dtype:
    """The dtype attention computes in: autocast's, when autocast is on for q's device (as it would
    cast ``scaled_dot_product_attention``), else q's own."""
    kind = q.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else q.dtype


def saved_bytes(batch_heads: int, t: int, block: int, itemsize: int) -> int:
    """Bytes of probabilities the blocked path keeps for backward: each block's rows x keys so far."""
    return batch_heads * itemsize * sum((min(i + block, t) - i) * min(i + block, t) for i in range(0, t, block))


def chosen(q: Tensor, k: Tensor, v: Tensor, dropout: float) -> bool:
    """Whether a full causal self-attention call takes the blocked path: on CPU, without attention
    dropout, where :func:`fits` says it was measured faster. Under ``torch.compile`` too: the path
    runs eagerly between compiled graphs (:func:`causal_attention`), since Inductor's CPU attention is
    the same flash kernel (bf16 step, 6 x 384: 0.91 s compiled with it against 0.57 s compiled around
    the blocked path)."""
    if q.device.type != "cpu" or dropout > 0 or k.shape[-2] != q.shape[-2]:
        return False
    b, h, t, _ = q.shape
    backward = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return fits(compute_dtype(q), b * h, t, backward)


def fits(dtype: torch.dtype, batch_heads: int, t: int, backward: bool) -> bool:
    """Whether a CPU causal call of ``t`` positions in ``dtype`` is one the blocked path was measured
    faster for (with a backward to run, or forward only), within the memory cap."""
    if dtype not in BLOCK or t > LONGEST[dtype]:
        return False
    if not backward:
        return dtype == torch.bfloat16 and batch_heads * t * t >= MIN_WORK["forward"]
    return (batch_heads * t * t >= MIN_WORK["backward"]
            and saved_bytes(batch_heads, t, BLOCK[dtype], torch.finfo(dtype).bits // 8) <= MAX_SAVED_BYTES)


def trains_blocked(device: str, dtype: torch.dtype, batch_heads: int, t: int) -> bool:
    """Whether an eager training step of this shape takes the blocked path (else the flash kernel)."""
    return torch.device(device).type == "cpu" and fits(dtype, batch_heads, t, backward=True)


def training_path(device: str, dtype: torch.dtype, batch_heads: int, t: int) -> str:
    """Which attention an eager training step of this shape takes, in words (for benchmark reports)."""
    if trains_blocked(device, dtype, batch_heads, t):
        return f"blocked batched products (models.blocked_attention), query blocks of {BLOCK[dtype]}"
    return "F.scaled_dot_product_attention"


@lru_cache(maxsize=64)
def _above_diagonal(rows: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[rows, rows] in ``dtype``: -inf where a key lies after its query inside the diagonal block, 0
    elsewhere. Added to the scores rather than written by a boolean mask: the add takes 0.05 ms
    where ``masked_fill_`` took 0.23 (8 x 6 heads x 128 x 128 in bf16)."""
    return torch.zeros(rows, rows, dtype=dtype, device=device).masked_fill_(
        torch.ones(rows, rows, dtype=torch.bool, device=device).triu(1), float("-inf"))


def _heads_in_projection_layout(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An empty [B,H,T,D] tensor over [B,T,H,D] memory: the layout the projections read and write,
    so a gradient written in it reaches them without a copy."""
    b, h, t, d = shape
    return torch.empty(b, t, h, d, dtype=dtype, device=device).transpose(1, 2)


class _BlockedCausal(torch.autograd.Function):
    """Forward and backward of causal attention block by block on q, k, v [B,H,T,D]; q is scaled by
    ``scale`` as it is made contiguous (one pass), and its gradient as it is written.

    The output and all three gradients are written in [B,T,H,D] memory, the layout the projections
    use, so the heads merge back into [B,T,H*D] without a copy. Inputs and the incoming gradient are made
    contiguous once: a strided slice would be copied inside every block's product.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, block: int, scale: float) -> Tensor:
        q = torch.mul(q, scale, out=torch.empty(q.shape, dtype=q.dtype, device=q.device))  # scaled, contiguous
        k, v = k.contiguous(), v.contiguous()
        t = q.shape[2]
        out = _heads_in_projection_layout(q.shape, q.dtype, q.device)
        probs = []
        for i in range(0, t, block):
            e = min(i + block, t)
            scores = torch.matmul(q[:, :, i:e], k[:, :, :e].transpose(2, 3))
            scores[..., i:e] += _above_diagonal(e - i, scores.dtype, q.device)
            p = torch.softmax(scores, -1)  # reduced-precision input: PyTorch accumulates in fp32
            out[:, :, i:e] = torch.matmul(p, v[:, :, :e])
            probs.append(p)
        ctx.save_for_backward(q, k, v, *probs)
        ctx.block, ctx.scale = block, scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        q, k, v, *probs = ctx.saved_tensors
        grad = grad.to(q.dtype).contiguous()
        dq = _heads_in_projection_layout(q.shape, q.dtype, q.device)
        # Keys and values gather from every later block: summed in fp32, rounded once.
        dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        dv = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
        for p, i in zip(probs, range(0, q.shape[2], ctx.block)):
            e = i + p.shape[2]
            g = grad[:, :, i:e]
            dv[:, :, :e] += torch.matmul(p.transpose(2, 3), g)
            d_scores = torch._softmax_backward_data(torch.matmul(g, v[:, :, :e].transpose(2, 3)), p, -1, p.dtype)
            torch.mul(torch.matmul(d_scores, k[:, :, :e]), ctx.scale, out=dq[:, :, i:e])  # q was scaled
            dk[:, :, :e] += torch.matmul(d_scores.transpose(2, 3), q[:, :, i:e])
        return (dq, _heads_in_projection_layout(k.shape, k.dtype, k.device).copy_(dk),
                _heads_in_projection_layout(v.shape, v.dtype, v.device).copy_(dv), None, None)


@torch.compiler.disable  # eager between compiled graphs: traced, its loop unrolls into slower code
def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal softmax(q k^T / sqrt(D)) v for q [B,H,T,D] over k, v [B,Hkv,T,D] (grouped heads repeated),
    computed in :func:`compute_dtype`, block by block. The result is a [B,H,T,D] view of [B,T,H,D] memory."""
    dtype = compute_dtype(q)
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    with torch.autocast(q.device.type, enabled=False):
        return _BlockedCausal.apply(q.to(dtype), k.to(dtype), v.to(dtype), BLOCK[dtype], 1 / math.sqrt(q.shape[-1]))
