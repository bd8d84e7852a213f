"""Paired documents over a joint vocabulary: ``<source marker> source <task marker> target``.

A composite tokenizer made with ``tasks`` has one marker per task after its domain markers
(:mod:`shortcutlm.tokenizers.composite`). A pair of a source and a target document (each in its own
part's ids) becomes one document of joint ids; the same target without its source is
``<task marker> target``. Kept here, beside the mapping, so the modules that build, score and
sample pairs (:mod:`shortcutlm.pairs`) never read the mapping's offsets themselves.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shortcutlm.tokenizers.base import Tokenizer, TokenizerError
from shortcutlm.tokenizers.composite import CompositeTokenizer


def vocabulary(tok: Tokenizer) -> CompositeTokenizer:
    """``tok`` as the joint vocabulary pairs are written in; a TokenizerError for any other tokenizer."""
    if not isinstance(tok, CompositeTokenizer):
        raise TokenizerError(f"a {tok.domain} tokenizer has no paired vocabulary (no task markers)")
    return tok


def target_view(tok: Tokenizer, target_domain: str) -> Tokenizer:
    """The joint vocabulary answering for the target's domain (what sampling a target bans and decodes)."""
    return vocabulary(tok).with_domain(target_domain)


def _task(tok: Tokenizer, task: str) -> int:
    if task not in vocabulary(tok).task_markers:
        known = ", ".join(vocabulary(tok).tasks) or "none (it was not trained on pairs)"
        raise TokenizerError(f"this model was not trained on the task {task}; its tasks: {known}")
    return vocabulary(tok).task_markers[task]


def paired(tok: Tokenizer, task: str, source_domain: str, source: np.ndarray, target_domain: str,
           target: np.ndarray) -> np.ndarray:
    """The document of one pair for ``task``: the source's part ids and the target's, moved to joint ids."""
    joint = vocabulary(tok)
    src = np.asarray(source, dtype=np.int64).reshape(-1) + joint.offsets[source_domain]
    return np.concatenate([[joint.markers[source_domain]], src, target_alone(tok, task, target_domain, target)])


def target_alone(tok: Tokenizer, task: str, target_domain: str, target: np.ndarray) -> np.ndarray:
    """The target with its source removed: ``<task marker> target``."""
    tgt = np.asarray(target, dtype=np.int64).reshape(-1) + vocabulary(tok).offsets[target_domain]
    return np.concatenate([[_task(tok, task)], tgt]).astype(np.int64)


def prompt_for(tok: Tokenizer, task: str, source_domain: str, source: np.ndarray) -> np.ndarray:
    """What a model continues to write the target of ``source``: the pair up to its task marker."""
    src = np.asarray(source, dtype=np.int64).reshape(-1) + vocabulary(tok).offsets[source_domain]
    return np.concatenate([[vocabulary(tok).markers[source_domain]], src, [_task(tok, task)]]).astype(np.int64)


def split_document(tok: Tokenizer, doc: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """A stored paired document as ``(task, the ids before the task marker, the target's joint ids)``."""
    flat = np.asarray(doc, dtype=np.int64).reshape(-1)
    by_id = {i: name for name, i in vocabulary(tok).task_markers.items()}
    where = [k for k, v in enumerate(flat.tolist()) if v in by_id]
    if len(where) != 1:
        raise TokenizerError(f"a paired document holds one task marker; this one holds {len(where)}")
    at = where[0]
    return by_id[int(flat[at])], flat[:at], flat[at + 1:]


def tasks_of(tok: object) -> tuple[str, ...]:
    """The tasks a tokenizer's vocabulary has markers for (none for a tokenizer made without pairs)."""
    return tuple(tok.tasks) if isinstance(tok, CompositeTokenizer) else ()


def encode_source(tok: Tokenizer, task: str, source_domain: str, path: str | Path) -> np.ndarray:
    """A source file as its part's ids; a file of another type than the task reads is a TokenizerError
    naming the file, the task and the types it reads."""
    from shortcutlm.documents import Document

    part = vocabulary(tok).parts.get(source_domain)
    if part is None:
        raise TokenizerError(f"this model has no {source_domain} part, which the task {task} reads")
    suffix = Path(path).suffix.lower()
    if suffix not in part.extensions:
        raise TokenizerError(f"prompt file {path}: the task {task} reads {source_domain} "
                             f"({', '.join(part.extensions)}), not a {suffix or 'suffix-less'} file")
    if not Path(path).is_file():
        raise TokenizerError(f"prompt file {path}: no such file")
    return np.asarray(part.encode_document(Document("prompt", "test", "prompt", path=Path(path))).tokens,
                      dtype=np.int64).reshape(-1)


def source_seconds(tok: Tokenizer, source_domain: str, path: str | Path) -> float | None:
    """How long the source file lasts, where its domain knows (audio, MIDI); None for text."""
    return vocabulary(tok).parts[source_domain].artifact_seconds(path)


def round_trip(tok: Tokenizer, domain: str, path: str | Path, out_path: str | Path) -> Path:
    """``path`` through its domain's part and back to a file: what the vocabulary can hold of it (a ceiling)."""
    from shortcutlm.documents import Document

    part = vocabulary(tok).parts[domain]
    ids = part.encode_document(Document("reference", "test", "reference", path=Path(path))).tokens
    return part.decode(np.asarray(ids), out_path)
