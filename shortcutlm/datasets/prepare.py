"""``shortcutlm prepare``: a source and a tokenizer in, WebDataset shards + ``manifest.json`` out.

Python API::

    prepare({"name": "bach_chorales", "limit": 20}, {"domain": "midi"}, "runs/data/chorales", workers=2)

CLI::

    shortcutlm prepare --source bach_chorales [--path P] [--option k=v ...] \
        --tokenizer midi [--set k=v ...] --out DIR [--workers 2] [--spec spec.yaml]

Across machines: ``--tokenizer-only`` once, then ``--num-jobs N --job I`` for every I (anywhere, at
once), then ``--out DIR --merge``; see :mod:`shortcutlm.datasets.parallel`.

What it guarantees:

* the tokenizer is trained first when it needs training (train split only) and saved to
  ``<out>/tokenizer/``; worker processes re-create it from that folder;
* every input ends in a shard or in ``manifest["rejected"]`` with its reason, whether it failed
  while the tokenizer was fitted (then it is not tried again) or while being encoded;
* files are read in ``workers`` worker processes, for encoding and for fitting (MIDI BPE and
  the k-means codec fit on per-file samples; text, read by Python code alone, trains here): a
  reader that crashes (a segfault in libsndfile or symusic) or runs past ``file_timeout_s``
  costs that file only (rejected as "parser crashed (signal 11, SIGSEGV)"), never the run (see
  :mod:`~shortcutlm.datasets.isolation`; ``workers=0`` reads in this process, unprotected).
  Workers are spawned, so a script that calls ``prepare`` needs ``if __name__ == "__main__":``;
* a split left empty (the source has none, or all its documents were rejected) is a warning,
  logged and kept in ``manifest["warnings"]``; a tokenizer that cannot reach its vocabulary
  size on the train split is an error saying so;
* shards and the manifest are written to temp names and renamed, so a killed run leaves
  only whole files; re-running resumes after the last finished shard (checking the
  tokenizer fingerprint and settings) and never writes a document twice.

The jobs, one module each: :mod:`~shortcutlm.datasets.encode` (what the worker processes run and
the checks on what they return), :mod:`~shortcutlm.datasets.tokenizer_fit` (fit, save or reuse the
tokenizer), :mod:`~shortcutlm.datasets.resume` (an earlier run's shards and settings; the scope of
one run or one job), :mod:`~shortcutlm.datasets.shard_loop` (documents into shards, the manifest
after each) and :mod:`~shortcutlm.datasets.prepare_cli` (the command line). This module joins them.

Manifest schema (``manifest.json``)::

    format: "shortcutlm-shards", version: 1, complete: bool, created, updated
    source: the source spec;  tokenizer_settings: the tokenizer spec
    tokenizer: {domain, fingerprint, vocab_size, n_streams, special_ids, folder: "tokenizer", files: [names],
                sha256: {name: digest}}   (a client of a served folder checks each file it fetches)
    dtype: "uint16" | "int32"
    splits: {split: {documents, tokens, shards: [names], <meta sums e.g. bytes / seconds>}}
    shards: [{name, split, sha256, documents, tokens, size, doc_ids, doc_tokens, sums}]
    rejected: [{input, reason, split, doc_id}]    (the reason does not repeat the input)
    warnings: [str]                               (e.g. an empty split)
    notes: [str]                                  (the tokenizer's, e.g. multi-track MIDI merged into one track)
    inputs: {total, documents, rejected}
    found: [str]                                  (where the reader found its data, and which variant)
    last_run: {collect_s, tokenizer_s, encode_s, workers, encoded_documents, encoded_tokens}

``tokens`` counts time steps (positions) per document: for a K-stream layout a document of
shape [K, T] counts T.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.lock import LOCK, folder_lock
from shortcutlm.artifacts.manifest import (TOKENIZER_FOLDER, manifest_path, part_manifest_path,
                                           write_manifest)
from shortcutlm.core.cleanup import removed_if_failed
from shortcutlm.datasets import parallel, prepare_cli
from shortcutlm.datasets.isolation import IsolatedPool
from shortcutlm.datasets.new_manifest import new_manifest
from shortcutlm.datasets.parallel import Job
from shortcutlm.datasets.prepare_cli import configure  # the command's arguments (cli.COMMANDS finds them here)
from shortcutlm.datasets.prepare_common import DEFAULT_SHARD_DOCUMENTS, DEFAULT_SHARD_TOKENS, PrepareError
from shortcutlm.datasets.resume import job_scope, one_job_scope, previous_manifest
from shortcutlm.datasets.shard_loop import encode_scope
from shortcutlm.datasets.sources import READERS, Rejected, read_source
from shortcutlm.datasets.summary import SPLIT_ORDER, split_warnings, summarise
from shortcutlm.datasets.tokenizer_fit import job_tokenizer, tokenizer_for
from shortcutlm.documents import Document, Found
from shortcutlm.tokenizers import Tokenizer, tokenizer_class

__all__ = ["PrepareError", "prepare", "prepare_tokenizer", "configure", "run", "DEFAULT_SHARD_TOKENS",
           "DEFAULT_SHARD_DOCUMENTS"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ the run

def _split_specs(source: dict[str, Any], tokenizer: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    if not isinstance(source, dict) or "name" not in source:
        raise PrepareError("source must be a dict with a 'name' (e.g. {'name': 'text8', 'path': ...})")
    if source["name"] not in READERS:
        raise PrepareError(f"unknown source {source['name']!r}; expected one of {', '.join(READERS)}")
    if not isinstance(tokenizer, dict) or "domain" not in tokenizer:
        raise PrepareError("tokenizer must be a dict with a 'domain' (text, midi or acoustic) plus its settings")
    settings = {k: v for k, v in tokenizer.items() if k != "domain"}
    return dict(source), tokenizer["domain"], settings


def _collect(source: dict[str, Any], cls: type[Tokenizer],
             found: list[str] | None = None) -> tuple[list[Document], list[Rejected]]:
    """All documents and source-level rejections; duplicate ids are rejected, never written twice.
    The reader's lines on where it found its data are appended to ``found``."""
    spec = dict(source)
    if spec["name"] == "folder" and not spec.get("extensions") and cls.extensions:
        spec["extensions"] = list(cls.extensions)
    docs: list[Document] = []
    rejected: list[Rejected] = []
    seen: dict[str, Document] = {}
    notes: list[Found] = []
    for item in read_source(spec, notes):
        if isinstance(item, Rejected):
            rejected.append(item)
        elif item.doc_id in seen:
            rejected.append(Rejected(item.describe(), f"duplicate document id {item.doc_id!r} "
                                     f"(already taken by {seen[item.doc_id].describe()})", item.split, item.doc_id))
        else:
            seen[item.doc_id] = item
            docs.append(item)
    if found is not None:
        found += [note.line() for note in notes]
    if not docs and not rejected:
        raise PrepareError(f"source {spec['name']!r} gave no documents")
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    docs.sort(key=lambda d: (order.get(d.split, len(order)), d.split))  # stable: keeps source order within a split
    return docs, rejected


