"""Next-token cross-entropy, computed one way for training, validation, evaluation and benchmarks.

:func:`token_nats` is the one computation: the loss of every target and whether it counts.
Training takes the mean per stream (:func:`stream_losses`, MusicGen's per-codebook mean; with the
counts behind it, :func:`stream_means`, for validation sums); evaluation keeps every token's loss in
float64 (:func:`token_losses`) to group it and sum over a whole split.

Which ids carry no prediction (padding, the delay layout's ``empty``) is a tokenizer's answer
(``Tokenizer.ignored_ids``, or a manifest's); here they are ids only. A target of ``IGNORE``
never counts either.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from shortcutlm.models.cross_entropy import target_nats

#: A target that never counts (PyTorch's ``ignore_index`` default).
IGNORE = -100

Ignored = Tensor | Sequence[int]


def token_nats(logits: Tensor, targets: Tensor, ignored: Ignored = ()) -> tuple[Tensor, Tensor]:
    """Cross-entropy of every target and where targets count, both ``[B, K, T]``.

    ``logits`` ``[B, T, V]`` or ``[B, K, T, V]``, ``targets`` ``[B, T]`` or ``[B, K, T]`` (K = 1 for
    one stream). Nats are float32, computed in float32 whatever the logits' dtype
    (:mod:`~shortcutlm.models.cross_entropy`), and zero where the target is ``IGNORE``; ``valid`` is
    False there and where the target is one of ``ignored``.
    """
    if logits.dim() == 3:  # one stream: [B, T, V] -> [B, 1, T, V]
        logits, targets = logits.unsqueeze(1), targets.unsqueeze(1)
    b, k, t, v = logits.shape
    nats = target_nats(logits.reshape(-1, v), targets.reshape(-1), IGNORE).view(b, k, t)
    valid = targets != IGNORE
    if len(ignored):
        valid &= ~torch.isin(targets, torch.as_tensor(ignored, dtype=targets.dtype, device=targets.device))
    return nats, valid


def stream_means(logits: Tensor, targets: Tensor, ignored: Ignored = ()) -> tuple[Tensor, Tensor]:
    """(mean nats per stream [K], valid targets per stream [K]): a stream's mean over its valid
    targets (0 where it has none), and how many there were."""
    nats, valid = token_nats(logits, targets, ignored)
    weights = valid.float()
    return (nats * weights).sum(dim=(0, 2)) / weights.sum(dim=(0, 2)).clamp_min(1.0), valid.sum(dim=(0, 2))


def stream_losses(logits: Tensor, targets: Tensor, ignored: Ignored = ()) -> Tensor:
    """Mean cross-entropy per stream over valid targets: shape [K] (K = 1 for one stream).

    The training loss is the mean over streams, as MusicGen does for its codebooks.
    """
    return stream_means(logits, targets, ignored)[0]


def token_losses(logits: Tensor, targets: Tensor, ignored: Ignored = ()) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy of every target, and where targets count: ``(nats, valid)``, both
    ``[B, K, T]``, nats in float64 (computed from float32 logits). A loss over a split is
    ``nats[valid].sum()`` over ``valid.sum()``, summed over every batch: the exact token-weighted mean.
    """
    nats, valid = token_nats(logits, targets, ignored)
    return nats.double(), valid


def in_target_spans(ids: Tensor, opens: Ignored, closes: Ignored) -> Tensor:
    """For packed rows of ids ``[B, T]``: True at the positions whose next id is a target of a paired
    document, i.e. the last of ``opens`` (a task marker) seen at or before the position comes after
    the last of ``closes`` (EOS, a domain marker). A row that starts inside a target counts from its
    next task marker on (what came before is not known to be a target)."""
    index = torch.arange(ids.shape[-1], device=ids.device).expand_as(ids)
    none = torch.full_like(index, -1)
    last_open = torch.where(torch.isin(ids, torch.as_tensor(opens, dtype=ids.dtype, device=ids.device)), index,
                            none).cummax(-1).values
    last_close = torch.where(torch.isin(ids, torch.as_tensor(closes, dtype=ids.dtype, device=ids.device)), index,
                             none).cummax(-1).values
    return last_open > last_close


def targets_only(batch: Tensor, opens: Ignored, closes: Ignored) -> Tensor:
    """The targets of ``batch`` ``[B, T + 1]`` with every target outside a paired document's target set to
    ``IGNORE`` (the loss on targets only; the sources are read, never predicted)."""
    targets = batch[..., 1:].clone()
    targets[~in_target_spans(batch[..., :-1], opens, closes)] = IGNORE
    return targets
