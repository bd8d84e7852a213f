"""The unit that flows from a source to a tokenizer: one document with a stable id.

Kept apart from both sides so that sources and tokenizers agree on it without
importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Document:
    """One document of a dataset.

    Exactly one of ``path`` (a file on disk) or ``text`` (in-memory text, e.g. one
    WikiText article or a slice of text8) is set. ``doc_id`` is stable across runs and
    contains no dots (it becomes a WebDataset key). ``split`` is the dataset's own split
    where it has one ("train", "valid", "test").
    """

    doc_id: str
    split: str
    source: str
    path: Path | None = None
    text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.path is None) == (self.text is None):
            raise ValueError(f"document {self.doc_id!r}: set exactly one of path or text")
        if "." in self.doc_id:
            raise ValueError(f"document id {self.doc_id!r} must not contain dots (WebDataset key)")
        if self.path is not None:
            self.path = Path(self.path)

    def describe(self) -> str:
        """Where this document came from, for error messages and rejection lists."""
        return str(self.path) if self.path is not None else f"{self.source}:{self.doc_id}"
