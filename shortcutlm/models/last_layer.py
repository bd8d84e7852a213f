"""The ``last_layer`` shortcut reading: the final block's own attention reads every selected depth.

The shortcut paper's summary places "a cross-attention mechanism in the last layer over
concatenated intermediate features under a causal mask". Here the final block keeps its query
(its normalised input, projected by its own W_Q), but its keys and values come from the feature
maps φ_l of every selected depth l at every position s <= t, concatenated depth-major:

    φ_l(h) = h + e_l + W2_l · GELU(W1_l · h + b1_l)        h = LN(h_l), the input norm of block l+1
    K[l, s] = RoPE_s(W_K φ_l(h_l,s))      V[l, s] = W_V φ_l(h_l,s), mixed with V_1[s] (below)
    out_t = W_O · softmax_{(l, s): s <= t}(q_t · K[l, s] / sqrt(d_h)) · V[l, s]

The key of depth l at position s is rotated for position s, so the query-key angle depends on
t - s only, as in every other layer. W2_l and e_l start at zero, so a fresh φ_l is the identity on
the normalised state: a fresh model is a plain GPT whose last attention also sees the earlier
depths' normalised states through its own projections. With the final depth alone selected
(``shortcut_layers: [n_layer - 1]``) it *is* the plain GPT.

Value residual: V_1 is a value per token, so it joins every depth's value at the same token,
V'[l, s] = 0.5·V_1[s] + 0.5·V[l, s] (``resformer``; λ pair for ``learnable``), keeping ResFormer's
A_n(V_n + V_1)/2 with this layer's attention. Under ``svformer`` the final layer has no value
projection, so V[l, s] = V_1[s] for every depth: depth then reaches the attention through the keys
only, and the cache still holds one value tensor (and per-depth keys for the final layer).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shortcutlm.models.config import GPTConfig
from shortcutlm.models.packed import project
from shortcutlm.models.attention import (CausalSelfAttention, KVCache, Rotary, _attend, _causal_mask, _no_decay,
                                         attend_staged, attended_cache, mix_values, stages)


class DepthFeatureMaps(nn.Module):
    """φ_l for each selected depth, stacked so that all depths run as one batched matmul.

    A residual MLP at the model's width (rather than a separate key/value width) so the final
    block's own W_K and W_V apply to every depth, and a zero W2 and depth embedding make a fresh
    φ_l the identity.
    """

    def __init__(self, n_depths: int, width: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_depths, width, hidden))
        self.b1 = _no_decay(nn.Parameter(torch.zeros(n_depths, 1, hidden)))
        self.w2 = nn.Parameter(torch.zeros(n_depths, hidden, width))
        self.depth_embedding = _no_decay(nn.Parameter(torch.zeros(n_depths, 1, width)))

    def reset_parameters(self, std: float) -> None:
        nn.init.normal_(self.w1, 0.0, std)
        for p in (self.b1, self.w2, self.depth_embedding):
            nn.init.zeros_(p)

    def forward(self, normed: Tensor) -> Tensor:
        """[D, N, d] normalised states of the D selected depths -> their features [D, N, d]."""
        hidden = F.gelu(torch.baddbmm(self.b1, normed, self.w1))
        return torch.baddbmm(normed + self.depth_embedding, hidden, self.w2)


class LastLayerAttention(CausalSelfAttention):
    """The final block's attention over (selected depth, position s <= t) pairs; see the module docstring.

    Returns probabilities shaped [B, H, T, D, S] (depth-major keys unfolded), which the model
    folds into the per-layer map (summed over depths) and the per-depth weights (summed over positions).
    """

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__(config, layer)
        # Draw the projections' default initialisation a second time: the final block used to build a
        # plain attention before this one replaced it, and every seed keeps the initial weights it gave
        # then (GPT.reset_parameters overwrites both draws; only the generator's position remains).
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            if proj is not None:
                proj.reset_parameters()
        self.depths = config.depths
        self.reads_own_input = layer in self.depths  # depth `layer` is this block's own input
        self.phi = DepthFeatureMaps(len(self.depths), config.n_embd, config.sc_hidden)

    def reset_shortcut(self, std: float) -> None:
        """The feature maps start as the identity (see :meth:`DepthFeatureMaps.reset_parameters`)."""
        self.phi.reset_parameters(std)

    def keep(self, normed: Tensor, depth: int) -> Tensor:
        """What the model keeps of a selected depth for this attention: its normalised state."""
        return normed

    def forward(self, x: Tensor, v1: Tensor | None, rotary: Rotary | None, cache: KVCache | None,
                need_weights: bool, earlier: Sequence[Tensor] = ()) -> tuple[Tensor, Tensor, Tensor | None]:
        """``x``: this block's normalised input [B,T,d]; ``earlier``: the normalised inputs of the
        selected depths below it, shallowest first. Returns (output, the deepest selected depth's
        values [B,Hkv,T,hd], probabilities [B,H,T,D,S] if asked)."""
        b, t, d = x.shape
        states = list(earlier) + ([x] if self.reads_own_input else [])
        n_depths = len(states)
        if n_depths != len(self.depths):
            raise ValueError(f"the last-layer shortcut reads {len(self.depths)} depths, got {n_depths}")
        offset = cache.length if cache is not None else 0
        feats = self.phi(torch.stack(states).view(n_depths, b * t, d)).view(n_depths, b, t, d)
        q = self.q_proj(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # [B,H,T,hd]
        k_out, v_out = project(feats, self.k_proj, self.v_proj)
        assert k_out is not None
        k = self._per_depth(k_out)  # [B,Hkv,D,T,hd]
        own = None if v_out is None else self._per_depth(v_out)
        first = None if v1 is None else v1.unsqueeze(2)  # V_1 per token joins every depth's value there
        v = mix_values(own, first, self.mode, self.lambdas).expand(-1, -1, n_depths, -1, -1)
        if rotary is not None:  # a key's position is its token's, whatever its depth
            q, k = rotary(q, offset), rotary(k, offset)
        own_values = v[:, :, -1]
        if stages(cache, need_weights):
            assert cache is not None
            past_k, past_v, new_k, new_v = cache.stage(self.layer, k, v)
            y = attend_staged(q, past_k, past_v, new_k, new_v).transpose(1, 2).reshape(b, t, -1)
            return self.o_proj(y), own_values, None
        k_all, v_all, span = k, v, t
        if cache is not None:
            # Attend over the whole preallocated buffer (a free view); the mask hides unwritten positions.
            k_all, v_all = cache.store(self.layer, k, v)
            if v_all.dim() == 4:  # SVFormer: layer 1's cached values stand for every depth
                v_all = v_all.unsqueeze(2).expand(-1, -1, n_depths, -1, -1)
            k_all, v_all, span = attended_cache(k_all, v_all, offset + t)
        mask = _causal_mask(t, span, offset, x.device).repeat(1, n_depths)  # keys are depth-major
        flat = (b, self.n_kv, n_depths * span, self.head_dim)
        drop = self.dropout if self.training else 0.0
        y, probs = _attend(q, k_all.reshape(flat), v_all.reshape(flat), offset, drop, need_weights, mask=mask)
        y = y.transpose(1, 2).reshape(b, t, -1)
        if probs is not None:
            probs = probs.view(b, self.n_head, t, n_depths, span)
        return F.dropout(self.o_proj(y), drop, self.training), own_values, probs

    def _per_depth(self, projected: Tensor) -> Tensor:
        """[D, B, T, Hkv*hd] -> [B, Hkv, D, T, hd]."""
        n_depths, b, t, _ = projected.shape
        return projected.view(n_depths, b, t, self.n_kv, self.head_dim).permute(1, 3, 0, 2, 4)

