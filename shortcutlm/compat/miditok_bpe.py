"""miditok's private BPE tables and id conversions (tested: 3.1).

miditok 3 exposes no public way to expand a learned (BPE) id into the base tokens it stands for,
to turn token strings into ids without encoding a score, to get the byte string a training sample
is made of, or to read the learned model for a digest. Those reads are here, checked.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Sequence

from shortcutlm.compat import changed

PACKAGE, TESTED = "miditok", "3.1"


def _private(tok: Any, name: str) -> Any:
    value = getattr(tok, name, None)
    if value is None:
        raise changed(PACKAGE, TESTED, f"{type(tok).__name__}.{name}")
    return value


def learned_expansion(tok: Any, idx: int) -> list[str]:
    """The base tokens a learned (BPE) id stands for. KeyError / IndexError / TypeError: the id has none."""
    model = _private(tok, "_model")
    table = _private(tok, "_vocab_learned_bytes_to_tokens")
    return list(table[model.id_to_token(idx)])


def tokens_to_ids(tok: Any, tokens: Sequence[str]) -> list[int]:
    """Base token strings to their ids (what ``TokSequence.ids`` holds before BPE)."""
    return list(_private(tok, "_tokens_to_ids")(list(tokens)))


def ids_to_tokens(tok: Any, ids: Sequence[int]) -> list[str]:
    """Base ids to their token strings."""
    return list(_private(tok, "_ids_to_tokens")(list(ids)))


def ids_to_bytes(tok: Any, ids: Sequence[int]) -> str:
    """The byte string (one character per base id) BPE is trained on and applied to."""
    return _private(tok, "_ids_to_bytes")(list(ids), as_one_str=True)


def bpe_model_text(tok: Any) -> str:
    """The learned BPE model as its Hugging Face ``tokenizers`` JSON (for a digest)."""
    return _private(tok, "_model").to_str()
