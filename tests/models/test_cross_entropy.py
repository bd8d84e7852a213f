"""The chunked cross-entropy against PyTorch's ``F.cross_entropy`` on fp32 copies of the logits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shortcutlm.models import cross_entropy
from shortcutlm.models.cross_entropy import target_nats
from shortcutlm.models.losses import IGNORE, token_nats


def _case(rows: int, vocab: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen) * 4).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    targets[::5] = IGNORE
    return logits, targets


def _reference(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's nats and gradient, in float64 from the same logits."""
    x = logits.double().requires_grad_()
    nats = F.cross_entropy(x, targets, ignore_index=IGNORE, reduction="none")
    (grad,) = torch.autograd.grad(nats, x, weights.double())
    return nats, grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,vocab", [(1, 7), (37, 300), (300, 2048)])
def test_nats_and_gradient_match_pytorch(dtype: torch.dtype, rows: int, vocab: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cross_entropy, "CHUNK_BYTES", 4 * vocab * 16)  # 16-row chunks: several, one ragged
    logits, targets = _case(rows, vocab, dtype)
    weights = torch.rand(rows)
    expected, expected_grad = _reference(logits, targets, weights)
    x = logits.clone().requires_grad_()
    nats = target_nats(x, targets, IGNORE)
    (grad,) = torch.autograd.grad(nats, x, weights)
    assert nats.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(nats.double(), expected, rtol=1e-5, atol=1e-5)
    # The gradient is rounded once to the logits' dtype: within half a unit of it.
    tol = 1e-6 if dtype == torch.float32 else 2**-8
    torch.testing.assert_close(grad.double(), expected_grad, rtol=tol, atol=tol)
    assert torch.equal(nats[targets == IGNORE], torch.zeros(int((targets == IGNORE).sum())))
    assert torch.equal(grad[targets == IGNORE], torch.zeros_like(grad[targets == IGNORE]))
    assert torch.equal(x.detach(), logits), "the logits must be left as they were"


def test_bf16_logits_keep_fp32_precision() -> None:
    """Nats from bf16 logits equal fp32 maths over the same (rounded) logits, not bf16 log-probabilities."""
    logits, targets = _case(64, 1000, torch.bfloat16, seed=3)
    expected = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="none")
    torch.testing.assert_close(target_nats(logits, targets, IGNORE), expected, rtol=1e-6, atol=1e-6)


def test_token_nats_takes_it_for_streams() -> None:
    """[B, K, T, V] logits: each stream's nats as PyTorch computes them."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 11, generator=gen).to(torch.bfloat16)
    targets = torch.randint(0, 11, (2, 3, 5), generator=gen)
    targets[0, 1, 2] = IGNORE
    nats, valid = token_nats(logits, targets)
    expected = F.cross_entropy(logits.float().permute(0, 3, 1, 2), targets, ignore_index=IGNORE, reduction="none")
    torch.testing.assert_close(nats, expected, rtol=1e-6, atol=1e-6)
    assert not valid[0, 1, 2] and int(valid.sum()) == 29


def test_out_of_range_target_is_an_error() -> None:
    logits, targets = _case(4, 9, torch.float32)
    targets[1] = 9
    with pytest.raises((IndexError, RuntimeError)):
        target_nats(logits, targets, IGNORE)
