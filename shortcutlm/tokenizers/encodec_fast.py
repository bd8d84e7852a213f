"""EnCodec on the CPU at speed: replacements for three of encodec 0.1.1's slow paths.

Each computes what encodec computes (tests compare against encodec's own model); the
acoustic tokenizer patches them into the codec it builds.
"""
from __future__ import annotations

import torch


# The codec's LSTM runs 75 tiny sequential steps per second of audio. With several OpenMP
# threads each step waits at a barrier for every thread; on a busy machine a descheduled thread
# turns that into a scheduler quantum per step (measured on 2 shared cores: 9.8 s instead of
# 0.17 s for 20 s of audio). The convolutions keep all threads; the LSTM runs on one.
def one_thread_enter(module, args) -> None:
    module._shortcutlm_threads = torch.get_num_threads()
    torch.set_num_threads(1)


def one_thread_exit(module, args, output) -> None:
    torch.set_num_threads(getattr(module, "_shortcutlm_threads", torch.get_num_threads()))


class FastELU(torch.nn.Module):
    """ELU (alpha 1) as ``max(x, exp(min(x, 0)) - 1)``: equal to ``x`` above 0 and to ``e^x - 1``
    below (where ``e^x - 1 >= x``). torch's own ELU goes through ``expm1``, which its AVX-512
    kernels compute one element at a time (~40 M/s against ~1.4 G/s for ``exp``): ELU was a third
    of EnCodec's CPU encode time. Values differ from ``expm1`` by < 1e-7, the same order as the
    differences torch itself shows between thread counts or CPU instruction sets; like those, it
    can move a code whose two nearest centroids are that close (measured with the random-init
    codec, whose latents barely vary: 1-2% of first-codebook codes, up to 9% of the eighth, the
    same rates as 1 versus 2 torch threads)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, x.clamp(max=0).exp_().sub_(1))


def reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """``F.pad(x, (left, right), "reflect")`` by slicing and ``cat``: the same values (pure data
    movement), but torch's reflection_pad1d kernel was 13% of EnCodec's encode time on CPU."""
    parts = [x[..., 1:left + 1].flip(-1)] if left else []
    parts.append(x)
    if right:
        parts.append(x[..., -right - 1:-1].flip(-1))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else x


def sconv1d_forward(self, x: torch.Tensor) -> torch.Tensor:
    """encodec's ``SConv1d.forward`` (encodec 0.1.1) with :func:`reflect_pad` in place of its pad1d."""
    from encodec.modules.conv import get_extra_padding_for_conv1d, pad1d

    conv = self.conv.conv
    kernel_size, stride, dilation = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
    padding_total = (kernel_size - 1) * dilation - (stride - 1)
    extra = get_extra_padding_for_conv1d(x, kernel_size, stride, padding_total)
    if self.causal:
        left, right = padding_total, extra
    else:
        right = padding_total // 2
        left, right = padding_total - right, right + extra
    if self.pad_mode == "reflect" and x.shape[-1] > max(left, right):
        return self.conv(reflect_pad(x, left, right))
    return self.conv(pad1d(x, (left, right), mode=self.pad_mode))
