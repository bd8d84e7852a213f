"""Projections that read packed weights while decoding (``shortcutlm.models.packed``)."""
from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

from shortcutlm.models import GPT, GPTConfig
from shortcutlm.models import packed
from shortcutlm.models.packed import (Linear, packed_linear, packed_linears, packed_linears_of_one_input,
                                      packing_pays, project)
from shortcutlm.models.sampling import SamplingSettings, generate

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    base = dict(vocab_size=37, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=24)
    return GPT(GPTConfig(**{**base, **overrides})).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_the_packed_product_is_the_plain_one(dtype, bias):
    """One weight, and several weights of one input (q, k and v) in one packed product."""
    layers = [Linear(48, n, bias=bias).to(dtype) for n in (20, 12, 12)]
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    for shape in [(1, 48), (2, 1, 48), (3, 2, 5, 48)]:
        x = torch.randn(shape, dtype=dtype)
        want = [F.linear(x, m.weight, m.bias) for m in layers]
        biases = [m.bias for m in layers] if bias else []
        torch.testing.assert_close(packed_linear(x, layers[0].weight, layers[0].bias), want[0], **tol)
        got = packed_linears_of_one_input(x, [m.weight for m in layers], biases)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, **tol)
        assert got[0].untyped_storage().data_ptr() != got[1].untyped_storage().data_ptr()  # no aliasing


def test_project_packs_what_it_can_and_keeps_a_missing_layer_missing():
    q, k = Linear(16, 16, bias=False), Linear(16, 8, bias=False)
    x = torch.randn(2, 1, 16)
    model = torch.nn.ModuleList([q, k])
    with torch.no_grad():
        plain = project(x, q, k, None)
        with packed_linears(model):
            packed_out = project(x, q, k, None)
    assert plain[2] is None and packed_out[2] is None
    for a, b in zip(packed_out[:2], plain[:2]):
        torch.testing.assert_close(a, b)
    assert (id(q.weight), id(k.weight)) in packed._PACKED  # one product for both


def test_a_weight_changed_in_place_is_packed_again():
    """An optimiser step between two generations must not leave the packed copy stale."""
    layer = Linear(16, 8, bias=False)
    x = torch.randn(1, 16)
    before = packed_linear(x, layer.weight, None)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    layer(x).sum().backward()
    opt.step()
    after = packed_linear(x, layer.weight, None)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, F.linear(x, layer.weight.detach()))
    with torch.no_grad():
        layer.weight.copy_(torch.randn(8, 16))  # load_state_dict writes this way
    torch.testing.assert_close(packed_linear(x, layer.weight, None), F.linear(x, layer.weight.detach()))


def test_a_freed_weight_takes_its_packed_copy_with_it():
    layer = Linear(16, 8, bias=False)
    packed_linear(torch.randn(1, 16), layer.weight, None)
    key = (id(layer.weight),)
    assert key in packed._PACKED
    del layer
    gc.collect()
    assert key not in packed._PACKED


def test_the_model_packs_only_inside_the_block_and_only_without_gradients():
    model = tiny(shortcut="last_layer", value_residual="resformer")
    ids = torch.randint(0, 37, (2, 9))
    with torch.no_grad():
        plain = model(ids)
        with packed_linears(model):
            with packed_linears(model):  # nested blocks restore what they found
                pass
            assert all(m.packed for m in model.modules() if isinstance(m, Linear))
            packed_logits = model(ids)
    packed_ids = {i for key in packed._PACKED for i in key}
    assert all(id(m.weight) in packed_ids for m in model.modules() if isinstance(m, Linear))
    assert not any(m.packed for m in model.modules() if isinstance(m, Linear))
    torch.testing.assert_close(packed_logits, plain, rtol=1e-5, atol=1e-5)
    with packed_linears(model):  # training inside the block takes the plain product, which has a backward
        F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    assert model.heads[0].weight.grad is not None


def test_packed_generation_decodes_the_ids_plain_generation_decodes():
    model = tiny()
    prompt = torch.randint(0, 37, (2, 5))
    settings = SamplingSettings(temperature=0.9, top_k=20, seed=3)
    packed_ids = generate(model, prompt, 30, settings, pack_weights=True)
    assert torch.equal(packed_ids, generate(model, prompt, 30, settings, pack_weights=False))
    assert not any(m.packed for m in model.modules() if isinstance(m, Linear))


def test_packing_is_measured_once_per_model_and_never_under_autocast(monkeypatch):
    model = tiny()
    first = packing_pays(model)
    assert isinstance(first, bool)
    weights = {id(m.weight) for m in model.modules() if isinstance(m, Linear)}
    assert not any(set(key) & weights for key in packed._PACKED)  # the measurement's copies are dropped
    monkeypatch.setattr(packed, "_pass_seconds", lambda *a: pytest.fail("measured twice"))
    assert packing_pays(model) == first
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not packing_pays(tiny())


def test_packing_follows_the_measurement(monkeypatch):
    """Packed where the packed pass is faster by the margin, plain elsewhere."""
    times = iter([1.0, 0.5, 1.0, 0.95])  # (plain, packed) for two models
    monkeypatch.setattr(packed, "_pass_seconds", lambda *a: next(times))
    assert packing_pays(tiny()) and not packing_pays(tiny())
