"""What a pair collector yields: a pair of halves, or an input left unpaired (or a bad pair) and why."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The kinds of leftover: an input with no partner, a pair whose halves disagree, a pair longer than the
#: context it is prepared for.
UNPAIRED, BAD_PAIR, TOO_LONG = "unpaired", "bad pair", "too long"


@dataclass(frozen=True)
class Half:
    """One side of a pair: a file, or in-memory text (a transcript line)."""

    domain: str
    path: Path | None = None
    text: str | None = None

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower() if self.path is not None else ".txt"

    def describe(self) -> str:
        return str(self.path) if self.path is not None else repr((self.text or "")[:60])


@dataclass(frozen=True)
class Pair:
    """Two halves of one recording, score or utterance; both land in ``split``."""

    pair_id: str
    split: str
    halves: tuple[Half, Half]
    meta: dict[str, Any] = field(default_factory=dict)

    def half(self, domain: str) -> Half | None:
        return next((h for h in self.halves if h.domain == domain), None)


@dataclass(frozen=True)
class Leftover:
    """An input that became no pair: ``kind`` is :data:`UNPAIRED`, :data:`BAD_PAIR` or :data:`TOO_LONG`."""

    input: str
    reason: str
    kind: str = UNPAIRED
    split: str = ""
    pair_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.input, "reason": self.reason, "kind": self.kind, "split": self.split,
                "pair_id": self.pair_id}

    def line(self) -> str:
        return f"{self.kind} {self.input}: {self.reason}"
