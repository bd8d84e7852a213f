"""The suite's AdamW (``shortcutlm.models.optim.adamw``)."""
from __future__ import annotations

import torch

from shortcutlm.models import GPT, GPTConfig
from shortcutlm.models.optim import adamw


def test_on_cpu_adamw_is_fused_and_updates_as_the_unfused_one():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=16, block_size=12, value_residual="learnable")
    models = [GPT(config), GPT(config)]
    models[1].load_state_dict(models[0].state_dict())
    fused = adamw(models[0].param_groups(0.1), "cpu", 1e-2, (0.9, 0.95))
    plain = torch.optim.AdamW(models[1].param_groups(0.1), lr=1e-2, betas=(0.9, 0.95))
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    idx = torch.randint(0, 40, (2, 12))
    for _ in range(3):
        for model, opt in zip(models, (fused, plain)):
            opt.zero_grad()
            model(idx).logsumexp(-1).mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
