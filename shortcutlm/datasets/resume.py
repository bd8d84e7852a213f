"""Resuming a prepare, and the scope one run answers for.

A re-run into the same folder adds to the shards an earlier run finished (their checksums checked)
only when the source and tokenizer settings are the same; a job of a prepare across machines
answers for its slice of the document list and its own partial manifest.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

from shortcutlm.artifacts.manifest import (ShardRecord, has_manifest, manifest_path, part_manifest_path, read_manifest,
                                           read_part_manifest, write_manifest, write_part_manifest)
from shortcutlm.datasets import parallel
from shortcutlm.datasets.parallel import Job
from shortcutlm.datasets.prepare_common import PrepareError
from shortcutlm.datasets.shards import TMP_SUFFIX, sha256_file
from shortcutlm.datasets.sources import Rejected
from shortcutlm.documents import Document


def same_settings(path: Path, previous: dict[str, Any], source: dict[str, Any],
                   tokenizer_spec: dict[str, Any]) -> None:
    """Refuse to add to shards made from other settings."""
    canon = lambda x: json.dumps(x, sort_keys=True, default=str)  # noqa: E731
    for key, now in (("source", source), ("tokenizer_settings", tokenizer_spec)):
        if canon(previous.get(key)) != canon(now):
            raise PrepareError(f"{path.parent} was prepared with {key} {canon(previous.get(key))}, not {canon(now)} "
                               f"({path.name}); use another --out (or delete {path.parent}) to prepare different data")


def previous_manifest(out: Path, source: dict[str, Any], tokenizer_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an earlier run into ``out``; refuses one made from other settings."""
    if not has_manifest(out):
        return None
    previous = read_manifest(out, require_complete=False)
    same_settings(manifest_path(out), previous, source, tokenizer_spec)
    return previous


def keep_finished_shards(out: Path, previous: dict[str, Any], progress: bool, part: str = "") -> list[dict[str, Any]]:
    """Shards of the earlier run that are still whole; others are dropped and redone. A job clears
    only its own unfinished shards: the others' belong to jobs that may be running now."""
    for stale in out.glob(f"*-{part}-*.tar{TMP_SUFFIX}" if part else f"*.tar{TMP_SUFFIX}"):
        stale.unlink()
    kept = []
    for index, entry in enumerate(previous.get("shards", [])):
        record = ShardRecord.from_dict(entry, f"{manifest_path(out)}: shards[{index}]")
        path = out / record.name
        if path.is_file() and sha256_file(path) == record.sha256:
            kept.append(record.to_dict())
        elif progress:
            print(f"shard {record.name} is missing or changed; its documents will be encoded again", file=sys.stderr)
    return kept


@dataclass
class Scope:
    """What one run encodes and where it records it: every document (a one-job prepare) or a job's slice."""

    docs: list[Document]  # the documents this run answers for, in order
    fixed: list[dict[str, Any]]  # rejections listed first and never retried (the source's)
    rejected: dict[str, dict[str, Any]]  # rejections so far by document id (while training, or by an earlier run)
    skip: set[str]  # documents another step accounts for (a job: those the tokenizer step rejected)
    n_inputs: int
    previous: dict[str, Any] | None
    write: Callable[[dict[str, Any]], Path]
    job: Job | None = None

    @property
    def part(self) -> str:
        return self.job.part if self.job else ""


def one_job_scope(out: Path, docs: list[Document], source_rejected: list[Rejected],
                   training_rejected: dict[str, Rejected], previous: dict[str, Any] | None) -> Scope:
    return Scope(docs, [r.as_dict() for r in source_rejected],
                  {k: r.as_dict() for k, r in training_rejected.items()}, set(),
                  len(docs) + len(source_rejected), previous, lambda manifest: write_manifest(out, manifest))


def job_scope(out: Path, job: Job, docs: list[Document], plan: dict[str, Any],
               source: dict[str, Any], tokenizer_spec: dict[str, Any]) -> Scope:
    """Job ``job``'s slice of the document list, and its partial manifest from an earlier sitting."""
    parallel.check_documents(plan, [d.split for d in docs], out)
    start, end = job.bounds(len(docs))
    path = part_manifest_path(out, job.index, job.count)
    previous = read_part_manifest(path) if path.is_file() else None
    if previous is not None:
        same_settings(path, previous, source, tokenizer_spec)
    skip = {r["doc_id"] for r in plan["training_rejected"] if r.get("doc_id")}
    scope = Scope(docs[start:end], [], {}, skip, end - start, previous,
                   lambda manifest: write_part_manifest(out, job.index, job.count, manifest), job)
    return scope
