"""What only a CUDA device can show: mixed-precision training, flash attention, compiled training
and decoding on the GPU. Skipped without CUDA; ``shortcutlm bench gpu`` runs them (``-m gpu``),
with the FSDP test in tests/test_training.py."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from shortcutlm.models import GPT, GPTConfig, SamplingSettings, generate, stream_losses
from shortcutlm.run.recipe import Recipe, from_dict
from shortcutlm.run.training import train
from tests.conftest import tiny_recipe_dict

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

VARIANTS = {"plain": {}, "svformer": {"value_residual": "svformer"},
            "full+resformer": {"value_residual": "resformer", "shortcut": "full"},
            "depth+learnable": {"value_residual": "learnable", "shortcut": "depth"},
            "last_layer+resformer": {"value_residual": "resformer", "shortcut": "last_layer"}}


def config(**overrides) -> GPTConfig:
    return GPTConfig(**{"vocab_size": 97, "n_layer": 3, "n_head": 4, "n_embd": 128, "block_size": 64, **overrides})


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_runs_and_learns(tmp_path, text8_shards, precision):
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, max_steps=8, val_every=8,
                            accelerator="gpu", devices=1, precision=precision)
    data["variants"] = {"v": VARIANTS["full+resformer"]}
    out = train(from_dict(Recipe, data), "v", text8_shards, tmp_path / "run", progress=False)
    with (out / "metrics.csv").open() as fh:
        losses = [float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_flash_attention_matches_the_math_kernel(variant):
    torch.manual_seed(0)
    model = GPT(config(**VARIANTS[variant])).cuda().to(torch.bfloat16).eval()
    idx = torch.randint(0, 97, (2, 64), device="cuda")
    # The full shortcut's masked attention over depth x time has no flash kernel: it may fall back
    # to the math kernel; every other attention call must run on flash (or raise).
    flash_only = [SDPBackend.FLASH_ATTENTION] + ([SDPBackend.MATH] if model.config.shortcut == "full" else [])
    with torch.no_grad():
        with sdpa_kernel(flash_only):
            flash = model(idx).float()
        with sdpa_kernel(SDPBackend.MATH):
            math_ = model(idx).float()
    torch.testing.assert_close(flash, math_, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_compiled_training_step_matches_eager_on_the_gpu(variant):
    torch.manual_seed(0)
    eager = GPT(config(**VARIANTS[variant])).cuda()
    compiled_model = GPT(config(**VARIANTS[variant])).cuda()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model)
    idx = torch.randint(0, 97, (4, 65), device="cuda")
    grads = []
    for forward, model in ((eager, eager), (compiled, compiled_model)):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = stream_losses(forward(idx[:, :-1]), idx[:, 1:]).mean()
        loss.backward()
        grads.append((float(loss.detach()),
                      torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    assert grads[1][0] == pytest.approx(grads[0][0], abs=2e-2)
    assert torch.nn.functional.cosine_similarity(grads[0][1], grads[1][1], dim=0) > 0.99


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_compiled_decoding_equals_eager_decoding_on_the_gpu(variant):
    torch.manual_seed(0)
    model = GPT(config(**VARIANTS[variant])).cuda().eval()
    if model.shortcut is not None:
        torch.nn.init.normal_(model.shortcut.o_proj.weight, 0.0, 0.2)
    prompt = torch.randint(0, 97, (2, 5), device="cuda")
    greedy = SamplingSettings(temperature=0.0)
    eager = generate(model, prompt, 40, greedy)
    assert torch.equal(generate(model, prompt, 40, greedy, compile=True), eager)
    assert torch.equal(generate(model, prompt, 40, greedy, use_cache=False), eager)
