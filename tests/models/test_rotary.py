"""Rotary positions against the complex-form reference the model tests use, at any offset, and the
hand-written backward."""
from __future__ import annotations

import pytest
import torch

from shortcutlm.models.attention import Rotary
from tests.models.test_gpt import naive_rope


def _naive(x: torch.Tensor, offset: int, base: float) -> torch.Tensor:
    """The model tests' complex-form rotation of each [T, D] sequence, for positions from ``offset``."""
    padded = torch.cat([x.new_zeros(*x.shape[:-2], offset, x.shape[-1]), x], dim=-2)
    rows = padded.reshape(-1, *padded.shape[-2:])
    return torch.stack([naive_rope(r, base) for r in rows]).view(padded.shape)[..., offset:, :].to(x.dtype)


@pytest.mark.parametrize("offset", [0, 5])
def test_matches_the_naive_rotation(offset: int) -> None:
    rotary = Rotary(8, 32, 100.0).double()
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(rotary(x, offset), _naive(x, offset, 100.0), rtol=1e-5, atol=1e-5)


def test_hand_written_backward_against_finite_differences() -> None:
    rotary = Rotary(8, 32, 100.0).double()
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: rotary(x, 4), (x,))


def test_training_and_inference_paths_agree_in_bf16_on_strided_heads() -> None:
    """q as the projections leave it ([B,T,H,D] memory seen as [B,H,T,D]): the same rotation with a
    gradient to keep as without."""
    rotary = Rotary(64, 512, 10000.0)
    x = torch.randn(2, 40, 6, 64).to(torch.bfloat16).transpose(1, 2)
    with torch.no_grad():
        plain = rotary(x, 7)
    trained = rotary(x.detach().requires_grad_(), 7)
    assert trained.grad_fn is not None
    assert torch.equal(plain, trained.detach())
    torch.testing.assert_close(plain.float(), _naive(x.double(), 7, 10000.0).float(), rtol=0.02, atol=0.02)
