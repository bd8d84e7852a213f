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
    inputs: {total, documents, rejected}
    last_run: {collect_s, tokenizer_s, encode_s, workers, encoded_documents, encoded_tokens}

``tokens`` counts time steps (positions) per document: for a K-stream layout a document of
shape [K, T] counts T.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from shortcutlm.artifacts.manifest import (FORMAT, MANIFEST, TOKENIZER_FOLDER, VERSION, has_manifest, manifest_path,
                                           part_manifest_path, read_manifest, read_part_manifest, write_manifest,
                                           write_part_manifest)
from shortcutlm.artifacts.lock import LOCK, folder_lock
from shortcutlm.cleanup import removed_if_failed
from shortcutlm.config_schema import yaml_file, yaml_text
from shortcutlm.datasets import parallel
from shortcutlm.datasets.isolation import Crashed, IsolatedPool
from shortcutlm.datasets.parallel import Job
from shortcutlm.datasets.shards import TMP_SUFFIX, ShardRecord, ShardWriter, sha256_file, token_dtype
from shortcutlm.datasets.sources import READERS, Rejected, read_source
from shortcutlm.datasets.summary import SPLIT_ORDER, split_warnings, summarise
from shortcutlm.documents import Document
from shortcutlm.errors import UserError
from shortcutlm.tokenizers import Tokenizer, load_tokenizer, tokenizer_class

DEFAULT_SHARD_TOKENS = 1 << 22
DEFAULT_SHARD_DOCUMENTS = 4096
#: The tokenizer spec key of ``--tokenizer-from``: encode with a saved tokenizer (a checkpoint's), no training.
TOKENIZER_FROM = "from"

log = logging.getLogger(__name__)


class PrepareError(UserError, ValueError):
    """A prepare run that cannot go as asked: a bad spec, no documents, no readable train file, nothing written."""


# ------------------------------------------------------------------------------ in the workers

_WORKER: dict[str, Tokenizer] = {}


def _setup_worker(domain: str, settings: dict[str, Any] | None, folder: str | None, threads: int) -> None:
    """Worker set-up: the saved tokenizer from ``folder``, or (for training) a fresh one from settings."""
    _WORKER["tokenizer"] = load_tokenizer(folder) if folder else tokenizer_class(domain).from_settings(dict(settings or {}))
    if threads and "torch" in sys.modules:  # keep workers on shared cores from oversubscribing
        sys.modules["torch"].set_num_threads(threads)


def _encode_task(doc: Document) -> tuple[np.ndarray | None, dict[str, Any] | str]:
    return _encode(doc, _WORKER["tokenizer"])


def _sample_task(doc: Document) -> tuple[bool, Any]:
    """``(True, training sample)`` or ``(False, reason)``: a bad file is an answer, not an exception."""
    try:
        return True, _WORKER["tokenizer"].training_sample(doc)
    except Exception as exc:
        return False, _message(exc)


# ------------------------------------------------------------------------------ encoding

def _message(exc: Exception) -> str:
    message = str(exc).strip() or type(exc).__name__
    return message if type(exc).__name__ == "TokenizerError" else f"{type(exc).__name__}: {message}"


def _reason(doc: Document, message: str) -> str:
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


