"""Prepare across machines: the tokenizer once, N jobs that each encode their part, one merge.

CLI (a SLURM array, a Kubernetes indexed job, or N terminals run step 2)::

    shortcutlm prepare --source S --tokenizer T --out D --tokenizer-only          # 1. once
    shortcutlm prepare --source S --tokenizer T --out D --num-jobs N --job I      # 2. I = 0 … N-1, anywhere
    shortcutlm prepare --out D --merge                                            # 3. once every job finished

1. The tokenizer step lists the documents (cheap: no file is decoded), trains the tokenizer on the
   train split and writes ``<out>/tokenizer/`` and an unfinished manifest holding the *plan*: the
   tokenizer's fingerprint, the documents the source lists per split, the inputs the source
   rejected and the train documents that could not be read while fitting.
2. Job I lists the documents again. The list is the same on every machine (splits are a function
   of the document ids and the whole list, never of which job reads a file); the job checks it
   against the plan's counts, loads the saved tokenizer (refusing one whose fingerprint is not the
   plan's) and encodes the I-th contiguous slice of the list into shards named
   ``<split>-p<I>-<n>.tar`` plus its partial manifest. A killed job resumes like a one-job prepare.
3. The merge checks that every part is there, finished, and made with the plan's tokenizer and
   settings, and writes ``manifest.json``: the shards in job order, so each split's token stream
   is the one a one-job prepare writes, and the rejections in the same order too.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from shortcutlm.artifacts.manifest import (ShardRecord, manifest_path, part_manifests, read_manifest,
                                           read_part_manifest, write_manifest)
from shortcutlm.datasets.summary import split_warnings, summarise
from shortcutlm.core.errors import UserError

PLAN = "plan"

log = logging.getLogger(__name__)


class ParallelPrepareError(UserError, ValueError):
    """A prepare job or merge that cannot go as asked: no tokenizer step, parts missing or mismatched."""


@dataclass(frozen=True)
class Job:
    """Job ``index`` of ``count``: it encodes one contiguous slice of the document list."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ParallelPrepareError(f"--job {self.index} --num-jobs {self.count}: need num-jobs >= 1 and "
                                       f"0 <= job < num-jobs")

    @property
    def part(self) -> str:
        """What this job's shard names carry, so every job writes names of its own."""
        return f"p{self.index:05d}"

    def bounds(self, n_documents: int) -> tuple[int, int]:
        """``[start, end)`` of this job's slice: the list cut into ``count`` near-equal runs."""
        return self.index * n_documents // self.count, (self.index + 1) * n_documents // self.count

    def __str__(self) -> str:
        return f"job {self.index} of {self.count}"


def make_plan(fingerprint: str, split_of_documents: Sequence[str], source_rejected: list[dict[str, Any]],
              training_rejected: list[dict[str, Any]]) -> dict[str, Any]:
    """What every job and the merge check themselves against (see the module docstring)."""
    return {"fingerprint": fingerprint, "documents": len(split_of_documents),
            "split_documents": dict(Counter(split_of_documents)),
            "inputs": len(split_of_documents) + len(source_rejected),
            "source_rejected": source_rejected, "training_rejected": training_rejected}


def plan_of(step: dict[str, Any] | None, out: Path) -> dict[str, Any]:
    """The plan the tokenizer step recorded in ``out``'s manifest; refuses a folder without one."""
    first = f"run `shortcutlm prepare … --tokenizer-only --out {out}` first (the same source and tokenizer)"
    if step is None:
        raise ParallelPrepareError(f"{out}: no tokenizer step here ({manifest_path(out).name} is missing); {first}")
    if PLAN not in step:
        raise ParallelPrepareError(f"{manifest_path(out)} was written by a one-job prepare, not by a tokenizer "
                                   f"step; use another --out for a prepare across jobs")
    return step[PLAN]


def check_documents(plan: dict[str, Any], split_of_documents: Sequence[str], out: Path) -> None:
    """Refuse a job whose machine lists other documents than the tokenizer step saw."""
    here = dict(Counter(split_of_documents))
    if len(split_of_documents) != plan["documents"] or here != plan["split_documents"]:
        raise ParallelPrepareError(
            f"the source lists {len(split_of_documents)} documents here ({_counts(here)}), but "
            f"{plan['documents']} ({_counts(plan['split_documents'])}) when the tokenizer step ran "
            f"({manifest_path(out)}); every job must see the same input files")


