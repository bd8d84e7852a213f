"""Sampling: temperature, top-k, top-p, seeded; generation with a KV cache that slides its window.

Works for one stream ([B, T] ids) and for K parallel streams ([B, K, T]); each stream of
each row is sampled independently from its own head.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from shortcutlm.models.decoding import CHUNK, compiled_chunk, guarded_calls
from shortcutlm.models.gpt import GPT, KVCache
from shortcutlm.models.packed import can_pack, packed_linears, packing_pays


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


def _distribution(logits: Tensor, settings: SamplingSettings) -> tuple[Tensor, Tensor | None]:
    """The probabilities to draw from [..., C] and, when top-k narrows them to C = k candidates,
    the ids of those candidates."""
    logits = logits.float() / settings.temperature
    k = settings.top_k
    if k is not None and k < logits.shape[-1]:
        # Draw among the k best only: the distribution of masking the rest to -inf (up to ties
        # at the k-th logit), without a softmax over the whole vocabulary
        # (on CPU at vocabulary 2048: 30 µs a token instead of 69 µs).
        values, ids = torch.topk(logits, k, dim=-1)
        return filter_logits(values, None, settings.top_p).softmax(dim=-1), ids
    return filter_logits(logits, None, settings.top_p).softmax(dim=-1), None


def choose(logits: Tensor, noise: Tensor | None, settings: SamplingSettings) -> Tensor:
    """One id per row (and stream) from logits [..., V], given this step's ``sampling_noise``
    (None when greedy).

    The draw is the one ``torch.multinomial`` makes for a single sample: the argmax of the
    probabilities over exponential noise (an exponential race, the Gumbel-max trick with the
    logarithms removed). Written out so that the noise can be drawn outside a compiled chunk of
    steps (``models.decoding``) and a seed still gives the ids ``torch.multinomial`` gives
    (tested: ``tests/models/test_gpt.py``).
    """
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    assert noise is not None  # sampled settings always draw noise
    probs, ids = _distribution(logits, settings)
    pick = (probs / noise).argmax(dim=-1, keepdim=True)
    return pick.squeeze(-1) if ids is None else ids.gather(-1, pick).squeeze(-1)


def noise_shape(rows: tuple[int, ...], vocab: int, settings: SamplingSettings) -> tuple[int, ...] | None:
    """The shape of one step's noise for logits [*rows, vocab]; None when greedy."""
    if settings.temperature == 0:
        return None
    k = settings.top_k
    return (*rows, k if k is not None and k < vocab else vocab)


def sampling_noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
                   out: Tensor | None = None) -> Tensor:
    """One step's exponential noise, drawn as ``torch.multinomial`` draws it (one ``exponential_``
    over a float tensor of the candidates' shape), into ``out`` when given (a chunk's slot)."""
    target = torch.empty(shape, device=device) if out is None else out
    return target.exponential_(1.0, generator=generator)


def sample_next(logits: Tensor, settings: SamplingSettings, generator: torch.Generator | None) -> Tensor:
    """Sample one id per row (and stream) from logits [..., V]."""
    shape = noise_shape(tuple(logits.shape[:-1]), logits.shape[-1], settings)
    noise = None if shape is None else sampling_noise(shape, generator, logits.device)
    return choose(logits, noise, settings)


@torch.no_grad()
def generate(model: GPT, prompt: Tensor, max_new_tokens: int, settings: SamplingSettings | None = None,
             stop_tokens: Iterable[int] = (), use_cache: bool = True, slide_keep: int | None = None,
             forced: Tensor | None = None, banned: Iterable[int] = (), compile: bool = False,
             on_step: Callable[[int], None] | None = None, pack_weights: bool | None = None) -> Tensor:
    """Continue ``prompt`` ([B, T] or [B, K, T]) by up to ``max_new_tokens`` steps.

    Prefill once, then one token per step through the KV cache. When the context fills, the
    window slides: the last ``slide_keep`` tokens (default: three quarters of the context) are
    prefilled again and decoding goes on. Generation stops early once every row has produced
    a stop token (on stream 0 for several streams); use ``trim_at_stop`` on each row.
    ``forced`` ([B, F] or [B, K, F]) fixes the first F generated steps wherever it is >= 0
    (-1 = sample): the delay layout uses it to keep the prompt's known codes in the streams
    that lag behind. ``banned`` ids are never sampled (e.g. audio's special ids, which would
    cut the decoded waveform short). ``compile`` decodes ``models.decoding.CHUNK``
    tokens per call of a ``torch.compile``d chunk (the first call compiles, about a minute on a
    CPU; worth it for long or repeated generation), the same ids as without. ``on_step`` is called with the steps done
    after each one (a progress display). ``pack_weights``: the projections read weights packed for
    one-row products (``models.packed``; None: where ``packing_pays`` measures it faster on this
    machine, True/False: always/never). Returns prompt and continuation together.
    """
    settings = settings or SamplingSettings()
    cfg = model.config
    if prompt.shape[-1] < 1:
        raise ValueError("generate needs a prompt of at least one token (e.g. the BOS id)")
    if (cfg.n_streams == 1) != (prompt.dim() == 2):
        raise ValueError(f"prompt shape {tuple(prompt.shape)} does not fit a model with {cfg.n_streams} stream(s)")
    was_training = model.training
    model.eval()
    pack = packing_pays(model) if pack_weights is None else pack_weights and can_pack(model)
    try:
        with packed_linears(model, pack):
            return _generate(model, prompt, max_new_tokens, settings, stop_tokens, use_cache, slide_keep, forced,
                             banned, compile, on_step, pack)
    finally:
        model.train(was_training)


