"""The decoder against hand-written references: plain GPT, value residual formulas, shortcuts, cache.

The shortcut readings' own references: ``test_shortcut_reference.py`` (``depth``, ``full``) and
``test_last_layer.py`` (``last_layer``).
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from shortcutlm.models import GPT, GPTConfig, SamplingSettings, generate, stream_losses
from shortcutlm.models.sampling import filter_logits, sample_next

VALUE_RESIDUALS = ["none", "resformer", "learnable", "svformer"]
SHORTCUTS = ["none", "depth", "full", "last_layer"]


def tiny(**overrides) -> GPTConfig:
    base = dict(vocab_size=37, n_layer=3, n_head=4, n_embd=32, block_size=24)
    base.update(overrides)
    return GPTConfig(**base)


def make(config: GPTConfig, seed: int = 0, wake_shortcut: bool = True) -> GPT:
    """A model in eval mode; the shortcut's zero-initialised parts (output projection, or the last-layer
    reading's φ second layer and depth embedding) are filled so it does something."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    if wake_shortcut and model.shortcut is not None:
        torch.nn.init.normal_(model.shortcut.o_proj.weight, 0.0, 0.2)
    if wake_shortcut and config.shortcut == "last_layer":
        phi = model.blocks[-1].attn.phi
        torch.nn.init.normal_(phi.w2, 0.0, 0.2)
        torch.nn.init.normal_(phi.depth_embedding, 0.0, 0.2)
    return model


def tokens(config: GPTConfig, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, length) if config.n_streams == 1 else (batch, config.n_streams, length)
    return torch.randint(0, config.vocab_size, shape, generator=g)