def _counts(per_split: dict[str, int]) -> str:
    return ", ".join(f"{split} {n}" for split, n in sorted(per_split.items())) or "none"


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _finished_parts(out: Path, step: dict[str, Any]) -> list[tuple[Job, dict[str, Any]]]:
    """Every job's partial manifest, in job order, once all of them are present, finished and consistent."""
    found = part_manifests(out)
    if not found:
        raise ParallelPrepareError(f"{out}: no job has written a partial manifest yet; run "
                                   "`shortcutlm prepare … --num-jobs N --job I` for every I first")
    counts = sorted({count for _, count in found})
    if len(counts) > 1:
        raise ParallelPrepareError(f"{out} holds parts of prepares in {' and '.join(map(str, counts))} jobs; "
                                   "remove the partial manifests of the split you gave up")
    count = counts[0]
    missing = [str(i) for i in range(count) if (i, count) not in found]
    if missing:
        raise ParallelPrepareError(f"{out}: job(s) {', '.join(missing)} of {count} have not written their "
                                   "partial manifest; run them, then merge again")
    parts = []
    for (index, _), path in found.items():
        job, part = Job(index, count), read_part_manifest(path)
        for key in ("source", "tokenizer_settings"):
            if _canon(part.get(key)) != _canon(step.get(key)):
                raise ParallelPrepareError(f"{job} ({path}) was run with {key} {_canon(part.get(key))}, but the "
                                           f"tokenizer step with {_canon(step.get(key))}; re-run that job")
        theirs = part.get("tokenizer", {}).get("fingerprint")
        if theirs != step[PLAN]["fingerprint"]:
            raise ParallelPrepareError(f"{job} ({path}) used tokenizer fingerprint {theirs}, not the tokenizer "
                                       f"step's {step[PLAN]['fingerprint']}; re-run that job")
        if not part.get("complete"):
            raise ParallelPrepareError(f"{job} did not finish ({path}); re-run it with the same arguments to resume")
        for index, entry in enumerate(part["shards"]):
            record = ShardRecord.from_dict(entry, f"{path}: shards[{index}]")
            shard = out / record.name
            if not shard.is_file() or shard.stat().st_size != record.size:
                raise ParallelPrepareError(f"shard {shard} of {job} is missing or changed; re-run that job")
        parts.append((job, part))
    return parts


def merge(out_dir: str | Path) -> dict[str, Any]:
    """Write the one ``manifest.json`` of a prepare across jobs from their partial manifests; returns it."""
    out = Path(out_dir)
    step = read_manifest(out, require_complete=False) if manifest_path(out).is_file() else None
    plan = plan_of(step, out)
    assert step is not None
    parts = _finished_parts(out, step)
    manifest = {key: value for key, value in step.items() if key not in ("last_run", "warnings")}
    manifest["shards"] = [record for _, part in parts for record in part["shards"]]
    manifest["rejected"] = (plan["source_rejected"] + plan["training_rejected"]
                            + [r for _, part in parts for r in part["rejected"]])
    summarise(manifest, plan["inputs"])
    runs = [part.get("last_run", {}) for _, part in parts]
    manifest["last_run"] = {"jobs": len(parts), "encode_s": max(r.get("encode_s", 0.0) for r in runs),
                            "encoded_documents": sum(r.get("encoded_documents", 0) for r in runs),
                            "encoded_tokens": sum(r.get("encoded_tokens", 0) for r in runs)}
    manifest["warnings"] = split_warnings(manifest, plan["split_documents"])
    for warning in manifest["warnings"]:
        log.warning("prepare %s: %s", manifest["source"].get("name"), warning)
    manifest["complete"] = True
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if manifest["inputs"]["documents"] == 0:
        raise ParallelPrepareError(f"the {len(parts)} jobs wrote no documents ({len(manifest['rejected'])} rejected)")
    write_manifest(out, manifest)
    return manifest
