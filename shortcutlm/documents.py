"""The unit that flows from a source to a tokenizer: one document with a stable id, or the
record of an input that could not become one (and a reader's note of where it found its data).

Kept apart from both sides so that sources (the readers and the embedded corpora) and
tokenizers agree on it without importing each other.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable


@dataclass
class Document:
    """One document of a dataset.

    Exactly one of ``path`` (a file on disk) or ``text`` (in-memory text, e.g. one
    WikiText article or a slice of text8) is set. ``doc_id`` is stable across runs and
    contains no dots (it becomes a WebDataset key). ``split`` is the dataset's own split
    where it has one ("train", "valid", "test").

    ``span``, when set, makes the document one contiguous part ``[start, end)`` of its file or
    text, as fractions of its length in the domain's own unit (text: bytes, moved forward to
    the next word start; audio: samples; MIDI: ticks, moved to the nearest bar line).
    Collections too small to split by file are split this way (see ``datasets/splits.py``).
    """

    doc_id: str
    split: str
    source: str
    path: Path | None = None
    text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    span: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.text is None):
            raise ValueError(f"document {self.doc_id!r}: set exactly one of path or text")
        if "." in self.doc_id:
            raise ValueError(f"document id {self.doc_id!r} must not contain dots (WebDataset key)")
        if self.path is not None:
            self.path = Path(self.path)
        if self.span is not None:
            start, end = (float(x) for x in self.span)
            if not 0.0 <= start < end <= 1.0:
                raise ValueError(f"document {self.doc_id!r}: span {self.span} must satisfy 0 <= start < end <= 1")
            self.span = (start, end)

    def describe(self) -> str:
        """Where this document came from, for error messages and rejection lists."""
        where = str(self.path) if self.path is not None else f"{self.source}:{self.doc_id}"
        if self.span is not None:
            where += f" (part {self.span[0]:.4g}-{self.span[1]:.4g})"
        return where

    def bounds(self, length: int) -> tuple[int, int]:
        """``[start, stop)`` positions of this document's span in a whole of ``length`` units."""
        start, end = self.span or (0.0, 1.0)
        return round(start * length), round(end * length)


@dataclass
class Rejected:
    """An input that did not become a document (or a document that did not become tokens)."""

    input: str
    reason: str
    split: str = ""
    doc_id: str = ""
    #: a file the source passed over without reading it (a type the tokenizer does not read, a broken
    #: link): listed and counted apart from the inputs that failed.
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"input": self.input, "reason": self.reason, "split": self.split, "doc_id": self.doc_id}
        if self.skipped:
            body["skipped"] = True
        return body


@dataclass(frozen=True)
class Found:
    """A reader's account of the data it is about to read: the folder and what it found there
    (see :mod:`shortcutlm.datasets.found`). Readers of published layouts yield one first."""

    source: str
    where: Path
    what: str

    def line(self) -> str:
        return f"{self.source} in {self.where}: {self.what}"


Item = Document | Rejected | Found
Reader = Callable[..., Iterable[Item]]


def safe_id(text: str) -> str:
    """A WebDataset key from any name: no dots, no slashes, no spaces. A byte of a file name that is
    not UTF-8 (a surrogate escape, as Python reads such names) becomes ``%XX``, so the key can be
    written anywhere; the name itself is kept whole in the manifest (JSON escapes it losslessly)."""
    text = re.sub(r"[\udc80-\udcff]", lambda m: f"%{ord(m.group()) - 0xDC00:02X}", text)
    out = re.sub(r"[./\\\s]+", "_", text.strip())
    return out.strip("_") or "doc"
