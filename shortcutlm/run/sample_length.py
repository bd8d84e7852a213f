"""MIDI asked for in seconds: generate until every sample lasts the target, then cut each at the note
that reaches it. Tokens per second of music vary with the notes, so a first estimate can fall short;
the duration is always measured on the decoded ids, never guessed."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shortcutlm.models import GPT, SamplingSettings, generate
from shortcutlm.tokenizers import Tokenizer

#: Rounds of generation (each of the first estimate's length) before a too-short sample is kept as is.
MAX_ROUNDS = 8


def lasts(tok: Tokenizer, row: np.ndarray, context: dict[str, Any]) -> float:
    return float(tok.seconds_of(row[1:], context) or 0.0)  # row[0] is the packing EOS


def extend_to(model: GPT, seq: torch.Tensor, head: np.ndarray, target: float, chunk: int,
              settings: SamplingSettings, banned: Any, tok: Tokenizer,
              context: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """Generate more, ``chunk`` steps at a time, until every row lasts ``target`` seconds.

    Tokens per second of music vary with the notes, so the first estimate can fall short; the
    duration is measured on the decoded ids, never guessed. Returns the rows and the rounds used.
    """
    def shortest() -> float:
        rows = [np.concatenate([head, r]) for r in seq.cpu().numpy()]
        return min(lasts(tok, r, context) for r in rows)

    rounds = 1
    assert settings.seed is not None  # generate_from_checkpoint always draws one
    while rounds < MAX_ROUNDS and shortest() < target:
        more = SamplingSettings(settings.temperature, settings.top_k, settings.top_p, settings.seed + rounds)
        seq = generate(model, seq, chunk, more, banned=banned)
        rounds += 1
    return seq, rounds


def shortest_lasting(row: np.ndarray, prompt_len: int, target: float, tok: Tokenizer,
                     context: dict[str, Any]) -> int:
    """The shortest length of ``row`` (prompt kept whole) that lasts ``target`` seconds: the
    continuation ends with the note that reaches the requested length (or all of it if short)."""
    low, high = prompt_len, row.shape[-1]
    if lasts(tok, row, context) < target:
        return high
    while low < high:  # duration grows with the ids kept: bisect on it
        mid = (low + high) // 2
        if lasts(tok, row[:mid], context) >= target:
            high = mid
        else:
            low = mid + 1
    return low
