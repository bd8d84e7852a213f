"""Single-domain documents mixed into a paired folder's train split (the joint model's data beside its pairs).

A paired recipe names them under ``pairs.unpaired``::

    pairs:
      unpaired:
        - {domain: midi, source: {name: bach_chorales, limit: 200}}
        - {domain: text, source: {name: folder, path: data/books}}

Each source is prepared by the ordinary ``prepare`` into ``<out>/unpaired/<n>-<source>`` **with the
pairs' own tokenizer of that domain** (``prepare --tokenizer-from``), so a score read alone and a score
read as a pair's half are the same ids. Its train documents join the pairs' train split written as a
target without a source, ``<task marker> document``, for the first task whose target is that domain:
the form ``alone`` already trains, so a loss on targets only (``train.target_only``) counts every one
of their tokens. Valid and test stay the pairs' own, so a run with unpaired data is measured on
exactly the sequences a run without it is.

Leakage is refused by name: a document whose id is the origin of a valid or test pair (the chorale a
held-out window was cut from, the utterance a held-out pair was read from) is left out and listed.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shortcutlm.artifacts.manifest import TOKENIZER_FOLDER
from shortcutlm.datasets.prepare import prepare
from shortcutlm.datasets.tokenizer_fit import tokenizer_from
from shortcutlm.documents import safe_id
from shortcutlm.pairs.records import Pair
from shortcutlm.pairs.shards import folder_documents
from shortcutlm.pairs.tasks import PairError, Task
from shortcutlm.tokenizers.paired import target_alone
from shortcutlm.tokenizers.composite import CompositeTokenizer

UNPAIRED_FOLDER = "unpaired"
KEYS = {"domain", "source"}


def origin(pair: Pair) -> str:
    """What a pair was cut or read from, as a source's document id names it (a chorale, an utterance)."""
    return str(pair.meta.get("chorale") or pair.pair_id)


@dataclass
class UnpairedPart:
    """One unpaired source as it went into the train split."""

    domain: str
    source: dict[str, Any]
    task: str
    folder: str
    documents: int = 0
    tokens: int = 0
    held_out: list[str] = field(default_factory=list)
    rejected: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "source": self.source, "written_as": f"target of {self.task}, no source",
                "folder": self.folder, "documents": self.documents, "tokens": self.tokens,
                "left_out_held_out": self.held_out, "rejected_by_prepare": self.rejected}


def check_unpaired(entries: Any, domains: set[str], wanted: list[Task]) -> list[tuple[dict[str, Any], Task]]:
    """Each entry with the task its documents are written for; one line naming the entry otherwise."""
    if entries in (None, []):
        return []
    if not isinstance(entries, list):
        raise PairError("pairs.unpaired: give a list of {domain: ..., source: {...}}")
    checked = []
    for number, entry in enumerate(entries):
        where = f"pairs.unpaired[{number}]"
        if not isinstance(entry, dict) or set(entry) - KEYS or not isinstance(entry.get("source"), dict) \
                or not entry["source"].get("name"):
            raise PairError(f"{where}: give {{domain: midi|text|acoustic, source: {{name: ..., ...}}}}, not {entry!r}")
        domain = entry.get("domain")
        if domain not in domains:
            raise PairError(f"{where}: domain {domain!r} is not one the pairs hold ({', '.join(sorted(domains))}); "
                            "its documents need the pairs' tokenizer of that domain")
        task = next((t for t in wanted if t.target == domain), None)
        if task is None:
            raise PairError(f"{where}: no task of this recipe writes {domain} as its target "
                            f"({', '.join(t.name for t in wanted)}), so {domain} documents would carry no loss")
        checked.append((entry, task))
    return checked


def unpaired_documents(entries: list[tuple[dict[str, Any], Task]], out: Path, joint: CompositeTokenizer,
                       pairs: list[Pair], parts: Path, workers: int, progress: bool,
                       reports: list[UnpairedPart]) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    """``(key, joint ids, meta)`` of every unpaired train document, each source prepared first with the
    pairs' tokenizer of its domain (under ``parts/<domain>``); what each source gave goes to ``reports``."""
    held_out = {origin(p) for p in pairs if p.split != "train"}
    for number, (entry, task) in enumerate(entries):
        source, domain = dict(entry["source"]), str(entry["domain"])
        folder = out / UNPAIRED_FOLDER / f"{number}-{safe_id(str(source['name']))}"
        manifest = prepare(source, tokenizer_from(parts / domain / TOKENIZER_FOLDER), folder, workers=workers,
                           progress=progress)
        report = UnpairedPart(domain, source, task.name, folder.relative_to(out).as_posix(),
                              rejected=len(manifest.get("rejected") or []))
        reports.append(report)
        for key, ids in folder_documents(folder, "train"):
            if key in held_out:
                report.held_out.append(key)
                continue
            report.documents += 1
            report.tokens += int(ids.shape[-1])
            yield (f"u{number}-{key}", target_alone(joint, task.name, domain, ids),
                   {"unpaired": True, "domain": domain, "task": task.name, "doc_id": key, "split": "train",
                    "source_tokens": 0, "target_tokens": int(ids.shape[-1]), "alone": True})
