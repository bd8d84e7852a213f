"""Sampling: temperature, top-k, top-p, seeded; generation with a KV cache that slides its window.

Works for one stream ([B, T] ids) and for K parallel streams ([B, K, T]); each stream of
each row is sampled independently from its own head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from shortcutlm.models.decoding import decode_steps
from shortcutlm.models.gpt import GPT


@dataclass
class SamplingSettings:
    temperature: float = 1.0
    """0 means greedy (argmax)."""
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest top-p nucleus."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first always stays).
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: Tensor, settings: SamplingSettings, generator: torch.Generator | None) -> Tensor:
    """Sample one id per row (and stream) from logits [..., V]."""
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / settings.temperature
    k = settings.top_k
    if k is not None and k < logits.shape[-1]:
        # Draw among the k best only: the distribution of masking the rest to -inf (up to ties
        # at the k-th logit), without a softmax and a multinomial over the whole vocabulary
        # (on CPU at vocabulary 2048: 30 µs a token instead of 69 µs).
        values, ids = torch.topk(logits, k, dim=-1)
        probs = filter_logits(values, None, settings.top_p).softmax(dim=-1)
        pick = torch.multinomial(probs.reshape(-1, k), 1, generator=generator)
        return ids.reshape(-1, k).gather(-1, pick).view(logits.shape[:-1])
    probs = filter_logits(logits, None, settings.top_p).softmax(dim=-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.view(probs.shape[:-1])


@torch.no_grad()
def generate(model: GPT, prompt: Tensor, max_new_tokens: int, settings: SamplingSettings | None = None,
             stop_tokens: Iterable[int] = (), use_cache: bool = True, slide_keep: int | None = None,
             forced: Tensor | None = None, banned: Iterable[int] = (), compile: bool = False,
             on_step: Callable[[int], None] | None = None) -> Tensor:
    """Continue ``prompt`` ([B, T] or [B, K, T]) by up to ``max_new_tokens`` steps.

    Prefill once, then one token per step through the KV cache. When the context fills, the
    window slides: the last ``slide_keep`` tokens (default: three quarters of the context) are
    prefilled again and decoding goes on. Generation stops early once every row has produced
    a stop token (on stream 0 for several streams); use ``trim_at_stop`` on each row.
    ``forced`` ([B, F] or [B, K, F]) fixes the first F generated steps wherever it is >= 0
    (-1 = sample): the delay layout uses it to keep the prompt's known codes in the streams
    that lag behind. ``banned`` ids are never sampled (e.g. audio's special ids, which would
    cut the decoded waveform short). ``compile`` runs the single-token steps through
    ``torch.compile`` (``models.decoding.decode_steps``: the first call compiles, tens of seconds
    on a CPU; worth it for long or repeated generation). ``on_step`` is called with the steps done
    after each one (a progress display). Returns prompt and continuation together.
    """
    settings = settings or SamplingSettings()
    cfg = model.config
    if prompt.shape[-1] < 1:
        raise ValueError("generate needs a prompt of at least one token (e.g. the BOS id)")
    if (cfg.n_streams == 1) != (prompt.dim() == 2):
        raise ValueError(f"prompt shape {tuple(prompt.shape)} does not fit a model with {cfg.n_streams} stream(s)")
    was_training = model.training
    model.eval()
    generator = None
    if settings.seed is not None:
        generator = torch.Generator(device=prompt.device).manual_seed(settings.seed)
    stops = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=prompt.device)
    never = torch.tensor(sorted(set(banned)), dtype=torch.long, device=prompt.device)
    finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    keep = slide_keep or max(1, (3 * cfg.block_size) // 4)
    seq = prompt
    cache = model.new_cache(prompt.shape[0]) if use_cache else None

    def prefill(n: int) -> Tensor:
        if cache is not None:
            cache.reset()
        return model(seq[..., -n:], cache=cache, last_only=True)

    step_fn = decode_steps(model, compile and cache is not None)
    logits = prefill(min(seq.shape[-1], cfg.block_size))
    for step in range(max_new_tokens):
        last = logits[..., -1, :]
        if never.numel():
            last = last.index_fill(-1, never, float("-inf"))
        nxt = sample_next(last, settings, generator)  # [B] or [B, K]
        if forced is not None and step < forced.shape[-1]:
            fixed = forced[..., step]
            nxt = torch.where(fixed >= 0, fixed, nxt)
        seq = torch.cat([seq, nxt.unsqueeze(-1)], dim=-1)
        if on_step is not None:
            on_step(step + 1)
        if stops.numel():
            lead = nxt if nxt.dim() == 1 else nxt[:, 0]
            finished |= torch.isin(lead, stops)
            if bool(finished.all()):
                break
        if cache is None:
            logits = prefill(min(seq.shape[-1], cfg.block_size))
        elif cache.length + 1 > cfg.block_size:  # context full: slide the window
            logits = prefill(min(keep, seq.shape[-1]))
        else:
            logits = step_fn(nxt.unsqueeze(-1), cache=cache, last_only=True)
    model.train(was_training)
    return seq


def trim_at_stop(tokens: Tensor, stop_tokens: Iterable[int], start: int = 0) -> Tensor:
    """Cut one row ([T] or [K, T]) just before its first stop token at or after ``start``."""
    lead = tokens if tokens.dim() == 1 else tokens[0]
    stops = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=tokens.device)
    hits = torch.nonzero(torch.isin(lead[start:], stops)).flatten()
    return tokens[..., : start + int(hits[0])] if hits.numel() else tokens
