"""Checking a recipe's tokenizer settings against a domain's known keys.

One helper so every domain rejects a misspelt key the same way (a silently ignored
``vocab_sise`` would train the wrong tokenizer and nobody would notice).
"""
from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Mapping


def merge_settings(domain: str, defaults: Mapping[str, Any], given: Mapping[str, Any] | None,
                   extra_known: Iterable[str] = ()) -> dict[str, Any]:
    """``defaults`` updated with ``given``; an unknown key is a ValueError naming it (and a near miss)."""
    given = dict(given or {})
    known = set(defaults) | set(extra_known)
    unknown = sorted(set(given) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{domain} tokenizer: unknown setting(s) {', '.join(hints)}; "
                         f"known settings: {', '.join(sorted(known))}")
    merged = dict(defaults)
    merged.update(given)
    return merged


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (model files enter the fingerprint through this)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
