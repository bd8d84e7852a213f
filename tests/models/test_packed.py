"""Projections that read packed weights while decoding (``shortcutlm.models.packed``)."""
from __future__ import annotations

import gc
import logging
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F

from shortcutlm.models import GPT, GPTConfig
from shortcutlm.models import native, packed
from shortcutlm.models.packed import (Linear, packed_linear, packed_linears, packed_linears_of_one_input,
                                      packing_pays, project)
from shortcutlm.models.sampling import SamplingSettings, generate

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")


@pytest.fixture(params=["python", "native"])
def operator(request, monkeypatch) -> str:
    """Each test below runs with the Python operator and with the C++ one (``models.native``)."""
    if request.param == "python":
        monkeypatch.setattr(native, "operators", lambda: None)
    else:
        request.getfixturevalue("cpp_operators")
    return request.param


@pytest.fixture
def cpp_operators():
    """The C++ operators, built (skipped only where there is no compiler at all)."""
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler to build the operator with")
    ops = native.operators()
    assert ops is not None, "the C++ operator did not build (see the log)"
    return ops


def copies() -> int:
    """Packed copies held by both operators."""
    return len(packed._PACKED) + native.copies()


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


def test_project_packs_what_it_can_and_keeps_a_missing_layer_missing(operator):
    q, k = Linear(16, 16, bias=False), Linear(16, 8, bias=False)
    x = torch.randn(2, 1, 16)
    model = torch.nn.ModuleList([q, k])
    held = copies()
    with torch.no_grad():
        plain = project(x, q, k, None)
        with packed_linears(model):
            packed_out = project(x, q, k, None)
    assert plain[2] is None and packed_out[2] is None
    for a, b in zip(packed_out[:2], plain[:2]):
        torch.testing.assert_close(a, b)
    assert copies() == held + 1  # one product for both
    if operator == "python":
        assert (id(q.weight), id(k.weight)) in packed._PACKED


def packed_forward(layer: Linear, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), packed_linears(layer):
        return layer(x)


def test_a_weight_changed_in_place_is_packed_again(operator):
    """An optimiser step between two generations must not leave the packed copy stale."""
    layer = Linear(16, 8, bias=True)
    x = torch.randn(1, 16)
    before = packed_forward(layer, x)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    layer(x).sum().backward()
    opt.step()
    after = packed_forward(layer, x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, F.linear(x, layer.weight.detach(), layer.bias.detach()))
    with torch.no_grad():
        layer.weight.copy_(torch.randn(8, 16))  # load_state_dict writes this way
    torch.testing.assert_close(packed_forward(layer, x), F.linear(x, layer.weight.detach(), layer.bias.detach()))


def test_a_freed_weight_takes_its_packed_copy_with_it(operator):
    held = copies()
    layer = Linear(16, 8, bias=False)
    packed_forward(layer, torch.randn(1, 16))
    assert copies() == held + 1
    del layer
    gc.collect()
    assert copies() == held


def test_the_model_packs_only_inside_the_block_and_only_without_gradients(operator):
    model = tiny(shortcut="last_layer", value_residual="resformer")
    held = copies()
    ids = torch.randint(0, 37, (2, 9))
    with torch.no_grad():
        plain = model(ids)
        with packed_linears(model):
            with packed_linears(model):  # nested blocks restore what they found
                pass
            assert all(m.packed for m in model.modules() if isinstance(m, Linear))
            packed_logits = model(ids)
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    assert held < copies() < held + len(linears)  # every projection packed, q, k and v as one
    if operator == "python":
        packed_ids = {i for key in packed._PACKED for i in key}
        assert all(id(m.weight) in packed_ids for m in linears)
    assert not any(m.packed for m in model.modules() if isinstance(m, Linear))
    torch.testing.assert_close(packed_logits, plain, rtol=1e-5, atol=1e-5)
    with packed_linears(model):  # training inside the block takes the plain product, which has a backward
        F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    assert model.heads[0].weight.grad is not None


def test_packed_generation_decodes_the_ids_plain_generation_decodes(operator):
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
@torch.no_grad()  # decoding's products have no backward
def test_the_cpp_operator_gives_the_python_operators_bits(cpp_operators, dtype, bias):
    """Both run oneDNN's product over the same packed copy, so a seed decodes the same ids whichever
    operator a machine could build."""
    ops = cpp_operators
    layers = [Linear(48, n, bias=bias).to(dtype) for n in (20, 12, 12)]
    weights = [m.weight for m in layers]
    biases = [m.bias for m in layers]
    for shape in [(1, 48), (2, 1, 48), (3, 2, 5, 48)]:
        x = torch.randn(shape, dtype=dtype)
        assert torch.equal(ops.packed_linear(x, weights[0], biases[0]), packed_linear(x, weights[0], biases[0]))
        for n in (2, 3):
            python = packed_linears_of_one_input(x, weights[:n], [b for b in biases[:n] if b is not None])
            args = [t for pair in zip(weights[:n], biases[:n]) for t in pair]
            assert torch.equal(ops.packed_linear(x, *args), torch.cat(python, dim=-1))


def test_generation_gives_the_same_ids_through_either_operator(cpp_operators, monkeypatch):
    model = tiny(value_residual="svformer")  # no value projection: q and k stacked, two weights
    prompt = torch.randint(0, 37, (1, 5))
    settings = SamplingSettings(temperature=0.9, top_k=20, seed=5)
    cpp = generate(model, prompt, 20, settings, pack_weights=True)
    assert native.copies() > 0
    monkeypatch.setattr(native, "operators", lambda: None)
    assert torch.equal(cpp, generate(model, prompt, 20, settings, pack_weights=True))


def test_without_the_cpp_operator_decoding_falls_back_to_python_and_says_why(monkeypatch, tmp_path, caplog):
    build = native.operators.__wrapped__  # the uncached lookup
    monkeypatch.setenv(native.ENV, "0")
    assert build() is None  # switched off: nothing built, nothing said
    monkeypatch.setenv(native.ENV, "1")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert build() is None
    assert "ninja is not installed" in caplog.text
    monkeypatch.undo()
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE", broken)
    monkeypatch.setattr(native, "NAME", "shortcutlm_native_broken")
    monkeypatch.setenv("SHORTCUTLM_CACHE", str(tmp_path / "cache"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert build() is None
    assert "did not build" in caplog.text


def test_two_threads_decoding_at_once_get_what_each_gets_alone(operator):
    """The packed copies are shared state: concurrent generations (a server's threads) must neither
    block nor read each other's weights."""
    from concurrent.futures import ThreadPoolExecutor

    models = [tiny(), tiny(n_embd=48, n_head=4, n_kv_head=4)]
    prompt = torch.randint(0, 37, (1, 5))
    settings = SamplingSettings(temperature=0.9, top_k=20, seed=11)
    alone = [generate(m, prompt, 40, settings, pack_weights=True) for m in models]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda m: generate(m, prompt, 40, settings, pack_weights=True), models * 3))
    for i, ids in enumerate(together):
        assert torch.equal(ids, alone[i % 2])