def _threads(workers: int) -> int:
    """torch threads per worker process (0: reading in this process, leave its threads alone)."""
    return max(1, (os.cpu_count() or 1) // workers) if workers else 0


def _encoded_stream(docs: list[Document], pool: IsolatedPool, folder: Path, domain: str,
                    timeout_s: float | None) -> Iterator[tuple[Document, np.ndarray | None, Any]]:
    """Encoded documents in input order, so shard contents are reproducible; a document whose
    worker crashed comes back with the crash as its reason."""
    if not docs:
        return
    pool.setup(_setup_worker, domain, None, str(folder), _threads(pool.workers))
    stream = pool.imap(_encode_task, docs, timeout_s)
    try:
        for doc, answer in stream:
            yield (doc, None, answer.reason()) if isinstance(answer, Crashed) else (doc, *answer)
    finally:
        stream.close()


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


def _collect(source: dict[str, Any], cls: type[Tokenizer]) -> tuple[list[Document], list[Rejected]]:
    """All documents and source-level rejections; duplicate ids are rejected, never written twice."""
    spec = dict(source)
    if spec["name"] == "folder" and not spec.get("extensions") and cls.extensions:
        spec["extensions"] = list(cls.extensions)
    docs: list[Document] = []
    rejected: list[Rejected] = []
    seen: dict[str, Document] = {}
    for item in read_source(spec):
        if isinstance(item, Rejected):
            rejected.append(item)
        elif item.doc_id in seen:
            rejected.append(Rejected(item.describe(), f"duplicate document id {item.doc_id!r} "
                                     f"(already taken by {seen[item.doc_id].describe()})", item.split, item.doc_id))
        else:
            seen[item.doc_id] = item
            docs.append(item)
    if not docs and not rejected:
        raise PrepareError(f"source {spec['name']!r} gave no documents")
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    docs.sort(key=lambda d: (order.get(d.split, len(order)), d.split))  # stable: keeps source order within a split
    return docs, rejected


def _training_samples(tokenizer: Tokenizer, train: list[Document], pool: IsolatedPool, settings: dict[str, Any],
                      timeout_s: float | None) -> tuple[list[Any], dict[str, Rejected]]:
    """Each train document read in a worker (in order, up to the tokenizer's limit): samples and rejections."""
    pool.setup(_setup_worker, tokenizer.domain, settings, None, _threads(pool.workers))
    samples: list[Any] = []
    rejected: dict[str, Rejected] = {}
    limit = tokenizer.max_training_documents
    stream = pool.imap(_sample_task, train, timeout_s)
    try:
        for doc, answer in stream:
            ok, value = (False, answer.reason()) if isinstance(answer, Crashed) else answer
            if ok:
                samples.append(value)
                if limit is not None and len(samples) >= limit:
                    break
            else:
                rejected[doc.doc_id] = Rejected(doc.describe(), _reason(doc, value), doc.split, doc.doc_id)
    finally:
        stream.close()
    return samples, rejected


def _train(tokenizer: Tokenizer, docs: list[Document], pool: IsolatedPool, settings: dict[str, Any],
           timeout_s: float | None, progress: bool) -> dict[str, Rejected]:
    """Fit the tokenizer on the train split; returns the train documents rejected while reading them."""
    train = [d for d in docs if d.split == "train"]
    if not train:
        raise PrepareError(f"the {tokenizer.domain} tokenizer needs training but the source has no train documents")
    if progress:
        print(f"training the {tokenizer.domain} tokenizer on {len(train)} train documents …", file=sys.stderr)
    if not tokenizer.trains_on_samples:  # text: read in this process by Python code, no native parser
        by_id = {d.doc_id: d for d in train}
        skipped = tokenizer.train(train)
        return {k: Rejected(by_id[k].describe(), _reason(by_id[k], why), "train", k) for k, why in skipped.items()}
    samples, rejected = _training_samples(tokenizer, train, pool, settings, timeout_s)
    if not samples:
        example = next(iter(rejected.values()))
        raise PrepareError(f"the {tokenizer.domain} tokenizer needs training but none of the {len(train)} train "
                         f"documents could be read (e.g. {example.input}: {example.reason})")
    tokenizer.fit(samples)
    return rejected


def _tokenizer_for(out: Path, domain: str, settings: dict[str, Any], docs: list[Document],
                   previous: dict[str, Any] | None, pool: IsolatedPool, timeout_s: float | None,
                   progress: bool) -> tuple[Tokenizer, dict[str, Rejected]]:
    """Reuse the saved tokenizer on resume (checking its fingerprint), else build, train and save one.
    Also returns the train documents that could not be read while training (they are rejected)."""
    folder = out / TOKENIZER_FOLDER
    if previous is not None and (folder / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(folder)
        tokenizer.check_fingerprint(previous["tokenizer"]["fingerprint"], f"the partial shards in {out}")
        if tokenizer.domain != domain:
            raise PrepareError(f"{folder} holds a {tokenizer.domain} tokenizer, not {domain}")
        return tokenizer, {}
    if TOKENIZER_FROM in settings:  # prepare --tokenizer-from: a saved tokenizer, used as it is (no training)
        tokenizer = _saved_tokenizer(settings[TOKENIZER_FROM], domain)
    else:
        tokenizer = tokenizer_class(domain).from_settings(dict(settings))
    rejected: dict[str, Rejected] = {}
    if tokenizer.needs_training:
        rejected = _train(tokenizer, docs, pool, settings, timeout_s, progress)
    if previous is not None and previous.get("shards"):
        # The saved tokenizer is gone but shards exist: only an identical mapping may add to them.
        tokenizer.check_fingerprint(previous["tokenizer"]["fingerprint"], f"the partial shards in {out}")
    tokenizer.save(folder)
    return tokenizer, rejected


def saved_tokenizer_folder(path: str | Path) -> Path:
    """The saved tokenizer ``--tokenizer-from PATH`` names: PATH itself, or the ``tokenizer/`` folder of a
    checkpoint or shard folder at PATH."""
    path = Path(path).expanduser()
    for folder in (path, path / TOKENIZER_FOLDER):
        if (folder / "tokenizer.json").is_file():
            return folder
    raise PrepareError(f"--tokenizer-from {path}: no saved tokenizer there (no tokenizer.json in it or in its "
                       f"{TOKENIZER_FOLDER}/); give a checkpoint folder, a prepared shard folder or a tokenizer folder")


def tokenizer_from(path: str | Path) -> dict[str, Any]:
    """The tokenizer spec of ``prepare --tokenizer-from PATH``: the saved tokenizer's domain and where it is."""
    folder = saved_tokenizer_folder(path)
    return {"domain": _saved_tokenizer(folder, None).domain, TOKENIZER_FROM: str(folder.resolve())}


def _saved_tokenizer(path: str | Path, domain: str | None) -> Tokenizer:
    folder = saved_tokenizer_folder(path)
    try:
        tokenizer = load_tokenizer(folder)
    except (OSError, ValueError, KeyError) as err:
        raise PrepareError(f"--tokenizer-from {folder}: unreadable saved tokenizer ({err})") from err
    if domain is not None and tokenizer.domain != domain:
        raise PrepareError(f"--tokenizer-from {folder} holds a {tokenizer.domain} tokenizer, not {domain}")
    return tokenizer


def _tokenizer_files(folder: Path) -> list[str]:
    """The saved tokenizer's files, listed so a copy served by a web server can be fetched file by file."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix != ".tmp")


def _empty_manifest(source: dict[str, Any], tokenizer_spec: dict[str, Any], tokenizer: Tokenizer,
                    folder: Path) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "format": FORMAT, "version": VERSION, "complete": False, "created": now, "updated": now,
        "source": source, "tokenizer_settings": tokenizer_spec,
        "tokenizer": {"domain": tokenizer.domain, "fingerprint": tokenizer.fingerprint(),
                      "vocab_size": int(tokenizer.vocab_size), "n_streams": int(tokenizer.n_streams),
                      "special_ids": {k: int(v) for k, v in tokenizer.special_ids.items()},
                      "folder": TOKENIZER_FOLDER, "files": _tokenizer_files(folder),
                      "sha256": {name: sha256_file(folder / name) for name in _tokenizer_files(folder)}},
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "splits": {}, "shards": [], "rejected": [], "inputs": {},
    }


def _same_settings(path: Path, previous: dict[str, Any], source: dict[str, Any],
                   tokenizer_spec: dict[str, Any]) -> None:
    """Refuse to add to shards made from other settings."""
    canon = lambda x: json.dumps(x, sort_keys=True, default=str)  # noqa: E731
    for key, now in (("source", source), ("tokenizer_settings", tokenizer_spec)):
        if canon(previous.get(key)) != canon(now):
            raise PrepareError(f"{path.parent} was prepared with {key} {canon(previous.get(key))}, not {canon(now)} "
                               f"({path.name}); use another --out (or delete {path.parent}) to prepare different data")


def _previous(out: Path, source: dict[str, Any], tokenizer_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an earlier run into ``out``; refuses one made from other settings."""
    if not has_manifest(out):
        return None
    previous = read_manifest(out, require_complete=False)
    _same_settings(manifest_path(out), previous, source, tokenizer_spec)
    return previous


def _keep_finished_shards(out: Path, previous: dict[str, Any], progress: bool, part: str = "") -> list[dict[str, Any]]:
    """Shards of the earlier run that are still whole; others are dropped and redone. A job clears
    only its own unfinished shards: the others' belong to jobs that may be running now."""
    for stale in out.glob(f"*-{part}-*.tar{TMP_SUFFIX}" if part else f"*.tar{TMP_SUFFIX}"):
        stale.unlink()
    kept = []
    for record in previous.get("shards", []):
        path = out / record["name"]
        if path.is_file() and sha256_file(path) == record["sha256"]:
            kept.append(record)
        elif progress:
            print(f"shard {record['name']} is missing or changed; its documents will be encoded again", file=sys.stderr)
    return kept


@dataclass
class _Scope:
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
    previous = _previous(out, source, tokenizer_spec)
    docs, source_rejected = _collect(source, tokenizer_class(domain))
    if previous is not None and parallel.PLAN in previous:
        parallel.check_documents(previous[parallel.PLAN], [d.split for d in docs], out)
        return previous
    if previous is not None and previous.get("shards"):
        raise PrepareError(f"{out} already holds shards of a one-job prepare; use another --out for a prepare "
                           "across jobs")
    with IsolatedPool(workers) as pool:
        tok, training = _tokenizer_for(out, domain, settings, docs, previous, pool, file_timeout_s, progress)
    training_rejected = [r.as_dict() for r in training.values()]
    if previous is not None and not training:  # the tokenizer was kept: so were its rejections
        ids = {d.doc_id for d in docs}
        training_rejected = [r for r in previous.get("rejected", []) if r.get("doc_id") in ids]
    manifest = _empty_manifest(source, tokenizer_spec, tok, out / TOKENIZER_FOLDER)
    manifest["rejected"] = [r.as_dict() for r in source_rejected] + training_rejected
    manifest[parallel.PLAN] = parallel.make_plan(tok.fingerprint(), [d.split for d in docs],
                                                 [r.as_dict() for r in source_rejected], training_rejected)
    summarise(manifest, len(docs) + len(source_rejected))
    write_manifest(out, manifest)
    return manifest


def _one_job_scope(out: Path, docs: list[Document], source_rejected: list[Rejected],
                   training_rejected: dict[str, Rejected], previous: dict[str, Any] | None) -> _Scope:
    return _Scope(docs, [r.as_dict() for r in source_rejected],
                  {k: r.as_dict() for k, r in training_rejected.items()}, set(),
                  len(docs) + len(source_rejected), previous, lambda manifest: write_manifest(out, manifest))


def _job_tokenizer(out: Path, domain: str, plan: dict[str, Any]) -> Tokenizer:
    """The tokenizer the tokenizer step saved, once its fingerprint is the plan's."""
    folder = out / TOKENIZER_FOLDER
    if not (folder / "tokenizer.json").is_file():
        raise PrepareError(f"{folder}: no saved tokenizer; run `shortcutlm prepare … --tokenizer-only --out {out}` "
                           "first")
    tok = load_tokenizer(folder)
    if tok.domain != domain:
        raise PrepareError(f"{folder} holds a {tok.domain} tokenizer, not {domain}")
    tok.check_fingerprint(plan["fingerprint"], f"the tokenizer step's plan in {manifest_path(out)}")
    return tok


def _job_scope(out: Path, job: Job, docs: list[Document], plan: dict[str, Any],
               source: dict[str, Any], tokenizer_spec: dict[str, Any]) -> _Scope:
    """Job ``job``'s slice of the document list, and its partial manifest from an earlier sitting."""
    parallel.check_documents(plan, [d.split for d in docs], out)
    start, end = job.bounds(len(docs))
    path = part_manifest_path(out, job.index, job.count)
    previous = read_part_manifest(path) if path.is_file() else None
    if previous is not None:
        _same_settings(path, previous, source, tokenizer_spec)
    skip = {r["doc_id"] for r in plan["training_rejected"] if r.get("doc_id")}
    scope = _Scope(docs[start:end], [], {}, skip, end - start, previous,
                   lambda manifest: write_part_manifest(out, job.index, job.count, manifest), job)
    return scope


def _prepare(source: dict[str, Any], tokenizer: dict[str, Any], out: Path, pool: IsolatedPool, shard_tokens: int,
             shard_documents: int, progress: bool, timeout_s: float | None, job: Job | None) -> dict[str, Any]:
    source, domain, settings = _split_specs(source, tokenizer)
    tokenizer_spec = {"domain": domain, **settings}
    cls = tokenizer_class(domain)
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous(out, source, tokenizer_spec)
    plan = parallel.plan_of(previous, out) if job is not None else None

    clock = time.perf_counter()
    docs, source_rejected = _collect(source, cls)
    timings = {"collect_s": time.perf_counter() - clock}
    clock = time.perf_counter()
    if job is None:
        tok, training_rejected = _tokenizer_for(out, domain, settings, docs, previous, pool, timeout_s, progress)
        scope = _one_job_scope(out, docs, source_rejected, training_rejected, previous)
    else:
        assert plan is not None
        tok = _job_tokenizer(out, domain, plan)
        scope = _job_scope(out, job, docs, plan, source, tokenizer_spec)
    timings["tokenizer_s"] = time.perf_counter() - clock
    manifest = _empty_manifest(source, tokenizer_spec, tok, out / TOKENIZER_FOLDER)
    if job is not None:
        manifest["job"] = {"index": job.index, "count": job.count, "documents": list(job.bounds(len(docs)))}
    manifest = _encode_scope(out, scope, manifest, tok, pool, shard_tokens, shard_documents, progress, timeout_s,
                             timings)
    if job is not None:
        return manifest
    manifest["warnings"] = split_warnings(manifest, Counter(d.split for d in docs))
    for warning in manifest["warnings"]:
        log.warning("prepare %s: %s", source["name"], warning)
    scope.write(manifest)
    if manifest["inputs"]["documents"] == 0:
        reasons = "; ".join(f"{r['input']}: {r['reason']}" for r in manifest["rejected"][:3])
        raise PrepareError(f"prepare wrote no documents ({len(manifest['rejected'])} rejected: {reasons})")
    return manifest


def _encode_scope(out: Path, scope: _Scope, manifest: dict[str, Any], tok: Tokenizer, pool: IsolatedPool,
                  shard_tokens: int, shard_documents: int, progress: bool, timeout_s: float | None,
                  timings: dict[str, float]) -> dict[str, Any]:
    """Encode the scope's documents that no earlier sitting finished into shards, recording each."""
    from tqdm import tqdm

    dtype = token_dtype(tok.vocab_size)
    done: set[str] = set()
    rejected = scope.rejected
    previous = scope.previous
    if previous is not None:
        manifest["created"] = previous.get("created", manifest["created"])
        manifest["shards"] = _keep_finished_shards(out, previous, progress, scope.part)
        done = {doc_id for record in manifest["shards"] for doc_id in record["doc_ids"]}
        # Documents the tokenizer rejected before are not retried: same tokenizer, same answer.
        current = {d.doc_id for d in scope.docs}
        from_source = {r["input"] for r in scope.fixed}  # listed anew by this run (a duplicate shares an id)
        rejected = {r["doc_id"]: r for r in previous.get("rejected", [])
                    if r.get("doc_id") in current and r["doc_id"] not in done and r["input"] not in from_source}
    pending = [d for d in scope.docs if d.doc_id not in done and d.doc_id not in rejected and d.doc_id not in scope.skip]

    next_index: dict[str, int] = defaultdict(int)
    for record in manifest["shards"]:
        next_index[record["split"]] = max(next_index[record["split"]], int(record["name"].rsplit("-", 1)[1][:6]) + 1)

    def flush() -> None:
        manifest["rejected"] = scope.fixed + list(rejected.values())
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        summarise(manifest, scope.n_inputs)
        scope.write(manifest)

    flush()  # records the tokenizer fingerprint before any shard exists
    writer: ShardWriter | None = None
    sums: dict[str, float] = {}

    def close() -> None:
        nonlocal writer, sums
        if writer is None:
            return
        record: ShardRecord = writer.finish()
        manifest["shards"].append({**record.as_dict(), "sums": sums})
        next_index[record.split] += 1
        writer, sums = None, {}
        flush()

    clock, encoded = time.perf_counter(), {"documents": 0, "tokens": 0}
    what = manifest["source"]["name"] + (f" ({scope.job})" if scope.job else "")
    bar = tqdm(total=len(pending), desc=f"prepare {what}", unit="doc", disable=not progress, mininterval=1.0)
    stream = _encoded_stream(pending, pool, out / TOKENIZER_FOLDER, tok.domain, timeout_s)
    try:
        for doc, tokens, info in stream:
            bar.update(1)
            if tokens is None:
                rejected[doc.doc_id] = Rejected(doc.describe(), _reason(doc, str(info)), doc.split, doc.doc_id).as_dict()
                continue
            if writer is not None and writer.split != doc.split:
                close()
            if writer is None:
                writer = ShardWriter(out, doc.split, next_index[doc.split], dtype, scope.part)
            meta = {"source": doc.source, "split": doc.split, "doc_id": doc.doc_id, **info}
            if doc.meta:
                meta["info"] = doc.meta
            writer.add(doc.doc_id, tokens, meta)
            encoded["documents"] += 1
            encoded["tokens"] += int(tokens.shape[-1])
            for key, value in info.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    sums[key] = sums.get(key, 0) + value
            if writer.values >= shard_tokens or len(writer.doc_ids) >= shard_documents:
                close()
        close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        stream.close()  # stops the worker pool at once on errors and interrupts
        bar.close()
    manifest["complete"] = True
    # What this run did (a resumed run only counts its own work): for benchmarks and logs.
    manifest["last_run"] = {**timings, "encode_s": time.perf_counter() - clock, "workers": pool.workers,
                            "encoded_documents": encoded["documents"], "encoded_tokens": encoded["tokens"]}
    flush()
    return manifest


# ------------------------------------------------------------------------------ CLI

def _parse_pairs(pairs: Iterable[str], what: str) -> dict[str, Any]:
    """``k=v`` pairs; values are read as YAML scalars / lists (``limit=20``, ``fractions=[90,5,5]``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PrepareError(f"{what} {pair!r}: expected key=value")
        out[key.strip()] = yaml_text(value, f"{what} {pair}") if value.strip() else ""
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", help="JSON or YAML file with 'source', 'tokenizer' and optionally 'out', 'workers'")
    parser.add_argument("--source", help=f"one of: {', '.join(READERS)}")
    parser.add_argument("--path", help="where the dataset lies (its published layout)")
    parser.add_argument("--option", action="append", default=[], metavar="K=V", help="source option, repeatable")
    parser.add_argument("--tokenizer", metavar="DOMAIN", help="text, midi or acoustic")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="tokenizer setting, repeatable")
    parser.add_argument("--tokenizer-from", metavar="CKPT",
                        help="encode with the saved tokenizer of a checkpoint (or shard) folder, untrained and "
                             "unchanged, so the shards fit the checkpoint (for train --init-from); instead of "
                             "--tokenizer and --set")
    parser.add_argument("--out", help=f"output folder for shards, {MANIFEST} and {TOKENIZER_FOLDER}/")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes that read and encode files (default 2; 0: this process, "
                             "with no protection from a reader that crashes)")
    parser.add_argument("--file-timeout", type=float, default=None, metavar="SECONDS",
                        help="reject a file whose reading takes longer than this (default: no limit)")
    parser.add_argument("--shard-tokens", type=int, default=None,
                        help=f"close a shard at this many ids (default {DEFAULT_SHARD_TOKENS})")
    parser.add_argument("--shard-documents", type=int, default=None,
                        help=f"close a shard at this many documents (default {DEFAULT_SHARD_DOCUMENTS})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    jobs = parser.add_argument_group("prepare across machines (see shortcutlm.datasets.parallel)")
    jobs.add_argument("--tokenizer-only", action="store_true",
                      help="step 1: train and save the tokenizer and the plan the jobs check against")
    jobs.add_argument("--num-jobs", type=int, default=None, metavar="N", help="step 2: the number of jobs")
    jobs.add_argument("--job", type=int, default=None, metavar="I",
                      help="step 2: encode job I's part of the documents (0 <= I < N), e.g. $SLURM_ARRAY_TASK_ID")
    jobs.add_argument("--merge", action="store_true",
                      help=f"step 3: join the finished jobs' partial manifests into {MANIFEST} (needs only --out)")


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge a spec file with the command line (the command line wins)."""
    spec: dict[str, Any] = {}
    if args.spec:
        spec = yaml_file(args.spec, "prepare spec file")
        if not isinstance(spec, dict):
            raise PrepareError(f"{args.spec}: a prepare spec is a mapping of keys, got {type(spec).__name__}")
        unknown = set(spec) - {"source", "tokenizer", "out", "workers", "shard_tokens", "shard_documents",
                               "file_timeout_s"}
        if unknown:
            raise PrepareError(f"{args.spec}: unknown key(s) {', '.join(sorted(unknown))}")
    source = dict(spec.get("source") or {})
    if args.source:
        source = {"name": args.source} if source.get("name") != args.source else source
    if args.path:
        source["path"] = args.path
    source.update(_parse_pairs(args.option, "--option"))
    tokenizer = dict(spec.get("tokenizer") or {})
    if getattr(args, "tokenizer_from", None):
        if args.tokenizer or args.set:
            raise PrepareError("--tokenizer-from uses the saved tokenizer as it is: give it without --tokenizer and --set")
        tokenizer = tokenizer_from(args.tokenizer_from)
    elif args.tokenizer:
        tokenizer = {"domain": args.tokenizer} if tokenizer.get("domain") != args.tokenizer else tokenizer
    tokenizer.update(_parse_pairs(args.set, "--set"))
    out = args.out or spec.get("out")
    if not source.get("name") or not tokenizer.get("domain") or not out:
        raise PrepareError("need --source, --tokenizer and --out (or a --spec file that gives them)")
    return {"source": source, "tokenizer": tokenizer, "out": out,
            "workers": args.workers if args.workers is not None else int(spec.get("workers", 2)),
            "shard_tokens": int(args.shard_tokens or spec.get("shard_tokens", DEFAULT_SHARD_TOKENS)),
            "shard_documents": int(args.shard_documents or spec.get("shard_documents", DEFAULT_SHARD_DOCUMENTS)),
            "file_timeout_s": getattr(args, "file_timeout", None) or spec.get("file_timeout_s")}


def _job_of(args: argparse.Namespace) -> Job | None:
    """The job of ``--job I --num-jobs N`` (None for a one-job prepare); refuses a mix of steps."""
    steps = [name for name, given in (("--tokenizer-only", args.tokenizer_only), ("--merge", args.merge),
                                      ("--job", args.job is not None or args.num_jobs is not None)) if given]
    if len(steps) > 1:
        raise PrepareError(f"{' and '.join(steps)} are separate steps; give one of them")
    if (args.job is None) != (args.num_jobs is None):
        raise PrepareError("give --job I together with --num-jobs N")
    return Job(args.job, args.num_jobs) if args.job is not None else None


def _run_step(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run the step the arguments ask for; returns its manifest and where it was written."""
    job = _job_of(args)
    if args.merge:
        if not args.out:
            raise PrepareError("--merge needs --out (the folder the jobs wrote into)")
        return parallel.merge(args.out), manifest_path(args.out)
    spec = spec_from_args(args)
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
    try:
        start = time.perf_counter()
        manifest, where = _run_step(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError, RuntimeError) as exc:
        print(f"shortcutlm prepare: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    if args.tokenizer_only:
        plan = manifest[parallel.PLAN]
        print(f"tokenizer {plan['fingerprint']} saved; {plan['documents']:,} documents to encode, "
              f"{len(manifest['rejected'])} rejected; manifest: {where} ({elapsed:.1f} s)")
        return 0
    for split, entry in manifest["splits"].items():
        extra = "".join(f", {k} {entry[k]:,.6g}" if isinstance(entry[k], float) else f", {k} {entry[k]:,}"
                        for k in entry if k not in ("documents", "tokens", "shards"))
        print(f"{split}: {entry['documents']:,} documents, {entry['tokens']:,} tokens in {len(entry['shards'])} shard(s){extra}")
    skipped = [r for r in manifest["rejected"] if r.get("skipped")]
    failed = [r for r in manifest["rejected"] if not r.get("skipped")]
    print(f"{len(failed)} rejected of {manifest['inputs']['total']} inputs"
          + (f", {len(skipped)} file(s) skipped" if skipped else "") + f"; manifest: {where} ({elapsed:.1f} s)")
    for item in failed[:10]:
        print(f"  rejected {item['input']}: {item['reason']}")
    if skipped:
        kinds = Counter(r["reason"].split(";")[0].removeprefix("skipped: ") for r in skipped)
        print("  skipped (not read, listed in the manifest): "
              + "; ".join(f"{n} × {kind}" for kind, n in kinds.most_common(4)))
    return 0
