"""Causal attention in query blocks (``shortcutlm.models.blocked_attention``) against a naive reference."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shortcutlm.models import GPT, GPTConfig, stream_losses
from shortcutlm.models import blocked_attention
from shortcutlm.models.blocked_attention import _BlockedCausal, causal_attention, chosen, saved_bytes, training_path


def naive(q, k, v):
    """softmax(q k^T / sqrt(D)) v with every later key masked, grouped heads repeated, in float64."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    t = q.shape[-2]
    later = torch.ones(t, t, dtype=torch.bool).triu(1)
    return scores.masked_fill(later, float("-inf")).softmax(-1) @ v


def inputs(t, heads=4, kv_heads=4, d=32, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, t, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(batch, kv_heads, t, d, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, v, torch.randn(batch, heads, t, d, generator=g, dtype=torch.float64)


def output_and_grads(fn, q, k, v, grad, dtype):
    leaves = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
    out = fn(*leaves)
    return [out.double(), *(g.double() for g in torch.autograd.grad(out, leaves, grad.to(dtype)))]


def worst(got, want):
    return max((a - b).abs().max().item() for a, b in zip(got, want, strict=True))


def test_the_blocks_gradients_are_the_gradients_of_their_forward():
    """The hand-written backward against finite differences, float64, blocks of 3 over 8 positions, q's
    scale (folded into its copy and its gradient) not 1."""
    q, k, v, _ = inputs(8, heads=2, kv_heads=2, d=4, batch=1)
    leaves = [x.reshape(1, 2, 8, 4).requires_grad_() for x in (q, k, v)]
    assert torch.autograd.gradcheck(lambda a, b, c: _BlockedCausal.apply(a, b, c, 3, 1 / math.sqrt(4)), leaves)


@pytest.mark.parametrize("t", [1, 63, 64, 129, 300, 512])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_fp32_blocks_equal_the_reference(t, kv_heads):
    """Output and the three gradients, a last block of any length, grouped heads."""
    q, k, v, grad = inputs(t, kv_heads=kv_heads)
    want = output_and_grads(naive, q, k, v, grad, torch.float64)
    got = output_and_grads(causal_attention, q, k, v, grad, torch.float32)
    assert worst(got, want) < 1e-5


@pytest.mark.parametrize("t", [100, 512])
def test_bf16_blocks_are_as_close_to_the_reference_as_the_flash_kernel(t):
    """bf16 has no tight tolerance; the bar is PyTorch's own bf16 attention on the same inputs."""
    q, k, v, grad = inputs(t)
    want = output_and_grads(naive, q, k, v, grad, torch.float64)
    got = output_and_grads(causal_attention, q, k, v, grad, torch.bfloat16)
    flash = output_and_grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                             q, k, v, grad, torch.bfloat16)
    assert got[0].dtype == torch.float64 and worst(got, want) < max(2 * worst(flash, want), 0.02)


def test_strided_inputs_and_an_output_the_heads_merge_from_without_a_copy():
    """q, k, v as the projections leave them ([B,T,H,D] memory seen as [B,H,T,D]); the output's heads
    merge back into [B,T,H*D] as a view, and so do all three gradients."""
    q, k, v, _ = inputs(70)
    strided = [x.transpose(1, 2).contiguous().transpose(1, 2).float().requires_grad_() for x in (q, k, v)]
    assert not strided[0].is_contiguous()
    out = causal_attention(*strided)
    torch.testing.assert_close(out, causal_attention(*(x.contiguous() for x in strided)), rtol=0, atol=0)
    assert out.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(out.double(), naive(q, k, v), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out, strided, torch.randn_like(out))
    assert all(g.transpose(1, 2).is_contiguous() for g in grads)


def test_under_autocast_it_computes_in_the_autocast_dtype():
    q, k, v, _ = inputs(40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = causal_attention(q.float(), k.float(), v.float())
        flash = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    assert out.dtype == flash.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), naive(q, k, v), rtol=0.05, atol=0.05)