# ------------------------------------------------------------------------------------------
# A naive reference GPT written from the weights, one head at a time.
# ------------------------------------------------------------------------------------------
def naive_rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary embedding in complex form: pair (i, i + D/2) is one complex number."""
    t, d = x.shape
    half = d // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64) * 2 / d)
    angles = torch.arange(t, dtype=torch.float64)[:, None] * theta[None, :]
    z = torch.complex(x[:, :half].double(), x[:, half:].double()) * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag], dim=1).float()


def naive_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    cfg = model.config
    out = []
    for row in idx:
        x = model.embeddings[0].weight[row]
        if model.position_embedding is not None:
            x = x + model.position_embedding.weight[: len(row)]
        t = len(row)
        for block in model.blocks:
            a = block.attn
            h = F.layer_norm(x, (cfg.n_embd,), block.ln_1.weight, block.ln_1.bias)
            q, k, v = h @ a.q_proj.weight.T, h @ a.k_proj.weight.T, h @ a.v_proj.weight.T
            heads = []
            for head in range(cfg.n_head):
                kv_head = head // (cfg.n_head // cfg.kv_heads)
                sl = slice(head * cfg.head_dim, (head + 1) * cfg.head_dim)
                kvs = slice(kv_head * cfg.head_dim, (kv_head + 1) * cfg.head_dim)
                qh, kh, vh = q[:, sl], k[:, kvs], v[:, kvs]
                if cfg.positions == "rope":
                    qh, kh = naive_rope(qh, cfg.rope_base), naive_rope(kh, cfg.rope_base)
                scores = qh @ kh.T / math.sqrt(cfg.head_dim)
                scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
                heads.append(torch.softmax(scores, dim=-1) @ vh)
            x = x + torch.cat(heads, dim=1) @ a.o_proj.weight.T
            h = F.layer_norm(x, (cfg.n_embd,), block.ln_2.weight, block.ln_2.bias)
            x = x + F.gelu(h @ block.mlp.up.weight.T) @ block.mlp.down.weight.T
        x = F.layer_norm(x, (cfg.n_embd,), model.ln_f.weight, model.ln_f.bias)
        out.append(x @ model.heads[0].weight.T)
    return torch.stack(out)


@pytest.mark.parametrize("overrides", [{}, {"n_kv_head": 2}, {"positions": "learned"}, {"tie_embeddings": False}])
def test_plain_model_matches_naive_reference(overrides):
    model = make(tiny(**overrides))
    idx = tokens(model.config, 2, 20)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), naive_logits(model, idx), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------
# Value residual
# ------------------------------------------------------------------------------------------
def capture_raw_values(model: GPT) -> list:
    raw: list = []
    for block in model.blocks:
        if block.attn.v_proj is not None:
            block.attn.v_proj.register_forward_hook(lambda m, i, o: raw.append(o))
    return raw


@pytest.mark.parametrize("mode", ["resformer", "learnable"])
def test_value_residual_equals_formula(mode):
    cfg = tiny(value_residual=mode, n_kv_head=2)
    model = make(cfg)
    if mode == "learnable":  # move λ off its initial 0.5/0.5 so the test sees them used
        for n, block in enumerate(model.blocks[1:], start=1):
            block.attn.lambdas.data = torch.tensor([0.3 * n, 1.7 - 0.2 * n])
    raw = capture_raw_values(model)
    attended: list = []
    for block in model.blocks:
        block.attn.o_proj.register_forward_hook(lambda m, i, o: attended.append(i[0]))
    idx = tokens(cfg, 2, 16)
    with torch.no_grad():
        out = model(idx, return_internals=True)
    b, t = idx.shape
    def as_heads(v):
        return v.view(b, t, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
    v1 = as_heads(raw[0])
    torch.testing.assert_close(out.values[0], v1, atol=0, rtol=0)
    for n in range(1, cfg.n_layer):
        vn = as_heads(raw[n])
        lam = (0.5, 0.5) if mode == "resformer" else tuple(model.blocks[n].attn.lambdas.tolist())
        expected = lam[0] * v1 + lam[1] * vn
        torch.testing.assert_close(out.values[n], expected, atol=1e-6, rtol=0)
        # ...and the layer really attends with the mixed values: A_n V_n'.
        probs = out.attention[n]
        mixed = expected.repeat_interleave(cfg.n_head // cfg.kv_heads, dim=1)
        torch.testing.assert_close(attended[n], (probs @ mixed).transpose(1, 2).reshape(b, t, -1), atol=1e-6, rtol=0)


def test_svformer_has_no_value_projection_past_layer_one():
    model = make(tiny(value_residual="svformer"))
    assert model.blocks[0].attn.v_proj is not None
    assert all(block.attn.v_proj is None for block in model.blocks[1:])
    assert not any(".v_proj" in name for name, _ in model.named_parameters() if not name.startswith("blocks.0."))
    with torch.no_grad():
        out = model(tokens(model.config, 2, 10), return_internals=True)
    for v in out.values[1:]:
        assert torch.equal(v, out.values[0])


def test_learnable_lambdas_train_and_are_not_decayed():
    model = make(tiny(value_residual="learnable"))
    lambdas = [b.attn.lambdas for b in model.blocks[1:]]
    no_decay = model.param_groups(0.1)[1]["params"]
    assert all(any(lam is p for p in no_decay) for lam in lambdas)
    assert all(torch.equal(lam.detach(), torch.tensor([0.5, 0.5])) for lam in lambdas)
    idx = tokens(model.config, 2, 12)
    stream_losses(model(idx[:, :-1]), idx[:, 1:]).mean().backward()
    assert all(lam.grad is not None and lam.grad.abs().sum() > 0 for lam in lambdas)


def test_norms_and_biases_are_not_decayed():
    model = make(tiny(bias=True))
    decay, no_decay = model.param_groups(0.1)
    decayed = {id(p) for p in decay["params"]}
    for name, p in model.named_parameters():
        if name.endswith("bias") or "ln_" in name:
            assert id(p) not in decayed, name
    assert id(model.blocks[0].attn.q_proj.weight) in decayed


# ------------------------------------------------------------------------------------------
# Shortcuts
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shortcut", ["depth", "full"])
def test_fresh_shortcut_model_equals_plain_model(shortcut):
    plain = make(tiny())
    torch.manual_seed(5)
    with_sc = GPT(tiny(shortcut=shortcut)).eval()
    missing, unexpected = with_sc.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("shortcut.") for name in missing)
    idx = tokens(plain.config, 2, 20)
    with torch.no_grad():
        assert torch.equal(with_sc(idx), plain(idx))


@pytest.mark.parametrize("shortcut", ["depth", "full"])
def test_shortcut_parameters_learn(shortcut):
    torch.manual_seed(0)
    model = GPT(tiny(shortcut=shortcut))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = tokens(model.config, 4, 20)
    for _ in range(2):
        opt.zero_grad()
        stream_losses(model(idx[:, :-1]), idx[:, 1:]).mean().backward()
        opt.step()
    for name, p in model.shortcut.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.shortcut.o_proj.weight.abs().sum() > 0


@pytest.mark.parametrize("shortcut", ["depth", "full", "last_layer"])
def test_shortcut_weights_are_distributions_over_selected_depths(shortcut):
    model = make(tiny(n_layer=4, shortcut=shortcut, shortcut_layers=[0, 2, 3]))
    with torch.no_grad():
        out = model(tokens(model.config, 2, 12), return_internals=True)
    w = out.shortcut_weights
    assert w.shape == (2, model.config.sc_heads, 12, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5, rtol=0)
    assert (w >= 0).all()


def test_bad_config_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="value_residual"):
        tiny(value_residual="resnet")
    with pytest.raises(ValueError, match="shortcut_layers"):
        tiny(shortcut="depth", shortcut_layers=[5])
    with pytest.raises(ValueError, match="n_kv_head"):
        tiny(n_kv_head=3)
    with pytest.raises(ValueError, match="unknown field"):
        GPTConfig.from_dict({"n_layers": 3})


# ------------------------------------------------------------------------------------------
# Every combination: cache equality, causality, reproducible sampling
# ------------------------------------------------------------------------------------------
COMBOS = [dict(value_residual=vr, shortcut=sc, n_streams=k, n_kv_head=kv)
          for vr, sc, k, kv in itertools.product(VALUE_RESIDUALS, SHORTCUTS, [1, 3], [None, 2])]


def combo_id(c: dict) -> str:
    return f"{c['value_residual']}-{c['shortcut']}-K{c['n_streams']}-kv{c['n_kv_head'] or 'all'}"


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_cached_decoding_equals_full_forward(combo):
    model = make(tiny(**combo))
    idx = tokens(model.config, 2, 18)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2)
        pieces = [model(idx[..., :7], cache=cache), model(idx[..., 7:10], cache=cache)]
        pieces += [model(idx[..., t:t + 1], cache=cache) for t in range(10, 18)]
    torch.testing.assert_close(torch.cat(pieces, dim=-2), full, atol=1e-4, rtol=0)
    assert cache.length == 18


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_future_tokens_never_change_past_logits(combo):
    model = make(tiny(**combo))
    idx = tokens(model.config, 2, 16)
    changed = idx.clone()
    changed[..., 9:] = (changed[..., 9:] + 1) % model.config.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[..., :9, :], b[..., :9, :], atol=1e-6, rtol=0)
    assert not torch.allclose(a[..., 9:, :], b[..., 9:, :])


@pytest.mark.parametrize("combo", COMBOS[::3], ids=combo_id)
def test_sampling_is_reproducible_and_cache_agrees_with_recompute(combo):
    model = make(tiny(**combo))
    prompt = tokens(model.config, 2, 5)
    settings = SamplingSettings(temperature=0.9, top_k=20, top_p=0.95, seed=123)
    first = generate(model, prompt, 12, settings)
    assert torch.equal(first, generate(model, prompt, 12, settings))
    assert torch.equal(first[..., :5], prompt) and first.shape[-1] == 17
    greedy = SamplingSettings(temperature=0.0)
    assert torch.equal(generate(model, prompt, 12, greedy), generate(model, prompt, 12, greedy, use_cache=False))


def recorded_generation(model: GPT, prompt: torch.Tensor, n: int, settings: SamplingSettings,
                        **options) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``generate``'s output and the last-position logits of every forward call it made."""
    seen: list[torch.Tensor] = []
    hook = model.register_forward_hook(lambda module, args, out: seen.append(out[..., -1, :].clone()))
    try:
        return generate(model, prompt, n, settings, **options), seen
    finally:
        hook.remove()


