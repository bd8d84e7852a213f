"""The shared decoder: a pre-norm GPT with value residual learning and layerwise attention shortcuts.

Reads top to bottom (rotary positions, the KV cache and attention with the value residual live in
attention.py, the ``last_layer`` reading's attention in last_layer.py, the losses in losses.py): the
MLP, a block, the shortcut over depth, and the model, built from its config in one pass. See
DESIGN.md "The decoder" for the maths; the names below follow it (V_1 is the first layer's value
states).

The model never imports a tokenizer: it knows ids, streams and shapes only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shortcutlm.models.attention import (CausalSelfAttention, KVCache, Rotary, _attend, _causal_mask, _no_decay,
                                         attended_cache)
from shortcutlm.models.config import AFTER_LAST_BLOCK, GPTConfig
from shortcutlm.models.last_layer import LastLayerAttention
from shortcutlm.models.packed import Linear


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gated = config.mlp == "swiglu"
        hidden = 4 * config.n_embd
        if self.gated:  # keep the parameter count of a 4x MLP, rounded for matmul efficiency
            hidden = 64 * math.ceil(int(8 * config.n_embd / 3) / 64)
        self.up = Linear(config.n_embd, hidden * (2 if self.gated else 1), bias=config.bias)
        self.down = Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return F.dropout(self.down(h), self.dropout, self.training)


class Block(nn.Module):
    """Pre-norm block: attention, then the MLP, each added to the residual stream."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        # The last_layer reading's final block attends over every selected depth; every other block
        # (and every block of the other readings) attends over its own input.
        reads_depths = config.shortcut == "last_layer" and layer == config.n_layer - 1
        self.attn = (LastLayerAttention if reads_depths else CausalSelfAttention)(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, v1: Tensor | None, rotary: Rotary | None, cache: KVCache | None,
                need_weights: bool, earlier: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """Return (output, values attended with, attention probabilities, the normalised input).

        ``earlier``: what the model keeps of the selected depths below this block (the last-layer
        shortcut's attention reads it; see :meth:`CausalSelfAttention.forward`)."""
        normed = self.ln_1(x)
        a, v, probs = self.attn(normed, v1, rotary, cache, need_weights, earlier)
        x = x + a
        return x + self.mlp(self.ln_2(x)), v, probs, normed


# --------------------------------------------------------------------------------------------
# Attention shortcut over depth
# --------------------------------------------------------------------------------------------
class DepthShortcut(nn.Module):
    """The final representation attends to earlier depths through learned feature maps.

    For each selected depth l, φ_l(h) = W2_l · GELU(W1_l · LN(h) + b1_l) + e_l gives that
    depth's key and value features (e_l is the learned depth embedding). LN(h_l) is the
    normalised input of block l+1, which the decoder computes anyway: reusing it spares a
    normalisation and a copy of every selected hidden state. The query comes from
    the last block's output y_t. ``depth`` attends over depths at position t only (softmax
    over depth); ``full`` attends over every position s <= t of every depth. The result joins
    y through an output projection that starts at zero, so a fresh model is the plain GPT.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.mode = config.shortcut
        self.depths = config.depths
        n_depths, d, m, ds = len(self.depths), config.n_embd, config.sc_hidden, config.sc_dim
        self.n_head, self.head_dim = config.sc_heads, ds // config.sc_heads
        self.q_norm = nn.LayerNorm(d, bias=config.bias)
        self.q_proj = Linear(d, ds, bias=False)
        # The per-depth MLPs are stacked so that all depths run as one batched matmul.
        self.w1 = nn.Parameter(torch.empty(n_depths, d, m))
        self.b1 = _no_decay(nn.Parameter(torch.zeros(n_depths, 1, m)))
        self.w2 = nn.Parameter(torch.empty(n_depths, m, 2 * ds))
        # A per-depth offset, as in the last_layer reading: zero at the start, never decayed.
        self.depth_embedding = _no_decay(nn.Parameter(torch.zeros(n_depths, 1, 2 * ds)))
        self.o_proj = Linear(ds, d, bias=False)
        self.rotary = (Rotary(self.head_dim, config.block_size, config.rope_base)
                       if self.mode == "full" and config.positions == "rope" else None)

    def reset_shortcut(self, std: float) -> None:
        """The feature maps drawn like the model's weights; the depth embeddings and biases zero and the
        output projection zero, so a fresh model is the plain GPT. The parts every reading shares (the
        first layer of φ, its bias, the depth embedding) start and are decayed as ``last_layer``'s do,
        so a comparison between readings compares the readings."""
        for p in (self.w1, self.w2):
            nn.init.normal_(p, 0.0, std)
        for p in (self.b1, self.depth_embedding):
            nn.init.zeros_(p)
        nn.init.zeros_(self.o_proj.weight)

    def keep(self, normed: Tensor, depth: int) -> Tensor:
        """What the model keeps of a selected depth for this shortcut: the first layer of its φ,
        [B,T,d] normalised -> [B*T, m] (smaller than the state itself)."""
        index = self.depths.index(depth)
        return F.gelu(torch.addmm(self.b1[index], normed.reshape(-1, normed.shape[-1]), self.w1[index]))

    def features(self, hidden: Tensor, b: int, t: int) -> tuple[Tensor, Tensor]:
        """Second layer of φ plus the depth embedding: [S, B*T, m] -> keys, values [B, H, S, T, hd]."""
        kv = torch.baddbmm(self.depth_embedding, hidden, self.w2)
        kv = kv.view(hidden.shape[0], b, t, 2, self.n_head, self.head_dim).permute(3, 1, 4, 0, 2, 5)
        return kv[0], kv[1]

    def forward(self, y: Tensor, hidden: Tensor, cache: KVCache | None,
                need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Return (y + shortcut(y), depth weights [B, H, T, S] if asked).

        ``hidden`` holds what :meth:`keep` kept of every selected depth, stacked: [S, B*T, m].
        """
        b, t, _ = y.shape
        n_depths = hidden.shape[0]
        offset = cache.length if cache is not None else 0
        q = self.q_proj(self.q_norm(y)).view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # [B,H,T,hd]
        k, v = self.features(hidden, b, t)  # [B,H,S,T,hd]
        weights = None
        if self.mode == "depth":
            # Softmax over depth only: each position is its own batch element of S keys.
            qd = q.transpose(1, 2).reshape(b * t, self.n_head, 1, self.head_dim)
            kd = k.permute(0, 3, 1, 2, 4).reshape(b * t, self.n_head, n_depths, self.head_dim)
            vd = v.permute(0, 3, 1, 2, 4).reshape(b * t, self.n_head, n_depths, self.head_dim)
            out, probs = _attend(qd, kd, vd, 0, 0.0, need_weights, causal=False)
            out = out.view(b, t, -1)
            if probs is not None:
                weights = probs.view(b, t, self.n_head, n_depths).transpose(1, 2)
        else:
            if self.rotary is not None:
                q, k = self.rotary(q, offset), self.rotary(k, offset)
            span = t
            if cache is not None:
                # Attend over the preallocated buffer (eager: all of it, a free view, the causal mask
                # hiding the positions not yet written; compiled: the written part).
                k, v, span = attended_cache(*cache.store_shortcut(k, v), offset + t)
            mask = _causal_mask(t, span, offset, y.device).repeat(1, n_depths)  # keys are depth-major
            out, probs = _attend(q, k.reshape(b, self.n_head, n_depths * span, self.head_dim),
                                 v.reshape(b, self.n_head, n_depths * span, self.head_dim),
                                 offset, 0.0, need_weights, mask=mask)
            out = out.transpose(1, 2).reshape(b, t, -1)
            if probs is not None:  # total weight each depth receives, over its positions
                weights = probs.view(b, self.n_head, t, n_depths, span).sum(-1)
        return y + self.o_proj(out), weights


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
@dataclass
class ForwardOutput:
    """Logits plus what the diagnostics read. Lists run over layers (index 0 = layer 1)."""

    logits: Tensor
    hidden_states: list[Tensor] = field(default_factory=list)  # embedding output, then each block's output
    values: list[Tensor] = field(default_factory=list)  # the values each layer attends with [B,Hkv,T,hd]
    attention: list[Tensor] = field(default_factory=list)  # probabilities [B,H,T,S] per layer
    shortcut_weights: Tensor | None = None  # [B,H,T,depths]


def weight_decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups by the one rule (nanoGPT's): decay matrices and embeddings (``dim >= 2``),
    never norms' gains, biases, the learnable λ pairs, or anything marked ``_no_weight_decay``
    (the λ carry that mark, so they stay exempt whatever their shape)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in module.parameters():
        (no_decay if getattr(p, "_no_weight_decay", False) or p.dim() < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class GPT(nn.Module):
    """Decoder over ``n_streams`` parallel token streams (1 for text, MIDI and flattened audio)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.n_embd
        self.embeddings = nn.ModuleList(nn.Embedding(config.vocab_size, d) for _ in range(config.n_streams))
        self.position_embedding = nn.Embedding(config.block_size, d) if config.positions == "learned" else None
        self.rotary = Rotary(config.head_dim, config.block_size, config.rope_base) \
            if config.positions == "rope" else None
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.shortcut = DepthShortcut(config) if config.shortcut in AFTER_LAST_BLOCK else None
        self.ln_f = nn.LayerNorm(d, bias=config.bias)
        self.heads = nn.ModuleList(Linear(d, config.vocab_size, bias=False) for _ in range(config.n_streams))
        self.reset_parameters()
        if config.tie_embeddings:
            for head, emb in zip(self.heads, self.embeddings):
                head.weight = emb.weight
        for name, p in self.named_parameters():
            if name.endswith("bias") or ".ln_" in name or "norm" in name or name.startswith("ln_f"):
                _no_decay(p)

    def reset_parameters(self) -> None:
        """GPT-2 initialisation; residual projections scaled by 1/sqrt(2L); shortcut output zero."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    nn.init.zeros_(bias)
        for block in cast("Iterable[Block]", self.blocks):
            for proj in (block.attn.o_proj, block.mlp.down):
                nn.init.normal_(proj.weight, 0.0, std / math.sqrt(2 * self.config.n_layer))
        if self.depth_reader is not None:
            self.depth_reader.reset_shortcut(std)

    @property
    def depth_reader(self) -> DepthShortcut | LastLayerAttention | None:
        """The module that reads the selected depths: the shortcut after the last block, or the last
        block's own attention (``last_layer``); the forward pass keeps what it asks of each depth."""
        if self.shortcut is not None:
            return self.shortcut
        if self.config.shortcut != "last_layer":
            return None
        return cast(LastLayerAttention, cast(Block, self.blocks[-1]).attn)

    # ----------------------------------------------------------------------------------------
    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= sum(e.weight.numel() for e in cast("Iterable[nn.Embedding]", self.embeddings))
            if self.position_embedding is not None:
                n -= self.position_embedding.weight.numel()
        return n

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups by :func:`weight_decay_groups`."""
        return weight_decay_groups(self, weight_decay)

    def new_cache(self, batch: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        ref = self.ln_f.weight
        return KVCache(self.config, batch, device or ref.device, dtype or ref.dtype)

    def _embed(self, idx: Tensor, offset: int) -> Tensor:
        cfg = self.config
        if cfg.n_streams == 1:
            if idx.dim() != 2:
                raise ValueError(f"expected token ids [batch, time], got shape {tuple(idx.shape)}")
            x = self.embeddings[0](idx)
        else:
            if idx.dim() != 3 or idx.shape[1] != cfg.n_streams:
                raise ValueError(f"expected token ids [batch, {cfg.n_streams} streams, time], got {tuple(idx.shape)}")
            x = sum(emb(idx[:, k]) for k, emb in enumerate(self.embeddings))
        t = x.shape[1]
        if offset + t > cfg.block_size:
            raise ValueError(f"sequence of {offset + t} positions exceeds block_size {cfg.block_size}")
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(offset, offset + t, device=idx.device))
        return F.dropout(x, cfg.dropout, self.training)

    def forward(self, idx: Tensor, cache: KVCache | None = None, last_only: bool = False,
                return_internals: bool = False) -> Tensor | ForwardOutput:
        """Logits [B,T,V] (one stream) or [B,K,T,V] (K streams).

        With ``cache`` the ids are the next tokens after ``cache.length`` cached ones.
        ``last_only`` runs the heads on the final position only (sampling).
        ``return_internals`` takes the eager attention path and returns a ForwardOutput.
        """
        offset = cache.length if cache is not None else 0
        x = self._embed(idx, offset)
        want = return_internals
        out = ForwardOutput(logits=x, hidden_states=[x] if want else [])
        reader = self.depth_reader
        kept: list[Tensor] = []  # what the reader keeps of each selected depth so far, shallowest first
        v1 = None
        # Depth i (0 = embeddings) is the input of block i+1; the readers take its normalised form.
        for i, block in enumerate(self.blocks):
            x, v, probs, normed = block(x, v1, self.rotary, cache, want, kept)
            if i == 0:
                v1 = v
            if block.attn is reader and probs is not None:  # [B,H,T,depths,S]: per-depth weights, per-key map
                out.shortcut_weights, probs = probs.sum(-1), probs.sum(-2)
            if reader is not None and i in reader.depths:
                kept.append(reader.keep(normed, i))
            if want:
                out.hidden_states.append(x)
                out.values.append(v)
                out.attention.append(probs)
        if self.shortcut is not None:
            x, out.shortcut_weights = self.shortcut(x, torch.stack(kept), cache, want)
        if cache is not None:
            cache.length += idx.shape[-1]
        if last_only:
            x = x[:, -1:]
        x = self.ln_f(x)
        logits = torch.stack([head(x) for head in self.heads], dim=1) if self.config.n_streams > 1 else self.heads[0](x)
        if not want:
            return logits
        out.logits = logits
        return out


def flops_per_token(config: GPTConfig, n_params: int) -> float:
    """Training FLOPs per token (forward + backward): nanoGPT's 6N + 12·L·d·T, plus the shortcut's
    attention: 12·S·d_s for ``depth`` (S keys per query) and 12·S·d_s·T for ``full``; for
    ``last_layer`` the final layer's attention over S·T keys instead of T (12·(S−1)·d·T more) and
    its key/value projections applied to S depths instead of one (6·(S−1)·their parameters)."""
    flops = 6 * n_params + 12 * config.n_layer * config.n_embd * config.block_size
    if config.shortcut == "depth":
        flops += 12 * len(config.depths) * config.sc_dim
    elif config.shortcut == "full":
        flops += 12 * len(config.depths) * config.sc_dim * config.block_size
    elif config.shortcut == "last_layer":
        extra = len(config.depths) - 1
        kv_width = config.kv_heads * config.head_dim * (1 if config.value_residual == "svformer" else 2)
        flops += 12 * extra * config.n_embd * config.block_size + 6 * extra * config.n_embd * kv_width
    return float(flops)
