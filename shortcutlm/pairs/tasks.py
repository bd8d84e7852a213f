"""The four tasks over pairs: which domain is the source, which the target, and how a target is scored.

Synthesis renders a score (MIDI → audio), transcription writes the score of a recording (audio →
MIDI), speech reads a line (text → audio), and speech transcription writes what was said (audio →
text). A pair of a score and its rendering serves the first two, a transcript and its speech the
other two: training mixes both directions of each pair.
"""
from __future__ import annotations

from dataclasses import dataclass

from shortcutlm.core.errors import UserError


class PairError(UserError, ValueError):
    """A pairs folder, task or prompt cannot be used as asked; the message names it."""


@dataclass(frozen=True)
class Task:
    name: str
    source: str
    target: str
    #: the field's metric for the target (:mod:`shortcutlm.pairs.metrics`)
    metric: str


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("synthesize", "midi", "acoustic", "spectral"),
    Task("transcribe", "acoustic", "midi", "notes"),
    Task("speak", "text", "acoustic", "spectral"),
    Task("transcribe-speech", "acoustic", "text", "words"),
)}


def task_named(name: str) -> Task:
    """The task of that name, or one line listing the four."""
    if name not in TASKS:
        raise PairError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]


def tasks_between(domains: set[str] | frozenset[str]) -> list[Task]:
    """The tasks whose source and target are both among ``domains`` (both directions of a pair)."""
    return [t for t in TASKS.values() if {t.source, t.target} <= set(domains)]