@torch.no_grad()
def naive_windowed_generation(model: GPT, prompt: torch.Tensor, n: int, settings: SamplingSettings,
                              keep: int | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Generation written from its description, without a cache: every step recomputes the window
    from scratch. The window is the sequence's tail of at most ``block_size`` tokens; it grows by
    each new token until it would pass ``block_size``, then restarts as the last ``keep`` tokens.
    ``keep=None``: no restart, the window is always the last ``block_size`` tokens.
    Returns the sequence and the logits each step sampled from (none after the last token: nothing
    samples from them)."""
    block = model.config.block_size
    generator = torch.Generator().manual_seed(settings.seed) if settings.seed is not None else None
    seq, start, seen = prompt, max(0, prompt.shape[-1] - block), []
    for _ in range(n):
        seen.append(model(seq[..., start:])[..., -1, :])
        nxt = sample_next(seen[-1], settings, generator)
        seq = torch.cat([seq, nxt.unsqueeze(-1)], dim=-1)
        if seq.shape[-1] - start > block:
            start = seq.shape[-1] - (block if keep is None else keep)
    return seq, seen


SLIDING = [dict(), dict(shortcut="depth", value_residual="learnable"), dict(shortcut="full", value_residual="svformer"),
           dict(shortcut="last_layer", value_residual="resformer", n_kv_head=2), dict(n_streams=3, shortcut="full")]


@pytest.mark.parametrize("combo", SLIDING, ids=lambda c: "-".join(f"{v}" for v in c.values()) or "plain")
@pytest.mark.parametrize("prompt_length", [10, 21], ids=["short-prompt", "prompt-past-the-context"])
def test_generation_slides_past_the_context_as_a_recomputed_window_would(combo, prompt_length):
    """Past the context (16 positions) the cache slides: the last ``slide_keep`` tokens (default 12)
    are prefilled again. Each step's logits and every sampled token equal a recomputation of that
    window without a cache; with ``slide_keep`` = the context, and without a cache, the window is
    always the last ``block_size`` tokens."""
    model = make(tiny(block_size=16, **combo))
    prompt = tokens(model.config, 2, prompt_length)
    settings = SamplingSettings(temperature=1.0, seed=5)
    n = 40
    for keep, options in ((12, {}), (1, {"slide_keep": 1}), (5, {"slide_keep": 5}), (None, {"slide_keep": 16}),
                          (None, {"use_cache": False})):
        want, want_logits = naive_windowed_generation(model, prompt, n, settings, keep)
        got, got_logits = recorded_generation(model, prompt, n, settings, **options)
        assert got.shape[-1] == prompt_length + n
        assert len(got_logits) == len(want_logits) == n, options
        for step, (a, b) in enumerate(zip(got_logits, want_logits, strict=True)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=lambda m: f"{options}, step {step}: {m}")
        assert torch.equal(got, want), options


def test_the_sliding_window_reads_the_tokens_it_keeps():
    """The windows above differ where they should: the logits after a slide depend on the tokens kept."""
    model = make(tiny(block_size=16))
    seq = tokens(model.config, 1, 30)
    with torch.no_grad():
        last_twelve, last_sixteen = model(seq[:, -12:])[:, -1], model(seq[:, -16:])[:, -1]
    assert (last_twelve - last_sixteen).abs().max() > 1e-3


def test_generation_stops_at_stop_tokens():
    model = make(tiny(bias=True, tie_embeddings=False))
    model.ln_f.weight.data.zero_()
    model.ln_f.bias.data.zero_()
    model.ln_f.bias.data[0] = 10.0
    model.heads[0].weight.data.zero_()
    model.heads[0].weight.data[7, 0] = 1.0  # every position now prefers id 7
    out = generate(model, torch.zeros(1, 3, dtype=torch.long), 50, SamplingSettings(temperature=0.0), stop_tokens=[7])
    assert out.shape == (1, 4) and out[0, -1] == 7


# ------------------------------------------------------------------------------------------
# Cache size and sampling filters
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_layer", [2, 3, 6])
def test_svformer_cache_is_measured_at_l_plus_one_over_two_l(n_layer):
    base = make(tiny(n_layer=n_layer)).new_cache(2).attention_nbytes()
    shared = make(tiny(n_layer=n_layer, value_residual="svformer")).new_cache(2).attention_nbytes()
    assert Fraction(shared, base) == Fraction(n_layer + 1, 2 * n_layer)


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isfinite(filter_logits(logits, 2, None)).sum() == 2
    probs = logits.softmax(-1)[0]  # ≈ .64 .24 .09 .03 .01
    kept = torch.isfinite(filter_logits(logits, None, float(probs[0] + 0.01)))
    assert kept.tolist() == [[True, True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.5)).sum() == 1


@pytest.mark.parametrize("top_p", [None, 0.8])
def test_top_k_sampling_draws_from_the_filtered_distribution(top_p):
    """Sampling among the k best ids gives the distribution of the masked full softmax."""
    logits = torch.tensor([[0.5, 2.0, -1.0, 1.5, 0.0, 1.0]] * 2)  # two rows, same logits
    settings = SamplingSettings(temperature=0.7, top_k=3, top_p=top_p, seed=0)
    expected = filter_logits(logits[:1] / 0.7, 3, top_p).softmax(-1)[0]
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next(logits, settings, generator) for _ in range(6000)])
    assert draws.shape == (12000,)
    freq = torch.bincount(draws, minlength=6).float() / draws.numel()
    assert set(draws.unique().tolist()) == set(torch.nonzero(expected).flatten().tolist())
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)
    streams = sample_next(torch.randn(2, 3, 6), settings, generator)  # [B, K, V] -> [B, K]
    assert streams.shape == (2, 3)


@pytest.mark.parametrize("top_k", [None, 4])
def test_sampling_draws_the_ids_torch_multinomial_draws_for_a_seed(top_k):
    """The written-out draw (an exponential race over noise drawn outside any compiled graph) gives,
    seed for seed, the ids ``torch.multinomial`` gives: a seed samples what it sampled before."""
    settings = SamplingSettings(temperature=0.8, top_k=top_k, seed=0)
    for seed in range(30):
        logits = torch.randn(3, 2, 11, generator=torch.Generator().manual_seed(100 + seed))
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for _ in range(4):
            got = sample_next(logits, settings, ours)
            scaled = logits / 0.8
            if top_k is None:
                want = torch.multinomial(scaled.softmax(-1).reshape(-1, 11), 1, generator=theirs).view(3, 2)
            else:
                values, ids = torch.topk(scaled, top_k, dim=-1)
                pick = torch.multinomial(values.softmax(-1).reshape(-1, top_k), 1, generator=theirs)
                want = ids.reshape(-1, top_k).gather(-1, pick).view(3, 2)
            assert torch.equal(got, want)


def test_stream_losses_mask_ignored_targets():
    logits = torch.randn(2, 3, 5, 11)
    targets = torch.randint(0, 11, (2, 3, 5))
    targets[:, 1, :2] = -100
    losses = stream_losses(logits, targets)
    expected = F.cross_entropy(logits[:, 1, 2:].reshape(-1, 11), targets[:, 1, 2:].reshape(-1))
    torch.testing.assert_close(losses[1], expected)


def test_forced_steps_override_sampling():
    model = make(tiny(n_streams=3))
    prompt = tokens(model.config, 1, 4)
    forced = torch.full((1, 3, 2), -1)
    forced[0, 1:, 0] = torch.tensor([5, 6])
    forced[0, 2, 1] = 9
    out = generate(model, prompt, 5, SamplingSettings(seed=3), forced=forced)
    assert out[0, 1:, 4].tolist() == [5, 6] and out[0, 2, 5] == 9


def test_banned_ids_are_never_sampled():
    model = make(tiny())
    banned = list(range(0, 37, 2))
    out = generate(model, tokens(model.config, 2, 3), 40, SamplingSettings(temperature=2.0, seed=0), banned=banned)
    assert not torch.isin(out[:, 3:], torch.tensor(banned)).any()


def test_one_weight_decay_rule_matrices_yes_gains_biases_and_lambdas_no():
    from shortcutlm.models import weight_decay_groups

    model = GPT(GPTConfig(vocab_size=32, n_layer=2, n_head=2, n_embd=16, block_size=8, bias=True,
                          value_residual="learnable"))
    decay, no_decay = (g["params"] for g in weight_decay_groups(model, 0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay) and any(p.dim() < 2 for p in no_decay)
    assert any("lambda" in names[id(p)] or "lam" in names[id(p)] for p in no_decay)  # λ is exempt
    assert not any("lambda" in names[id(p)] or "lam" in names[id(p)] for p in decay)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    assert model.param_groups(0.1) == weight_decay_groups(model, 0.1)


@pytest.mark.parametrize("value_residual", ["none", "resformer", "learnable", "svformer"])
@pytest.mark.parametrize("shortcut", ["none", "full", "last_layer"])
def test_a_staged_chunk_gives_the_logits_of_writing_the_cache_as_it_goes(shortcut, value_residual):
    """Inside a chunk (``KVCache.begin_chunk``) every block stages its new keys and values and attends
    over the cache as it was plus the staged part (``attend_staged``): the ``last_layer`` reading's
    final layer over every (depth, position) in one softmax, SVFormer's shared values standing for
    every depth. Run eagerly, the chunk's logits equal writing the cache as it goes, and the positions
    it writes at its end serve the steps after it."""
    model = make(tiny(n_kv_head=2, shortcut=shortcut, value_residual=value_residual))
    ids = tokens(model.config, 2, 12)
    written, staged = model.new_cache(2), model.new_cache(2)
    with torch.no_grad():
        for cache in (written, staged):
            model(ids[:, :6], cache=cache, last_only=True)
        want = [model(ids[:, i:i + 1], cache=written, last_only=True) for i in range(6, 12)]
        staged.begin_chunk()
        got = [model(ids[:, i:i + 1], cache=staged, last_only=True) for i in range(6, 10)]
        assert staged.length == 10 and not staged.keys[0][..., 6:10, :].any()  # nothing written yet
        staged.end_chunk()
        got += [model(ids[:, i:i + 1], cache=staged, last_only=True) for i in range(10, 12)]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(staged.keys, written.keys, strict=True):  # layers above the first see rounding
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _stops_inside_a_chunk(model: GPT, prompt: torch.Tensor, settings: SamplingSettings) -> list[int]:
    """Each row's 7th new token (inside the second chunk of 4) of an unstopped generation: with these
    as stop tokens every row stops by then, so generation ends inside that chunk."""
    plain = generate(model, prompt, 15, settings)
    return (plain if plain.dim() == 2 else plain[:, 0])[:, prompt.shape[-1] + 6].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("variant", [dict(shortcut="full", value_residual="svformer", n_kv_head=2, n_streams=3),
                                     dict(shortcut="last_layer", value_residual="learnable", n_kv_head=2)],
                         ids=["full-svformer-3streams", "last_layer-learnable"])
def test_compiled_chunks_decode_the_ids_eager_decoding_decodes(variant):
    """``generate(compile=True)`` (compiled chunks of ``CHUNK`` steps, torch.compile's CPU backend,
    dynamic cache length, noise drawn outside the graph) gives exactly the eager cached and uncached
    loops' ids: past the context (the window slides), with banned and forced ids, with stop tokens
    that end generation inside a chunk; through both per-depth caches, the staged keys and values
    (``KVCache.stage``) with SVFormer's shared values, grouped keys and several streams. One compiled
    graph serves all of it."""
    model = make(tiny(n_layer=2, block_size=32, **variant))  # two layers: compiling costs most of this test
    prompt = tokens(model.config, 2, 5)
    sampled = SamplingSettings(temperature=0.9, top_k=20, seed=3)
    eager = generate(model, prompt, 21, sampled)
    assert torch.equal(generate(model, prompt, 21, sampled, compile=True), eager)
    assert torch.equal(generate(model, prompt, 21, sampled, use_cache=False), eager)
    for keep in (None, 1):  # past the context, sliding to 1 kept position
        assert torch.equal(generate(model, prompt, 45, sampled, compile=True, slide_keep=keep),
                           generate(model, prompt, 45, sampled, slide_keep=keep))
    forced = torch.full((*prompt.shape[:-1], 6), -1)
    forced[..., 1:6:2] = 7
    rules = dict(banned=[3, 5, 9], forced=forced)
    eager = generate(model, prompt, 15, sampled, **rules)
    assert torch.equal(generate(model, prompt, 15, sampled, compile=True, **rules), eager)
    assert not torch.isin(eager[..., 5:], torch.tensor([3, 5, 9])).any() and (eager[..., 6:11:2] == 7).all()
    stops = _stops_inside_a_chunk(model, prompt, sampled)
    stopped = generate(model, prompt, 15, sampled, stop_tokens=stops)
    assert stopped.shape[-1] <= 5 + 7
    assert torch.equal(generate(model, prompt, 15, sampled, compile=True, stop_tokens=stops), stopped)


@pytest.mark.slow
def test_compiled_chunks_through_the_cpp_packed_product_decode_the_eager_ids():
    """q, k and v as one product of three stacked weights with their biases, in the compiled graph,
    through the C++ operator (``models.native``) where it builds, else the Python one."""
    from torch._inductor.utils import run_and_get_code

    from shortcutlm.models import native, packed

    model = make(tiny(n_layer=2, block_size=32, bias=True))
    prompt = tokens(model.config, 1, 4)
    settings = SamplingSettings(temperature=1.0, top_k=10, seed=2)
    compiled, code = run_and_get_code(generate, model, prompt, 14, settings, compile=True, pack_weights=True)
    assert torch.equal(compiled, generate(model, prompt, 14, settings, pack_weights=True))
    assert packed._NATIVE is native.operators()
    if native.operators() is not None:  # the generated C++ wrapper calls it with no way back into Python
        assert "shortcutlm_native::packed_linear" in "".join(code) and "custom_op_wrapper" not in "".join(code)


@pytest.mark.slow
def test_compiled_chunks_decode_greedy_and_nucleus_ids_as_eager_decoding():
    """The sampling settings a chunk bakes in: greedy (no noise; here from a one-token prompt at batch
    1, a cache length and a batch size Dynamo specialises) and a nucleus over the whole vocabulary
    (noise over every id, past the context); with ``last_layer`` + SVFormer, whose final layer stages
    per-depth keys against layer 1's shared values; and with packed weights."""
    model = make(tiny(n_layer=2, block_size=32, shortcut="last_layer", value_residual="svformer"))
    greedy, nucleus = SamplingSettings(temperature=0.0), SamplingSettings(temperature=1.1, top_p=0.9, seed=4)
    one = tokens(model.config, 1, 1)
    assert torch.equal(generate(model, one, 12, greedy, compile=True), generate(model, one, 12, greedy))
    stops = _stops_inside_a_chunk(model, one, greedy)
    assert torch.equal(generate(model, one, 15, greedy, compile=True, stop_tokens=stops),
                       generate(model, one, 15, greedy, stop_tokens=stops))
    prompt = tokens(model.config, 2, 5)
    assert torch.equal(generate(model, prompt, 45, nucleus, compile=True), generate(model, prompt, 45, nucleus))
    # Projections reading packed weights (models.packed, an opaque custom operator in the graph).
    assert torch.equal(generate(model, prompt, 13, nucleus, compile=True, pack_weights=True),
                       generate(model, prompt, 13, nucleus, pack_weights=True))
