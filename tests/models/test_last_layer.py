"""The ``last_layer`` shortcut reading against a hand-written reference, and what a fresh model equals.

Cached decoding, causality and sampling for every value-residual mode run in ``test_gpt.py``
(``SHORTCUTS`` there includes ``last_layer``).
"""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from shortcutlm.models import GPT, GPTConfig, flops_per_token, stream_losses
from tests.models.test_gpt import make, naive_rope, tiny, tokens

VALUE_RESIDUALS = ["none", "resformer", "learnable", "svformer"]


def wake(model: GPT, seed: int = 3) -> GPT:
    """Fill every zero-initialised part of φ (and the λ pairs) so the reference checks all of them."""
    g = torch.Generator().manual_seed(seed)
    phi = model.blocks[-1].attn.phi
    with torch.no_grad():
        for p in (phi.w2, phi.depth_embedding, phi.b1):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for block in model.blocks:
            if block.attn.lambdas is not None:
                block.attn.lambdas.copy_(torch.rand(2, generator=g) + 0.25)
    return model


def naive_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The model written from its weights, one sequence and one head at a time (multi-head, RoPE).

    Layers below the last: plain attention with the value residual formula. The last layer: keys
    and values from φ_l of each selected depth at every position, the causal mask over positions.
    """
    cfg = model.config
    ln = lambda x, norm: F.layer_norm(x, (cfg.n_embd,), norm.weight, norm.bias)  # noqa: E731
    hd, last = cfg.head_dim, cfg.n_layer - 1
    out = []
    for row in idx:
        t = len(row)
        x = model.embeddings[0].weight[row]
        normed, v1 = {}, None
        for i, block in enumerate(model.blocks):
            a = block.attn
            h = ln(x, block.ln_1)
            normed[i] = h

            def value(features: torch.Tensor) -> torch.Tensor:
                if i == 0 or cfg.value_residual == "none":
                    return features @ a.v_proj.weight.T
                if cfg.value_residual == "svformer":
                    return v1
                mine = features @ a.v_proj.weight.T
                lam = (0.5, 0.5) if cfg.value_residual == "resformer" else (a.lambdas[0], a.lambdas[1])
                return lam[0] * v1 + lam[1] * mine

            if i < last:
                sources = [h]
            else:
                phi = a.phi
                sources = [normed[d] + phi.depth_embedding[j, 0]
                           + F.gelu(normed[d] @ phi.w1[j] + phi.b1[j, 0]) @ phi.w2[j]
                           for j, d in enumerate(cfg.depths)]
            keys = [f @ a.k_proj.weight.T for f in sources]
            values = [value(f) for f in sources]
            if i == 0:
                v1 = values[0]
            q = h @ a.q_proj.weight.T
            heads = []
            for head in range(cfg.n_head):
                sl = slice(head * hd, (head + 1) * hd)
                qh = naive_rope(q[:, sl], cfg.rope_base)
                kh = torch.cat([naive_rope(k[:, sl], cfg.rope_base) for k in keys])  # depth-major
                vh = torch.cat([v[:, sl] for v in values])
                scores = qh @ kh.T / math.sqrt(hd)
                future = torch.triu(torch.ones(t, t, dtype=torch.bool), 1).repeat(1, len(keys))
                heads.append(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ vh)
            x = x + torch.cat(heads, dim=1) @ a.o_proj.weight.T
            x = x + F.gelu(ln(x, block.ln_2) @ block.mlp.up.weight.T) @ block.mlp.down.weight.T
        out.append(ln(x, model.ln_f) @ model.heads[0].weight.T)
    return torch.stack(out)


@pytest.mark.parametrize("value_residual", VALUE_RESIDUALS)
@pytest.mark.parametrize("layers", [None, [0, 2]], ids=["every-depth", "not-its-own-input"])
def test_last_layer_reading_equals_the_reference(value_residual, layers):
    model = wake(make(tiny(n_layer=4, shortcut="last_layer", value_residual=value_residual, shortcut_layers=layers)))
    idx = tokens(model.config, 2, 14)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), naive_logits(model, idx), atol=2e-5, rtol=0)


def test_fresh_model_reading_its_own_depth_alone_is_the_plain_gpt():
    plain = make(tiny())
    own = GPT(tiny(shortcut="last_layer", shortcut_layers=[2])).eval()
    missing, unexpected = own.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".attn.phi." in name for name in missing)
    idx = tokens(plain.config, 2, 20)
    with torch.no_grad():
        torch.testing.assert_close(own(idx), plain(idx), atol=1e-6, rtol=0)


def test_fresh_model_reads_every_depth_through_its_own_projections():
    """Fresh φ_l is the identity: the last attention sees LN(h_l) of each depth with its own W_K, W_V —
    not the plain GPT, but the reference with those weights."""
    plain = make(tiny())
    fresh = GPT(tiny(shortcut="last_layer")).eval()
    fresh.load_state_dict(plain.state_dict(), strict=False)
    phi = fresh.blocks[-1].attn.phi
    assert not phi.w2.any() and not phi.depth_embedding.any() and not phi.b1.any()
    idx = tokens(plain.config, 2, 16)
    with torch.no_grad():
        got = fresh(idx)
        torch.testing.assert_close(got, naive_logits(fresh, idx), atol=2e-5, rtol=0)
        assert (got - plain(idx)).abs().max() > 1e-3


def test_per_depth_maps_and_the_final_layer_map():
    model = wake(make(tiny(n_layer=4, shortcut="last_layer", shortcut_layers=[0, 1, 3])))
    with torch.no_grad():
        out = model(tokens(model.config, 2, 12), return_internals=True)
    w = out.shortcut_weights
    assert w.shape == (2, model.config.n_head, 12, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5, rtol=0)
    last = out.attention[-1]  # summed over depths: the attention each position receives
    assert last.shape == (2, model.config.n_head, 12, 12)
    torch.testing.assert_close(last.sum(-1), torch.ones(last.shape[:-1]), atol=1e-5, rtol=0)
    assert torch.equal(torch.triu(last, 1), torch.zeros_like(last))
    assert len(out.values) == 4 and out.values[-1].shape == out.values[0].shape


def test_feature_maps_learn_and_their_biases_are_not_decayed():
    torch.manual_seed(0)
    model = GPT(tiny(shortcut="last_layer"))
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-2)
    idx = tokens(model.config, 4, 20)
    for _ in range(2):  # W2 starts at zero, so W1 has a gradient from the second step on
        opt.zero_grad()
        stream_losses(model(idx[:, :-1]), idx[:, 1:]).mean().backward()
        opt.step()
    phi = model.blocks[-1].attn.phi
    for name, p in phi.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    decayed = {id(p) for p in model.param_groups(0.1)[0]["params"]}
    assert id(phi.w1) in decayed and id(phi.w2) in decayed
    assert id(phi.b1) not in decayed and id(phi.depth_embedding) not in decayed


@pytest.mark.parametrize("value_residual", ["none", "svformer"])
def test_kv_cache_is_measured_with_one_slot_per_depth(value_residual):
    """Every depth is a key (and value) of the final layer: L - 1 + D key layers, measured."""
    n_layer, depths = 4, [0, 2, 3]
    base = make(tiny(n_layer=n_layer)).new_cache(2).attention_nbytes()
    cache = make(tiny(n_layer=n_layer, shortcut="last_layer", shortcut_layers=depths,
                      value_residual=value_residual)).new_cache(2)
    key_layers = n_layer - 1 + len(depths)
    value_layers = 1 if value_residual == "svformer" else key_layers
    assert Fraction(cache.attention_nbytes(), base) == Fraction(key_layers + value_layers, 2 * n_layer)
    assert cache.nbytes() == cache.attention_nbytes()  # nothing cached beside the attention's keys and values


def test_config_records_its_sizes_and_refuses_foreign_ones():
    cfg = tiny(shortcut="last_layer")
    assert cfg.shortcut_hidden == cfg.n_embd // 8 and cfg.shortcut_heads is None and cfg.shortcut_dim is None
    again = GPTConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert GPT(again).state_dict().keys() == GPT(cfg).state_dict().keys()
    with pytest.raises(ValueError, match="final block's own heads"):
        tiny(shortcut="last_layer", shortcut_heads=2)
    with pytest.raises(ValueError, match="shortcut_layers"):
        tiny(shortcut="last_layer", shortcut_layers=[3])


def test_flops_count_the_extra_depths():
    own = tiny(shortcut="last_layer", shortcut_layers=[2])
    every = tiny(shortcut="last_layer")
    n = GPT(own).num_params()
    assert flops_per_token(own, n) == flops_per_token(tiny(), n)
    extra = 2 * (12 * every.n_embd * every.block_size + 6 * every.n_embd * 2 * every.n_embd)
    assert flops_per_token(every, n) == flops_per_token(tiny(), n) + extra