def test_the_choice_follows_dtype_length_work_memory_dropout_grad_and_device():
    def q(t, dtype=torch.float32, batch=8, device="cpu", grad=True):
        return torch.empty(batch, 6, t, 64, dtype=dtype, device=device, requires_grad=grad)

    def picks(x, dropout=0.0, k=None):
        return chosen(x, x if k is None else k, x, dropout)

    # With a backward to run (training):
    assert picks(q(512, torch.bfloat16)) and picks(q(512)) and picks(q(32))
    assert not picks(q(1024))  # fp32 measured no faster past 512
    assert picks(q(2048, torch.bfloat16, batch=2))
    assert not picks(q(4096, torch.bfloat16, batch=1))
    assert not picks(q(2048, torch.bfloat16, batch=64))  # memory cap
    assert not picks(q(32, batch=1))  # too little work for the per-block calls
    assert not picks(q(512), dropout=0.1)  # attention dropout: the kernel applies it
    assert not picks(q(512, torch.float16))
    assert not picks(q(1), k=q(9))  # a query over a cache is not a whole causal sequence
    assert not picks(q(512, device="meta"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert picks(q(2048, batch=2))  # computes in bf16, whatever q holds
    # Forward only (evaluation, a prefill): bf16 with enough work.
    assert picks(q(256, torch.bfloat16, batch=1, grad=False))
    assert not picks(q(128, torch.bfloat16, batch=1, grad=False))
    assert not picks(q(512, grad=False))  # fp32's forward is no faster
    with torch.no_grad():
        assert not picks(q(512))
        assert picks(q(512, torch.bfloat16))
    assert "blocks of 128" in training_path("cpu", torch.bfloat16, 48, 512)
    assert training_path("cuda", torch.bfloat16, 48, 512) == "F.scaled_dot_product_attention"


def test_saved_bytes_counts_each_blocks_rows_times_keys():
    assert saved_bytes(1, 4, 2, 2) == 2 * (2 * 2 + 2 * 4)
    assert saved_bytes(48, 512, 128, 2) == 48 * 2 * 128 * (128 + 256 + 384 + 512)


def model_and_batch(**overrides):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**dict(vocab_size=50, n_layer=2, n_head=4, n_embd=32, block_size=64), **overrides}))
    return model, torch.randint(0, 50, (4, 65))  # batch x heads x T^2 = 65k: enough work for the blocks


def count_block_calls(monkeypatch) -> list[int]:
    """A list that grows by one at every call of the blocked path (which still runs)."""
    calls: list[int] = []
    original = blocked_attention.causal_attention
    monkeypatch.setattr(blocked_attention, "causal_attention", lambda *a: calls.append(1) or original(*a))
    return calls


def loss_and_grads(model, forward, idx):
    model.zero_grad()
    loss = stream_losses(forward(idx[:, :-1]), idx[:, 1:]).mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def assert_same_step(got, want):
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_training_step_takes_the_blocks_and_matches_the_flash_kernel(monkeypatch):
    """The model's own attention takes the blocked path on CPU and gives the loss and gradients the
    flash kernel gives."""
    model, idx = model_and_batch(n_kv_head=2)
    calls = count_block_calls(monkeypatch)
    blocked = loss_and_grads(model, model, idx)
    assert len(calls) == 2
    monkeypatch.setattr(blocked_attention, "chosen", lambda *a: False)
    flash = loss_and_grads(model, model, idx)
    assert len(calls) == 2
    assert_same_step(blocked, flash)


@pytest.mark.slow
def test_a_compiled_model_attends_through_the_blocks_between_its_graphs(monkeypatch):
    """``torch.compile`` (what ``train.compile`` does) keeps the blocked path, run eagerly between the
    compiled graphs, and gives the eager model's loss and gradients."""
    model, idx = model_and_batch()
    calls = count_block_calls(monkeypatch)
    eager = loss_and_grads(model, model, idx)
    compiled = loss_and_grads(model, torch.compile(model), idx)
    assert len(calls) == 4
    assert_same_step(compiled, eager)