def _say_found(found: list[str], progress: bool) -> None:
    """The reader's account of where it found the data, before anything is read (kept in the manifest's
    ``found`` too, which ``recipe --no-progress`` prints)."""
    if progress:
        for line in found:
            print(f"found {line}", file=sys.stderr)


def prepare(source: dict[str, Any], tokenizer: dict[str, Any], out_dir: str | Path, workers: int = 2,
            shard_tokens: int = DEFAULT_SHARD_TOKENS, shard_documents: int = DEFAULT_SHARD_DOCUMENTS,
            progress: bool = True, file_timeout_s: float | None = None, job: Job | None = None) -> dict[str, Any]:
    """Tokenize a source into WebDataset shards per split plus ``manifest.json``; returns the manifest.

    ``source``: ``{"name": ..., "path": ..., **options}`` (see :mod:`shortcutlm.datasets.sources`);
    ``tokenizer``: ``{"domain": "text"|"midi"|"acoustic", **settings for from_settings}``.
    A shard closes once it holds ``shard_tokens`` ids (every stream counted, so K-stream
    shards are no larger on disk) or ``shard_documents`` documents. ``workers`` processes read
    the files (0: this process, with no protection from a crashing reader); a file whose reading
    takes longer than ``file_timeout_s`` (None: no limit) is rejected. ``job``: encode only that
    job's part, after :func:`prepare_tokenizer`, into a partial manifest (returned) that
    :func:`shortcutlm.datasets.parallel.merge` joins (see :mod:`shortcutlm.datasets.parallel`).
    """
    if workers < 0:
        raise PrepareError(f"workers must be 0 (read in this process) or more, not {workers}")
    # One run at a time per folder; the jobs of a prepare across machines each lock their own part.
    lock = LOCK if job is None else f"{LOCK}.{job.part}"
    with folder_lock(out_dir, "prepare", lock), IsolatedPool(workers) as pool:
        return _prepare(source, tokenizer, Path(out_dir), pool, shard_tokens, shard_documents, progress,
                        file_timeout_s, job)


