"""The ``depth`` and ``full`` shortcut readings against a hand-written reference.

The reference is written from DESIGN.md ("Attention shortcuts") and ``DepthShortcut``'s docstring,
one sequence, one head, one depth and one position at a time, in float64:

    φ_l(h) = W2_l · GELU(W1_l · LN(h_l) + b1_l) + e_l     LN(h_l): block l+1's input norm of depth l
    [k_l | v_l] = φ_l(h_l)   (first half keys, second half values; heads split each half in order)
    q_t = W_Q · LN_q(y_t)                                   y_t: the last block's output
    depth: out_t = Σ_l softmax_l(q_t · k_l(t) / sqrt(d_h)) v_l(t)
    full:  out_t = Σ_{l, s <= t} softmax_{l,s}(q_t · k_l(s) / sqrt(d_h)) v_l(s)  (RoPE on q and k under rope)
    logits_t = head(LN_f(y_t + W_O · out_t))

Every part the model initialises to zero or to a constant (the output projection, b1, the λ pairs)
is set to random values, so a reading that mixes up depths, heads or positions changes the logits.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from shortcutlm.models import GPT
from tests.models.test_gpt import tiny, tokens

VALUE_RESIDUALS = ["none", "resformer", "learnable", "svformer"]
LAYER_SELECTIONS = pytest.mark.parametrize("layers", [None, [0, 2], [1, 3], [3]],
                                           ids=["every-depth", "0-2", "1-3", "last-alone"])


def awake(config, seed: int = 0) -> GPT:
    """A float64 model whose shortcut parameters are all random and large enough to matter."""
    torch.manual_seed(seed)
    model = GPT(config).double().eval()
    g = torch.Generator().manual_seed(seed + 100)
    sc = model.shortcut
    with torch.no_grad():
        for p, scale in ((sc.w1, 0.5), (sc.b1, 0.5), (sc.w2, 0.5), (sc.depth_embedding, 0.5),
                         (sc.q_proj.weight, 0.5), (sc.o_proj.weight, 0.3)):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale)
        for block in model.blocks:
            if block.attn.lambdas is not None:  # away from the initial (0.5, 0.5), different per layer
                block.attn.lambdas.copy_(torch.rand(2, generator=g, dtype=torch.float64) + 0.25)
    assert sc.o_proj.weight.abs().min() > 0
    return model


def rope_at(x: torch.Tensor, position: int, base: float) -> torch.Tensor:
    """One head vector rotated for one position: pair (i, i + D/2) is a complex number."""
    half = x.shape[0] // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[0])
    z = torch.complex(x[:half], x[half:]) * torch.polar(torch.ones(half, dtype=torch.float64), position * theta)
    return torch.cat([z.real, z.imag])


def ln(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias)


def trunk(model: GPT, row: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(normalised input of every block [T, d], the last block's output [T, d]) for one sequence,
    head by head with the value residual formulas (RoPE or learned positions, grouped KV heads)."""
    cfg = model.config
    t, hd = len(row), cfg.head_dim
    x = model.embeddings[0].weight[row]
    if model.position_embedding is not None:
        x = x + model.position_embedding.weight[:t]
    normed, v1 = [], None
    for i, block in enumerate(model.blocks):
        a = block.attn
        h = ln(x, block.ln_1)
        normed.append(h)
        q, k = h @ a.q_proj.weight.T, h @ a.k_proj.weight.T
        if i == 0 or cfg.value_residual == "none":
            v = h @ a.v_proj.weight.T
        elif cfg.value_residual == "svformer":
            v = v1
        elif cfg.value_residual == "resformer":
            v = 0.5 * v1 + 0.5 * (h @ a.v_proj.weight.T)
        else:
            v = a.lambdas[0] * v1 + a.lambdas[1] * (h @ a.v_proj.weight.T)
        if i == 0:
            v1 = v
        heads = []
        for head in range(cfg.n_head):
            kv_head = head // (cfg.n_head // cfg.kv_heads)
            sl, kvs = slice(head * hd, (head + 1) * hd), slice(kv_head * hd, (kv_head + 1) * hd)
            rows = []
            for pos in range(t):
                qh = q[pos, sl]
                keys = [k[s, kvs] for s in range(pos + 1)]
                if cfg.positions == "rope":
                    qh = rope_at(qh, pos, cfg.rope_base)
                    keys = [rope_at(key, s, cfg.rope_base) for s, key in enumerate(keys)]
                scores = torch.stack([qh @ key for key in keys]) / math.sqrt(hd)
                p = torch.softmax(scores, dim=0)
                rows.append(sum(p[s] * v[s, kvs] for s in range(pos + 1)))
            heads.append(torch.stack(rows))
        x = x + torch.cat(heads, dim=1) @ a.o_proj.weight.T
        x = x + F.gelu(ln(x, block.ln_2) @ block.mlp.up.weight.T) @ block.mlp.down.weight.T
    return normed, x


