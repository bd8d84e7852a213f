"""Attention primitives the decoder's blocks share: rotary positions, the KV cache, masked attention,
the value residual, and the causal self-attention module.

Their own module because two attentions build on them: the blocks' (:mod:`shortcutlm.models.gpt`)
and the ``last_layer`` shortcut's final-block attention (:mod:`shortcutlm.models.last_layer`). The
value residual (:func:`mix_values`) and every cache write (:meth:`KVCache.store`) are written here
once, for both.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shortcutlm.models import blocked_attention
from shortcutlm.models.config import GPTConfig
from shortcutlm.models.packed import Linear, project


def _no_decay(p: nn.Parameter) -> nn.Parameter:
    """Mark a parameter that AdamW must not decay (biases, gains, λ scalars)."""
    p._no_weight_decay = True  # type: ignore[attr-defined]
    return p


# --------------------------------------------------------------------------------------------
# Rotary positions
# --------------------------------------------------------------------------------------------
class Rotary(nn.Module):
    """Rotary position embedding (RoFormer), rotate-half form, precomputed up to ``max_len``.

    Written as x·C + swap(x)·S with C = [cos, cos], S = [-sin, sin] and swap(x) = [x2, x1] over the two
    halves of the head: three passes over x instead of seven, and a hand-written backward
    (:class:`_Rotate`) for a training step: bf16, q and k at 8 x 6 x 512 x 64, forward + backward
    1.8 ms a call against 2.5 for the autograd of the half-by-half form (AMD EPYC, two threads).
    """

    cos: Tensor  # buffers [max_len, dim]: [cos, cos] and [-sin, sin], registered in __init__
    sin: Tensor

    def __init__(self, dim: int, max_len: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
        self.register_buffer("cos", torch.cat([freqs.cos(), freqs.cos()], -1).float(), persistent=False)
        self.register_buffer("sin", torch.cat([-freqs.sin(), freqs.sin()], -1).float(), persistent=False)

    def forward(self, x: Tensor, offset: int) -> Tensor:
        """Rotate ``x`` of shape [..., T, D] for positions offset .. offset+T-1."""
        t = x.shape[-2]
        cos = self.cos[offset:offset + t].to(x.dtype)
        sin = self.sin[offset:offset + t].to(x.dtype)
        if torch.is_grad_enabled() and x.requires_grad:
            return _Rotate.apply(x, cos, sin)
        return _rotate(x, cos, sin)


def _swap_halves(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x2, x1), dim=-1)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None = None) -> Tensor:
    return torch.addcmul(x * cos, _swap_halves(x), sin, out=out)


class _Rotate(torch.autograd.Function):
    """x·C + swap(x)·S; its gradient g·C + swap(g·S): the transpose of swapping the halves is swapping
    them back, so "swap, then scale by S" transposes to "scale by S, then swap"."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Written into contiguous [..., T, D] memory (q and k leave the projections with their heads
        strided): the blocked attention reads each head's positions contiguously, and copies otherwise.
        Not under ``torch.compile``, which picks its own layouts (and with ``out=`` gave gradients up to
        1e-4 from eager's: test_a_compiled_model_attends_through_the_blocks_between_its_graphs)."""
        ctx.save_for_backward(cos, sin)
        if torch.compiler.is_compiling():
            return _rotate(x, cos, sin)
        return _rotate(x, cos, sin, out=torch.empty(x.shape, dtype=x.dtype, device=x.device))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return torch.addcmul(_swap_halves(grad * sin), grad, cos), None, None


# --------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------
class KVCache:
    """Preallocated keys and values per layer, filled left to right during generation.

    Under ``svformer`` only layer 1 owns a value tensor (layers >= 2 read it), so the cache
    holds L key tensors and one value tensor. The ``full`` shortcut also caches its per-depth
    key/value features; under ``last_layer`` the final layer's keys (and values) have one slot per
    selected depth and position, [B, Hkv, depths, T, hd].
    """

    def __init__(self, config: GPTConfig, batch: int, device: torch.device | str, dtype: torch.dtype,
                 max_len: int | None = None) -> None:
        self.max_len = max_len or config.block_size
        shape = (batch, config.kv_heads, self.max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        owns_values = [i == 0 or config.value_residual != "svformer" for i in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) if own else None for own in owns_values]
        if config.shortcut == "last_layer":
            deep = (batch, config.kv_heads, len(config.depths), self.max_len, config.head_dim)
            self.keys[-1] = torch.zeros(deep, device=device, dtype=dtype)
            if self.values[-1] is not None:
                self.values[-1] = torch.zeros(deep, device=device, dtype=dtype)
        self.shortcut_keys: Tensor | None = None
        self.shortcut_values: Tensor | None = None
        if config.shortcut == "full":
            sc_shape = (batch, config.sc_heads, len(config.depths), self.max_len, config.sc_dim // config.sc_heads)
            self.shortcut_keys = torch.zeros(sc_shape, device=device, dtype=dtype)
            self.shortcut_values = torch.zeros(sc_shape, device=device, dtype=dtype)
        self.length = 0
        # A compiled chunk of decoding steps (models.decoding) stages the blocks' new keys and values
        # here instead of writing them, so that its graph mutates no attention buffer (see `stage`).
        self.chunk_start: int | None = None
        self.staged: dict[int, tuple[Tensor, Tensor | None]] = {}

    def reset(self) -> None:
        self.length = 0

    def store(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Write one layer's keys and (mixed) values for the new positions, from ``length`` on, and
        return its whole key and value buffers (time is the second-to-last axis of each).

        A layer without a value buffer of its own (``svformer``, layers >= 2) attends with layer 1's
        values, which layer 1 has already written: its buffer is the one returned.
        """
        _write(self.keys[layer], keys, self.length)
        own = self.values[layer]
        if own is None:
            shared = self.values[0]
            assert shared is not None  # layer 1 always owns its values
            return self.keys[layer], shared
        return self.keys[layer], _write(own, values, self.length)

    def begin_chunk(self) -> None:
        """From here until :meth:`end_chunk`, the blocks' attention stages its new keys and values."""
        self.chunk_start, self.staged = self.length, {}

    def end_chunk(self) -> None:
        """Write what the chunk staged into the buffers, from where it began."""
        if self.chunk_start is not None:
            for layer, (keys, values) in self.staged.items():
                _write(self.keys[layer], keys, self.chunk_start)
                own = self.values[layer]
                if own is not None and values is not None:
                    _write(own, values, self.chunk_start)
        self.chunk_start, self.staged = None, {}

    def stage(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Keep one layer's new keys and values with those staged earlier in this chunk, and return
        (the buffers' keys and values before the chunk, the chunk's keys and values so far).

        Under ``torch.compile`` a write into a buffer that is then read is functionalised: the
        attention kernel gets a fresh copy of the written part every step (~4.7 MB a token at 6 x
        384 with 256 cached positions). Staged, the buffers are only read inside the graph, and the
        chunk's few positions are written once, after it (:meth:`end_chunk`).
        """
        assert self.chunk_start is not None
        start = self.chunk_start
        earlier_keys, earlier_values = self.staged.get(layer, (None, None))
        keys = keys if earlier_keys is None else torch.cat([earlier_keys, keys], dim=-2)
        own = self.values[layer]
        if own is None:  # svformer: layer 1's values, staged by layer 1 in this same step
            shared, staged_shared = self.values[0], self.staged[0][1]
            assert shared is not None and staged_shared is not None
            self.staged[layer] = (keys, None)
            return self.keys[layer][..., :start, :], shared[..., :start, :], keys, staged_shared
        values = values if earlier_values is None else torch.cat([earlier_values, values], dim=-2)
        self.staged[layer] = (keys, values)
        return self.keys[layer][..., :start, :], own[..., :start, :], keys, values

    def store_shortcut(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Write the ``full`` shortcut's per-depth key/value features for the new positions and
        return its whole buffers [B, H, depths, max_len, hd]."""
        assert self.shortcut_keys is not None and self.shortcut_values is not None  # only the full shortcut calls
        return _write(self.shortcut_keys, keys, self.length), _write(self.shortcut_values, values, self.length)

    def attention_nbytes(self) -> int:
        """Bytes of the attention keys and values (what value sharing saves)."""
        return sum(t.nbytes for t in self.keys) + sum(t.nbytes for t in self.values if t is not None)

    def nbytes(self) -> int:
        """All cached bytes, shortcut features included."""
        extra = sum(t.nbytes for t in (self.shortcut_keys, self.shortcut_values) if t is not None)
        return self.attention_nbytes() + extra


def stages(cache: KVCache | None, need_weights: bool) -> bool:
    """Whether an attention stages its new keys and values (inside a compiled chunk, ``begin_chunk``)
    rather than writing them; the eager path that returns probabilities never does."""
    return cache is not None and cache.chunk_start is not None and not need_weights


def attended_cache(keys: Tensor, values: Tensor, end: int) -> tuple[Tensor, Tensor, int]:
    """The part of a per-depth cache buffer ([..., max_len, hd]) that a query attends over, and its
    length: the whole buffer in eager mode, where it is a free view and a mask hides the positions not
    yet written; only the written positions (``:end``) under ``torch.compile``, where the cache writes
    are functionalised and the attended buffer is copied every step anyway: a copy of ``end``
    positions instead of ``max_len``. Inside compiled chunks only the ``full`` shortcut's buffers still
    take this path; the blocks' caches, ``last_layer``'s per-depth ones included, are staged."""
    if torch.compiler.is_compiling():
        return keys[..., :end, :], values[..., :end, :], end
    return keys, values, keys.shape[-2]


def _write(buffer: Tensor, new: Tensor, offset: int) -> Tensor:
    """Copy ``new`` into ``buffer`` at positions offset .. offset+T-1 of the second-to-last axis."""
    buffer[..., offset:offset + new.shape[-2], :] = new
    return buffer


def mix_values(own: Tensor | None, v1: Tensor | None, mode: str, lambdas: Tensor | None) -> Tensor:
    """The value residual: the values a layer attends with, from its own values and V_1 (layer 1's).

    ``resformer``: V_n' = 0.5·V_1 + 0.5·V_n (ResFormer Eq. 7); ``learnable``: λ_1·V_1 + λ_2·V_n;
    ``svformer``: V_1 itself (the layer has no value projection, ``own`` is None); ``none``: V_n.
    V_1 broadcasts against ``own`` (the last-layer shortcut gives it a depth axis of one).
    """
    if mode == "svformer":
        assert v1 is not None
        return v1
    if mode == "resformer":
        assert v1 is not None and own is not None
        return 0.5 * v1 + 0.5 * own
    if mode == "learnable":
        assert v1 is not None and own is not None and lambdas is not None
        return lambdas[0] * v1 + lambdas[1] * own
    assert own is not None
    return own


def attend_staged(q: Tensor, past_k: Tensor, past_v: Tensor, new_k: Tensor, new_v: Tensor) -> Tensor:
    """Attention of one new position (q [B,H,1,D]) over the cache before a chunk and the chunk's own
    keys so far (every one of them at or before it): one softmax over both score vectors, written as
    matrix products so that neither part is copied (grouped heads share their key/value head).

    Keys with a depth axis ([B,Hkv,depths,S,D], the ``last_layer`` reading's final layer) are
    attended in one softmax over every (depth, position); values then either carry the same depth
    axis or, under SVFormer, are layer 1's [B,Hkv,S,D] for every depth, and the probabilities are
    summed over depths before they weigh them (the same sum, one product instead of one per depth).
    """
    b, h, t, d = q.shape
    kv = past_k.shape[1]
    per_depth = past_k.dim() == 5
    grouped = (q * (1.0 / math.sqrt(d))).reshape(b, kv, (h // kv) * t, d)
    if per_depth:
        grouped = grouped.unsqueeze(2)  # [B,Hkv,1,G,D] against [B,Hkv,depths,S,D]
    scores = torch.cat([grouped @ past_k.transpose(-2, -1), grouped @ new_k.transpose(-2, -1)], dim=-1).float()
    if per_depth:  # one softmax over (depth, position): bring depth next to position, flatten, undo
        by_query = scores.transpose(2, 3)
        probs = by_query.flatten(-2).softmax(dim=-1).view(by_query.shape).transpose(2, 3).to(q.dtype)
    else:
        probs = scores.softmax(dim=-1).to(q.dtype)
    past = past_k.shape[-2]
    before, staged = probs[..., :past], probs[..., past:]
    if per_depth and past_v.dim() == 4:  # one value per position for every depth (SVFormer)
        before, staged = before.sum(2), staged.sum(2)
    out = before @ past_v + staged @ new_v
    if out.dim() == 5:
        out = out.sum(2)
    return out.reshape(b, h, t, d)


def _causal_mask(q_len: int, k_len: int, offset: int, device: torch.device) -> Tensor:
    """Boolean [q_len, k_len]: query t (absolute offset+t) may see key s iff s <= offset+t."""
    q_pos = torch.arange(offset, offset + q_len, device=device)[:, None]
    return torch.arange(k_len, device=device)[None, :] <= q_pos


def _attend(q: Tensor, k: Tensor, v: Tensor, offset: int, dropout: float, need_weights: bool,
            mask: Tensor | None = None, causal: bool = True) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention of q [B,H,T,D] over k, v [B,Hkv,S,D].

    Causal by absolute position (query t sits at offset+t) unless ``mask`` is given or
    ``causal`` is False (every key visible).

    The fast path is ``scaled_dot_product_attention`` (flash kernels on GPU), or on CPU, for a whole
    causal sequence, the blocked products of :mod:`~shortcutlm.models.blocked_attention` where those
    were measured faster; ``need_weights`` takes an eager path that also returns the probabilities,
    for diagnostics.
    """
    t, s = q.shape[-2], k.shape[-2]
    groups = q.shape[1] // k.shape[1]
    if need_weights:
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).float()
        allowed = mask if mask is not None else _causal_mask(t, s, offset, q.device) if causal else None
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        probs = scores.softmax(dim=-1).to(q.dtype)
        return probs @ v, probs
    if mask is None and causal:
        if s == t:
            if blocked_attention.chosen(q, k, v, dropout):
                return blocked_attention.causal_attention(q, k, v), None
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout,
                                                  enable_gqa=groups > 1), None
        if t > 1:  # a chunk after cached tokens: it sees all the past and itself causally
            mask = _causal_mask(t, s, offset, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=groups > 1), None


# --------------------------------------------------------------------------------------------
# Attention with value residual
# --------------------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal attention whose values may mix in V_1."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer  # 0-based; the papers' layer n is layer + 1
        self.n_head, self.n_kv, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.mode = config.value_residual if layer > 0 else "none"
        kv_dim = self.n_kv * self.head_dim
        self.q_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.k_proj = Linear(config.n_embd, kv_dim, bias=config.bias)
        # SVFormer: layers >= 2 have no value projection at all.
        self.v_proj = None if self.mode == "svformer" else Linear(config.n_embd, kv_dim, bias=config.bias)
        self.o_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.lambdas = _no_decay(nn.Parameter(torch.full((2,), 0.5))) if self.mode == "learnable" else None
        self.dropout = config.dropout

    def forward(self, x: Tensor, v1: Tensor | None, rotary: Rotary | None, cache: KVCache | None,
                need_weights: bool, earlier: Sequence[Tensor] = ()) -> tuple[Tensor, Tensor, Tensor | None]:
        """Return (output, the values this layer attends with for the new tokens, probabilities).

        ``x`` is the block's normalised input; ``earlier`` (what the model keeps of the selected
        depths below) is part of the call every block attention takes, and only the last-layer
        shortcut's attention reads it.
        """
        b, t, _ = x.shape
        offset = cache.length if cache is not None else 0
        q_out, k_out, v_out = project(x, self.q_proj, self.k_proj, self.v_proj)
        assert q_out is not None and k_out is not None
        q = q_out.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = k_out.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        own = None if v_out is None else v_out.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = mix_values(own, v1, self.mode, self.lambdas)
        if rotary is not None:
            q, k = rotary(q, offset), rotary(k, offset)
        k_all, v_all = k, v
        drop = self.dropout if self.training else 0.0
        if stages(cache, need_weights):
            assert cache is not None
            y, probs = attend_staged(q, *cache.stage(self.layer, k, v)), None
        else:
            if cache is not None:  # the mixed value is what enters the cache
                keys, values = cache.store(self.layer, k, v)
                k_all, v_all = keys[:, :, :offset + t], values[:, :, :offset + t]
            y, probs = _attend(q, k_all, v_all, offset, drop, need_weights)
        y = y.transpose(1, 2).reshape(b, t, -1)
        return F.dropout(self.o_proj(y), drop, self.training), v, probs