def _generate(model: GPT, prompt: Tensor, max_new_tokens: int, settings: SamplingSettings,
              stop_tokens: Iterable[int], use_cache: bool, slide_keep: int | None, forced: Tensor | None,
              banned: Iterable[int], compile: bool, on_step: Callable[[int], None] | None, packed: bool) -> Tensor:
    """``generate``'s loop, with the model in eval mode and its projections packed or not."""
    cfg = model.config
    generator = None
    if settings.seed is not None:
        generator = torch.Generator(device=prompt.device).manual_seed(settings.seed)
    stops = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=prompt.device)
    never = torch.tensor(sorted(set(banned)), dtype=torch.long, device=prompt.device)
    finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    keep = slide_keep or max(1, (3 * cfg.block_size) // 4)
    seq = prompt
    cache = model.new_cache(prompt.shape[0]) if use_cache else None
    chunk = _Chunk(model, settings, generator, tuple(prompt.shape[:-1]), never, forced, packed) \
        if compile and cache is not None else None

    def prefill(n: int) -> Tensor:
        if cache is not None:
            cache.reset()
        return model(seq[..., -n:], cache=cache, last_only=True)

    logits: Tensor | None = prefill(min(seq.shape[-1], cfg.block_size))
    step = 0
    while step < max_new_tokens:
        if logits is None:  # the last token is not fed yet
            if chunk is not None and cache is not None and chunk.fits(step, max_new_tokens, cache):
                new = chunk(seq[..., -1:], cache, step)
            elif cache is None:
                logits = prefill(min(seq.shape[-1], cfg.block_size))
            elif cache.length + 1 > cfg.block_size:  # context full: slide the window
                logits = prefill(min(keep, seq.shape[-1]))
            else:
                logits = model(seq[..., -1:], cache=cache, last_only=True)
        if logits is not None:
            last = logits[..., -1, :]
            if never.numel():
                last = last.index_fill(-1, never, float("-inf"))
            nxt = sample_next(last, settings, generator)  # [B] or [B, K]
            if forced is not None and step < forced.shape[-1]:
                fixed = forced[..., step]
                nxt = torch.where(fixed >= 0, fixed, nxt)
            new, logits = nxt.unsqueeze(-1), None
        taken = new.shape[-1]
        if stops.numel():  # keep the new tokens up to the one after which every row has stopped
            lead = new if new.dim() == 2 else new[:, 0]
            hits = torch.isin(lead, stops).cumsum(dim=-1) > 0
            done = (finished[:, None] | hits).all(dim=0).nonzero()
            taken = int(done[0]) + 1 if done.numel() else taken
            finished |= hits[:, taken - 1]
        seq = torch.cat([seq, new[..., :taken]], dim=-1)
        for _ in range(taken):
            step += 1
            if on_step is not None:
                on_step(step)
        if stops.numel() and bool(finished.all()):
            break
    return seq


class _Chunk:
    """The compiled chunk of ``models.decoding.CHUNK`` steps, for one generation loop: it draws each
    step's noise from the loop's generator in the eager loop's order and passes the banned ids and
    the forced ids of the steps it covers. Both are always tensors (none banned: an empty one; none
    forced: -1 everywhere), so one compiled graph serves every loop with the same settings."""

    def __init__(self, model: GPT, settings: SamplingSettings, generator: torch.Generator | None,
                 rows: tuple[int, ...], banned: Tensor, forced: Tensor | None, packed: bool) -> None:
        self.n = CHUNK
        # A graph is compiled for packed or plain projections (its guards are skipped after the first calls).
        key = (settings.temperature, settings.top_k, settings.top_p, packed)
        pick = functools.partial(choose, settings=settings)
        self.fn = guarded_calls(compiled_chunk(model, self.n, key, pick), self.n)
        self.generator, self.device = generator, banned.device
        shape = noise_shape(rows, model.config.vocab_size, settings)
        self.noise = None if shape is None else torch.empty((self.n, *shape), device=self.device)
        self.banned = banned
        self.given = forced
        self.forced = torch.full((*rows, self.n), -1, dtype=torch.long, device=self.device)

    def fits(self, step: int, max_new_tokens: int, cache: KVCache) -> bool:
        """Whether a whole chunk fits in the tokens asked and the context left."""
        return step + self.n <= max_new_tokens and cache.length + self.n <= cache.max_len

    def __call__(self, last: Tensor, cache: KVCache, step: int) -> Tensor:
        if self.noise is not None:
            for slot in self.noise:
                sampling_noise(tuple(slot.shape), self.generator, self.device, out=slot)
        if self.given is not None and step < self.given.shape[-1] + self.n:
            window = self.given[..., step:step + self.n]
            self.forced.fill_(-1)
            self.forced[..., :window.shape[-1]] = window
        cache.begin_chunk()
        try:
            return self.fn(last, cache, self.noise, self.banned, self.forced)
        finally:
            cache.end_chunk()


def trim_at_stop(tokens: Tensor, stop_tokens: Iterable[int], start: int = 0) -> Tensor:
    """Cut one row ([T] or [K, T]) just before its first stop token at or after ``start``."""
    lead = tokens if tokens.dim() == 1 else tokens[0]
    stops = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=tokens.device)
    hits = torch.nonzero(torch.isin(lead[start:], stops)).flatten()
    return tokens[..., : start + int(hits[0])] if hits.numel() else tokens
