"""Encoding in the worker processes of a prepare: the entry points a worker runs, and the checks an
encoded document passes before it may reach a shard.

A bad input is an answer here, never an exception: each task returns the tokens or the reason the
document is rejected, which the shard loop (:mod:`~shortcutlm.datasets.shard_loop`) records.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from collections.abc import Generator

import numpy as np

from shortcutlm.datasets.isolation import Crashed, IsolatedPool
from shortcutlm.documents import Document
from shortcutlm.tokenizers import Tokenizer, load_tokenizer, tokenizer_class

# ------------------------------------------------------------------------------ in the workers

_WORKER: dict[str, Tokenizer] = {}


def setup_worker(domain: str, settings: dict[str, Any] | None, folder: str | None, threads: int) -> None:
    """Worker set-up: the saved tokenizer from ``folder``, or (for training) a fresh one from settings."""
    _WORKER["tokenizer"] = (load_tokenizer(folder) if folder
                            else tokenizer_class(domain).from_settings(dict(settings or {})))
    if threads and "torch" in sys.modules:  # keep workers on shared cores from oversubscribing
        sys.modules["torch"].set_num_threads(threads)


def encode_task(doc: Document) -> tuple[np.ndarray | None, dict[str, Any] | str]:
    return _encode(doc, _WORKER["tokenizer"])


def sample_task(doc: Document) -> tuple[bool, Any]:
    """``(True, training sample)`` or ``(False, reason)``: a bad file is an answer, not an exception."""
    try:
        return True, _WORKER["tokenizer"].training_sample(doc)
    except Exception as exc:
        return False, _message(exc)


# ------------------------------------------------------------------------------ encoding

def _message(exc: Exception) -> str:
    message = str(exc).strip() or type(exc).__name__
    return message if type(exc).__name__ == "TokenizerError" else f"{type(exc).__name__}: {message}"


def rejection_reason(doc: Document, message: str) -> str:
    """A rejection reason without the input's name in front: the manifest and the CLI name it beside."""
    prefix = f"{doc.describe()}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _encode(doc: Document, tokenizer: Tokenizer) -> tuple[np.ndarray | None, dict[str, Any] | str]:
    """Encode one document; any failure becomes a rejection reason instead of an exception."""
    try:
        encoded = tokenizer.encode_document(doc)
        tokens = np.asarray(encoded.tokens)
        problem = _check_tokens(tokens, tokenizer) or _check_meta(encoded.meta)
        if problem:
            return None, problem
        return tokens, dict(encoded.meta)
    except Exception as exc:  # a bad input is a rejection, never the end of the run
        return None, _message(exc)


def _check_tokens(tokens: np.ndarray, tokenizer: Tokenizer) -> str:
    k = tokenizer.n_streams
    if k == 1 and tokens.ndim != 1:
        return f"tokenizer returned shape {tokens.shape}, expected [T]"
    if k > 1 and (tokens.ndim != 2 or tokens.shape[0] != k):
        return f"tokenizer returned shape {tokens.shape}, expected [{k}, T]"
    if tokens.shape[-1] == 0:
        return "no tokens (empty after tokenization)"
    if tokens.min() < 0 or tokens.max() >= tokenizer.vocab_size:
        return f"ids outside [0, {tokenizer.vocab_size})"
    return ""


def _check_meta(meta: dict[str, Any]) -> str:
    """A size that is not a finite number (a duration from a corrupt header) would poison the split sums."""
    for key, value in meta.items():
        if isinstance(value, float) and not np.isfinite(value):
            return f"its {key} came out as {value}"
    return ""


def worker_threads(workers: int) -> int:
    """torch threads per worker process (0: reading in this process, leave its threads alone)."""
    return max(1, (os.cpu_count() or 1) // workers) if workers else 0


def encoded_stream(docs: list[Document], pool: IsolatedPool, folder: Path, domain: str,
                    timeout_s: float | None) -> Generator[tuple[Document, np.ndarray | None, Any], None, None]:
    """Encoded documents in input order, so shard contents are reproducible; a document whose
    worker crashed comes back with the crash as its reason."""
    if not docs:
        return
    pool.setup(setup_worker, domain, None, str(folder), worker_threads(pool.workers))
    stream = pool.imap(encode_task, docs, timeout_s)
    try:
        for doc, answer in stream:
            yield (doc, None, answer.reason()) if isinstance(answer, Crashed) else (doc, *answer)
    finally:
        stream.close()
