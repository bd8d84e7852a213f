"""The decoding cache's size in closed form (``GPTConfig.kv_cache_bytes``) equals its tensors' bytes
for every reading and value residual, so the memory a user plans with is the memory they get."""
from __future__ import annotations

import itertools

import pytest
import torch

from shortcutlm.models import GPT, GPTConfig

SHORTCUTS = ("none", "depth", "full", "last_layer")
RESIDUALS = ("none", "resformer", "learnable", "svformer")


@pytest.mark.parametrize("shortcut, residual", list(itertools.product(SHORTCUTS, RESIDUALS)))
@pytest.mark.parametrize("layers, depths", [(3, None), (4, [0, 2])])
def test_formula_equals_the_cache_tensors(shortcut, residual, layers, depths):
    cfg = GPTConfig(vocab_size=40, n_layer=layers, n_head=4, n_kv_head=2, n_embd=32, block_size=24,
                    shortcut=shortcut, value_residual=residual, shortcut_layers=depths)
    cache = GPT(cfg).new_cache(batch=3, dtype=torch.bfloat16)
    attention, shortcut_bytes = cfg.kv_cache_bytes(batch=3, context=24, bytes_per_value=2)
    assert attention == cache.attention_nbytes()
    assert attention + shortcut_bytes == cache.nbytes()


def test_the_readings_cost_what_the_page_says():
    """Against the plain model at 6 layers x 384, context 512, fp32: last_layer adds (D-1) slots of keys
    and values to the final layer; full adds its own per-depth features; depth adds nothing."""
    def cost(**kw):
        cfg = GPTConfig(vocab_size=64, n_layer=6, n_head=6, n_embd=384, block_size=512, **kw)
        return sum(cfg.kv_cache_bytes(1, 512, 4))
    plain = cost()
    assert plain == 2 * 6 * 512 * 384 * 4
    assert cost(shortcut="depth") == plain
    assert cost(shortcut="last_layer") == plain + 2 * 5 * 512 * 384 * 4  # 6 depths: 5 more slots
    assert cost(value_residual="svformer") == (6 + 1) * 512 * 384 * 4