def reference(model: GPT) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Logits [B, T, V] and depth weights [B, H, T, depths] of the shortcut reading, written plainly."""
    cfg, sc = model.config, model.shortcut
    heads, ds = cfg.sc_heads, cfg.sc_dim
    hd = ds // heads
    rope = cfg.shortcut == "full" and cfg.positions == "rope"

    def run(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        all_logits, all_weights = [], []
        for row in idx:
            t = len(row)
            normed, y = trunk(model, row)
            # φ_l of every selected depth l at every position: keys and values [T, ds] each.
            keys, values = [], []
            for j, depth in enumerate(cfg.depths):
                phi = F.gelu(normed[depth] @ sc.w1[j] + sc.b1[j, 0]) @ sc.w2[j] + sc.depth_embedding[j, 0]
                keys.append(phi[:, :ds])
                values.append(phi[:, ds:])
            q = ln(y, sc.q_norm) @ sc.q_proj.weight.T
            out = torch.zeros(t, ds, dtype=y.dtype)
            weights = torch.zeros(heads, t, len(cfg.depths), dtype=y.dtype)
            for head in range(heads):
                sl = slice(head * hd, (head + 1) * hd)
                for pos in range(t):
                    qh = rope_at(q[pos, sl], pos, cfg.rope_base) if rope else q[pos, sl]
                    # (depth index, position) pairs this query sees
                    seen = ([(j, pos) for j in range(len(cfg.depths))] if cfg.shortcut == "depth"
                            else [(j, s) for j in range(len(cfg.depths)) for s in range(pos + 1)])
                    scores = []
                    for j, s in seen:
                        kh = rope_at(keys[j][s, sl], s, cfg.rope_base) if rope else keys[j][s, sl]
                        scores.append(qh @ kh / math.sqrt(hd))
                    p = torch.softmax(torch.stack(scores), dim=0)
                    for (j, s), w in zip(seen, p, strict=True):
                        out[pos, sl] += w * values[j][s, sl]
                        weights[head, pos, j] += w
            final = y + out @ sc.o_proj.weight.T
            all_logits.append(ln(final, model.ln_f) @ model.heads[0].weight.T)
            all_weights.append(weights)
        return torch.stack(all_logits), torch.stack(all_weights)

    return run


def check(config, length: int = 9) -> None:
    model = awake(config)
    idx = tokens(config, 2, length)
    with torch.no_grad():
        want_logits, want_weights = reference(model)(idx)
        torch.testing.assert_close(model(idx), want_logits, atol=1e-5, rtol=0)  # the fast path
        out = model(idx, return_internals=True)  # the eager path, which returns the maps
    torch.testing.assert_close(out.logits, want_logits, atol=1e-5, rtol=0)
    assert out.shortcut_weights.shape == want_weights.shape
    torch.testing.assert_close(out.shortcut_weights.double(), want_weights, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shortcut", ["depth", "full"])
@pytest.mark.parametrize("value_residual", VALUE_RESIDUALS)
@LAYER_SELECTIONS
def test_shortcut_reading_equals_the_reference(shortcut, value_residual, layers):
    check(tiny(n_layer=4, shortcut=shortcut, value_residual=value_residual, shortcut_layers=layers))


@pytest.mark.parametrize("shortcut", ["depth", "full"])
@pytest.mark.parametrize("overrides", [
    {"positions": "learned"}, {"n_kv_head": 2}, {"shortcut_heads": 2, "shortcut_dim": 12, "shortcut_hidden": 5}],
    ids=["learned-positions", "grouped-kv", "own-heads-and-widths"])
def test_shortcut_reading_equals_the_reference_in_other_shapes(shortcut, overrides):
    check(tiny(n_layer=3, shortcut=shortcut, value_residual="learnable", **overrides))


@pytest.mark.parametrize("shortcut", ["depth", "full"])
def test_the_shortcut_changes_the_logits(shortcut):
    """The comparisons above see the shortcut: without it the logits move by far more than their tolerance."""
    model = awake(tiny(n_layer=4, shortcut=shortcut, value_residual="resformer"))
    idx = tokens(model.config, 2, 9)
    with torch.no_grad():
        with_it = model(idx)
        model.shortcut.o_proj.weight.zero_()
        assert (with_it - model(idx)).abs().max() > 1e-2