def prepare_tokenizer(source: dict[str, Any], tokenizer: dict[str, Any], out_dir: str | Path, workers: int = 2,
                      progress: bool = True, file_timeout_s: float | None = None) -> dict[str, Any]:
    """The first step of a prepare across jobs: train (or build) and save the tokenizer and record the
    plan every job checks itself against, in an unfinished ``manifest.json``; returns it. Running it
    again keeps what is there."""
    if workers < 0:
        raise PrepareError(f"workers must be 0 (read in this process) or more, not {workers}")
    source, domain, settings = _split_specs(source, tokenizer)
    tokenizer_spec = {"domain": domain, **settings}
    out = Path(out_dir)
    with folder_lock(out, "prepare --tokenizer-only"):
        return _prepare_tokenizer(source, tokenizer_spec, domain, settings, out, workers, progress, file_timeout_s)


def _prepare_tokenizer(source: dict[str, Any], tokenizer_spec: dict[str, Any], domain: str, settings: dict[str, Any],
                       out: Path, workers: int, progress: bool, file_timeout_s: float | None) -> dict[str, Any]:
    previous = previous_manifest(out, source, tokenizer_spec)
    found: list[str] = []
    docs, source_rejected = _collect(source, tokenizer_class(domain), found)
    _say_found(found, progress)
    if previous is not None and parallel.PLAN in previous:
        parallel.check_documents(previous[parallel.PLAN], [d.split for d in docs], out)
        return previous
    if previous is not None and previous.get("shards"):
        raise PrepareError(f"{out} already holds shards of a one-job prepare; use another --out for a prepare "
                           "across jobs")
    with IsolatedPool(workers) as pool:
        tok, training = tokenizer_for(out, domain, settings, docs, previous, pool, file_timeout_s, progress)
    training_rejected = [r.as_dict() for r in training.values()]
    if previous is not None and not training:  # the tokenizer was kept: so were its rejections
        ids = {d.doc_id for d in docs}
        training_rejected = [r for r in previous.get("rejected", []) if r.get("doc_id") in ids]
    manifest = new_manifest(source, tokenizer_spec, tok, out / TOKENIZER_FOLDER)
    manifest["found"] = found
    manifest["rejected"] = [r.as_dict() for r in source_rejected] + training_rejected
    manifest[parallel.PLAN] = parallel.make_plan(tok.fingerprint(), [d.split for d in docs],
                                                 [r.as_dict() for r in source_rejected], training_rejected)
    summarise(manifest, len(docs) + len(source_rejected))
    write_manifest(out, manifest)
    return manifest


def _prepare(source: dict[str, Any], tokenizer: dict[str, Any], out: Path, pool: IsolatedPool, shard_tokens: int,
             shard_documents: int, progress: bool, timeout_s: float | None, job: Job | None) -> dict[str, Any]:
    source, domain, settings = _split_specs(source, tokenizer)
    tokenizer_spec = {"domain": domain, **settings}
    cls = tokenizer_class(domain)
    out.mkdir(parents=True, exist_ok=True)
    previous = previous_manifest(out, source, tokenizer_spec)
    plan = parallel.plan_of(previous, out) if job is not None else None

    clock = time.perf_counter()
    found: list[str] = []
    docs, source_rejected = _collect(source, cls, found)
    _say_found(found, progress)
    timings = {"collect_s": time.perf_counter() - clock}
    clock = time.perf_counter()
    if job is None:
        tok, training_rejected = tokenizer_for(out, domain, settings, docs, previous, pool, timeout_s, progress)
        scope = one_job_scope(out, docs, source_rejected, training_rejected, previous)
    else:
        assert plan is not None
        tok = job_tokenizer(out, domain, plan)
        scope = job_scope(out, job, docs, plan, source, tokenizer_spec)
    timings["tokenizer_s"] = time.perf_counter() - clock
    manifest = new_manifest(source, tokenizer_spec, tok, out / TOKENIZER_FOLDER)
    manifest["found"] = found
    if job is not None:
        manifest["job"] = {"index": job.index, "count": job.count, "documents": list(job.bounds(len(docs)))}
    manifest = encode_scope(out, scope, manifest, tok, pool, shard_tokens, shard_documents, progress, timeout_s,
                            timings)
    if job is not None:
        return manifest
    manifest["warnings"] = split_warnings(manifest, Counter(d.split for d in docs))
    for warning in manifest["warnings"]:
        log.warning("prepare %s: %s", source["name"], warning)
    manifest["notes"] = tok.prepare_notes(manifest["splits"])
    for note in manifest["notes"]:
        log.warning("prepare %s: %s", source["name"], note)
    scope.write(manifest)
    if manifest["inputs"]["documents"] == 0:
        reasons = "; ".join(f"{r['input']}: {r['reason']}" for r in manifest["rejected"][:3])
        raise PrepareError(f"prepare wrote no documents ({len(manifest['rejected'])} rejected: {reasons})")
    return manifest


# ------------------------------------------------------------------------------ CLI (arguments: prepare_cli)

def _run_step(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run the step the arguments ask for; returns its manifest and where it was written."""
    job = prepare_cli.job_of(args)
    if args.merge:
        if not args.out:
            raise PrepareError("--merge needs --out (the folder the jobs wrote into)")
        return parallel.merge(args.out), manifest_path(args.out)
    spec = prepare_cli.spec_from_args(args)
    with removed_if_failed(spec["out"]):
        if args.tokenizer_only:
            manifest = prepare_tokenizer(spec["source"], spec["tokenizer"], spec["out"], workers=spec["workers"],
                                         progress=not args.quiet, file_timeout_s=spec["file_timeout_s"])
            return manifest, manifest_path(spec["out"])
        manifest = prepare(spec["source"], spec["tokenizer"], spec["out"], workers=spec["workers"],
                           shard_tokens=spec["shard_tokens"], shard_documents=spec["shard_documents"],
                           progress=not args.quiet, file_timeout_s=spec["file_timeout_s"], job=job)
    where = part_manifest_path(spec["out"], job.index, job.count) if job else manifest_path(spec["out"])
    return manifest, where


def run(args: argparse.Namespace) -> int:
    """``shortcutlm prepare``: the step the arguments ask for, then what it wrote (or the mistake, in one line)."""
    try:
        start = time.perf_counter()
        manifest, where = _run_step(args)
    except prepare_cli.REPORTED as exc:
        return prepare_cli.say_error(exc)
    return prepare_cli.say_result(args, manifest, where, time.perf_counter() - start)
