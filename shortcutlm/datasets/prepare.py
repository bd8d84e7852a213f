"""``shortcutlm prepare``: a source and a tokenizer in, WebDataset shards + ``manifest.json`` out.

Python API::

    prepare({"name": "bach_chorales", "limit": 20}, {"domain": "midi"}, "runs/data/chorales", workers=2)

CLI::

    shortcutlm prepare --source bach_chorales [--path P] [--option k=v ...] \
        --tokenizer midi [--set k=v ...] --out DIR [--workers 2] [--spec spec.yaml]

What it guarantees:

* the tokenizer is trained first when it needs training (train split only) and saved to
  ``<out>/tokenizer/``; worker processes re-create it from that folder;
* every input ends in a shard or in ``manifest["rejected"]`` with its reason;
* shards and the manifest are written to temp names and renamed, so a killed run leaves
  only whole files; re-running resumes after the last finished shard (checking the
  tokenizer fingerprint and settings) and never writes a document twice.

Manifest schema (``manifest.json``)::

    format: "shortcutlm-shards", version: 1, complete: bool, created, updated
    source: the source spec;  tokenizer_settings: the tokenizer spec
    tokenizer: {domain, fingerprint, vocab_size, n_streams, special_ids, folder: "tokenizer"}
    dtype: "uint16" | "int32"
    splits: {split: {documents, tokens, shards: [names], <meta sums e.g. bytes / seconds>}}
    shards: [{name, split, sha256, documents, tokens, size, doc_ids, doc_tokens, sums}]
    rejected: [{input, reason, split, doc_id}]
    inputs: {total, documents, rejected}
    last_run: {collect_s, tokenizer_s, encode_s, workers, encoded_documents, encoded_tokens}

``tokens`` counts time steps (positions) per document: for a K-stream layout a document of
shape [K, T] counts T.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from shortcutlm.datasets.shards import (FORMAT, MANIFEST, TMP_SUFFIX, VERSION, ShardRecord, ShardWriter,
                                        read_manifest, sha256_file, token_dtype, write_json_atomic)
from shortcutlm.datasets.sources import READERS, Rejected, read_source
from shortcutlm.documents import Document
from shortcutlm.tokenizers import Tokenizer, load_tokenizer, tokenizer_class

TOKENIZER_FOLDER = "tokenizer"
SPLIT_ORDER = ("train", "valid", "test")
DEFAULT_SHARD_TOKENS = 1 << 22
DEFAULT_SHARD_DOCUMENTS = 4096


# ------------------------------------------------------------------------------ encoding

_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(folder: str, threads: int) -> None:
    """Pool initializer: each worker loads the saved tokenizer once (tokenizers need not pickle)."""
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = load_tokenizer(folder)
    if "torch" in sys.modules:  # keep two workers on two cores from oversubscribing
        sys.modules["torch"].set_num_threads(max(1, threads))


def _encode(doc: Document, tokenizer: Tokenizer | None = None) -> tuple[np.ndarray | None, dict[str, Any] | str]:
    """Encode one document; any failure becomes a rejection reason instead of an exception."""
    tokenizer = tokenizer or _WORKER_TOKENIZER
    assert tokenizer is not None
    try:
        encoded = tokenizer.encode_document(doc)
        tokens = np.asarray(encoded.tokens)
        problem = _check_tokens(tokens, tokenizer)
        if problem:
            return None, problem
        return tokens, dict(encoded.meta)
    except Exception as exc:  # a bad input is a rejection, never the end of the run
        message = str(exc).strip() or type(exc).__name__
        return None, message if type(exc).__name__ == "TokenizerError" else f"{type(exc).__name__}: {message}"


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


def _encoded_stream(docs: list[Document], folder: Path, tokenizer: Tokenizer,
                    workers: int) -> Iterator[tuple[Document, np.ndarray | None, Any]]:
    """Encoded documents in input order (ordered ``imap``), so shard contents are reproducible."""
    if workers <= 1 or len(docs) < 2:
        for doc in docs:
            yield (doc, *_encode(doc, tokenizer))
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: the parent may hold torch / tokenizer threads that fork would copy mid-state.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(folder), threads)) as pool:
        for doc, result in zip(docs, pool.imap(_encode, docs, chunksize=1)):
            yield (doc, *result)


# ------------------------------------------------------------------------------ the run

def _split_specs(source: dict[str, Any], tokenizer: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    if not isinstance(source, dict) or "name" not in source:
        raise ValueError("source must be a dict with a 'name' (e.g. {'name': 'text8', 'path': ...})")
    if source["name"] not in READERS:
        raise ValueError(f"unknown source {source['name']!r}; expected one of {', '.join(READERS)}")
    if not isinstance(tokenizer, dict) or "domain" not in tokenizer:
        raise ValueError("tokenizer must be a dict with a 'domain' (text, midi or acoustic) plus its settings")
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
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    docs.sort(key=lambda d: (order.get(d.split, len(order)), d.split))  # stable: keeps source order within a split
    return docs, rejected


def _tokenizer_for(out: Path, domain: str, settings: dict[str, Any], docs: list[Document],
                   previous: dict[str, Any] | None, progress: bool) -> Tokenizer:
    """Reuse the saved tokenizer on resume (checking its fingerprint), else build, train and save one."""
    folder = out / TOKENIZER_FOLDER
    if previous is not None and (folder / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(folder)
        tokenizer.check_fingerprint(previous["tokenizer"]["fingerprint"], f"the partial shards in {out}")
        if tokenizer.domain != domain:
            raise ValueError(f"{folder} holds a {tokenizer.domain} tokenizer, not {domain}")
        return tokenizer
    tokenizer = tokenizer_class(domain).from_settings(dict(settings))
    if tokenizer.needs_training:
        train = [d for d in docs if d.split == "train"]
        if not train:
            raise ValueError("the tokenizer needs training but the source has no train documents")
        if progress:
            print(f"training the {domain} tokenizer on {len(train)} train documents …", file=sys.stderr)
        tokenizer.train(train)
    if previous is not None and previous.get("shards"):
        # The saved tokenizer is gone but shards exist: only an identical mapping may add to them.
        tokenizer.check_fingerprint(previous["tokenizer"]["fingerprint"], f"the partial shards in {out}")
    tokenizer.save(folder)
    return tokenizer


def _empty_manifest(source: dict[str, Any], tokenizer_spec: dict[str, Any], tokenizer: Tokenizer) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "format": FORMAT, "version": VERSION, "complete": False, "created": now, "updated": now,
        "source": source, "tokenizer_settings": tokenizer_spec,
        "tokenizer": {"domain": tokenizer.domain, "fingerprint": tokenizer.fingerprint(),
                      "vocab_size": int(tokenizer.vocab_size), "n_streams": int(tokenizer.n_streams),
                      "special_ids": {k: int(v) for k, v in tokenizer.special_ids.items()},
                      "folder": TOKENIZER_FOLDER},
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "splits": {}, "shards": [], "rejected": [], "inputs": {},
    }


def _previous(out: Path, source: dict[str, Any], tokenizer_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an earlier run into ``out``; refuses one made from other settings."""
    if not (out / MANIFEST).is_file():
        return None
    previous = read_manifest(out, require_complete=False)
    canon = lambda x: json.dumps(x, sort_keys=True, default=str)  # noqa: E731
    for key, now in (("source", source), ("tokenizer_settings", tokenizer_spec)):
        if canon(previous.get(key)) != canon(now):
            raise ValueError(f"{out} was prepared with {key} {canon(previous.get(key))}, not {canon(now)}; "
                             f"use another --out (or delete {out}) to prepare different data")
    return previous


def _keep_finished_shards(out: Path, previous: dict[str, Any], progress: bool) -> list[dict[str, Any]]:
    """Shards of the earlier run that are still whole; others are dropped and redone."""
    for stale in out.glob(f"*.tar{TMP_SUFFIX}"):
        stale.unlink()
    kept = []
    for record in previous.get("shards", []):
        path = out / record["name"]
        if path.is_file() and sha256_file(path) == record["sha256"]:
            kept.append(record)
        elif progress:
            print(f"shard {record['name']} is missing or changed; its documents will be encoded again", file=sys.stderr)
    return kept


def _summarise(manifest: dict[str, Any], n_inputs: int) -> None:
    splits: dict[str, dict[str, Any]] = {}
    for record in manifest["shards"]:
        entry = splits.setdefault(record["split"], {"documents": 0, "tokens": 0, "shards": []})
        entry["documents"] += record["documents"]
        entry["tokens"] += record["tokens"]
        entry["shards"].append(record["name"])
        for key, value in record.get("sums", {}).items():
            entry[key] = entry.get(key, 0) + value
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    manifest["splits"] = dict(sorted(splits.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))
    written = sum(s["documents"] for s in splits.values())
    manifest["inputs"] = {"total": n_inputs, "documents": written, "rejected": len(manifest["rejected"])}


def prepare(source: dict[str, Any], tokenizer: dict[str, Any], out_dir: str | Path, workers: int = 2,
            shard_tokens: int = DEFAULT_SHARD_TOKENS, shard_documents: int = DEFAULT_SHARD_DOCUMENTS,
            progress: bool = True) -> dict[str, Any]:
    """Tokenize a source into WebDataset shards per split plus ``manifest.json``; returns the manifest.

    ``source``: ``{"name": ..., "path": ..., **options}`` (see :mod:`shortcutlm.datasets.sources`);
    ``tokenizer``: ``{"domain": "text"|"midi"|"acoustic", **settings for from_settings}``.
    A shard closes once it holds ``shard_tokens`` ids (every stream counted, so K-stream
    shards are no larger on disk) or ``shard_documents`` documents.
    """
    from tqdm import tqdm

    source, domain, settings = _split_specs(source, tokenizer)
    tokenizer_spec = {"domain": domain, **settings}
    cls = tokenizer_class(domain)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous(out, source, tokenizer_spec)

    clock = time.perf_counter()
    docs, source_rejected = _collect(source, cls)
    n_inputs = len(docs) + len(source_rejected)
    timings = {"collect_s": time.perf_counter() - clock}
    clock = time.perf_counter()
    tok = _tokenizer_for(out, domain, settings, docs, previous, progress)
    timings["tokenizer_s"] = time.perf_counter() - clock
    manifest = _empty_manifest(source, tokenizer_spec, tok)
    dtype = token_dtype(tok.vocab_size)

    done: set[str] = set()
    rejected: dict[str, dict[str, str]] = {}
    if previous is not None:
        manifest["created"] = previous.get("created", manifest["created"])
        manifest["shards"] = _keep_finished_shards(out, previous, progress)
        done = {doc_id for record in manifest["shards"] for doc_id in record["doc_ids"]}
        # Documents the tokenizer rejected before are not retried: same tokenizer, same answer.
        current = {d.doc_id for d in docs}
        rejected = {r["doc_id"]: r for r in previous.get("rejected", [])
                    if r.get("doc_id") in current and r["doc_id"] not in done}
    pending = [d for d in docs if d.doc_id not in done and d.doc_id not in rejected]

    next_index: dict[str, int] = defaultdict(int)
    for record in manifest["shards"]:
        next_index[record["split"]] = max(next_index[record["split"]], int(record["name"].rsplit("-", 1)[1][:6]) + 1)

    def flush() -> None:
        manifest["rejected"] = [r.as_dict() for r in source_rejected] + list(rejected.values())
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _summarise(manifest, n_inputs)
        write_json_atomic(out / MANIFEST, manifest)

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
    bar = tqdm(total=len(pending), desc=f"prepare {source['name']}", unit="doc", disable=not progress,
               mininterval=1.0)
    stream = _encoded_stream(pending, out / TOKENIZER_FOLDER, tok, workers)
    try:
        for doc, tokens, info in stream:
            bar.update(1)
            if tokens is None:
                rejected[doc.doc_id] = Rejected(doc.describe(), str(info), doc.split, doc.doc_id).as_dict()
                continue
            if writer is not None and writer.split != doc.split:
                close()
            if writer is None:
                writer = ShardWriter(out, doc.split, next_index[doc.split], dtype)
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
    manifest["last_run"] = {**timings, "encode_s": time.perf_counter() - clock, "workers": workers,
                            "encoded_documents": encoded["documents"], "encoded_tokens": encoded["tokens"]}
    flush()
    if manifest["inputs"]["documents"] == 0:
        reasons = "; ".join(f"{r['input']}: {r['reason']}" for r in manifest["rejected"][:3])
        raise RuntimeError(f"prepare wrote no documents ({len(manifest['rejected'])} rejected: {reasons})")
    return manifest


# ------------------------------------------------------------------------------ CLI

def _parse_pairs(pairs: Iterable[str], what: str) -> dict[str, Any]:
    """``k=v`` pairs; values are read as YAML scalars / lists (``limit=20``, ``fractions=[90,5,5]``)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {pair!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", help="JSON or YAML file with 'source', 'tokenizer' and optionally 'out', 'workers'")
    parser.add_argument("--source", help=f"one of: {', '.join(READERS)}")
    parser.add_argument("--path", help="where the dataset lies (its published layout)")
    parser.add_argument("--option", action="append", default=[], metavar="K=V", help="source option, repeatable")
    parser.add_argument("--tokenizer", metavar="DOMAIN", help="text, midi or acoustic")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="tokenizer setting, repeatable")
    parser.add_argument("--out", help="output folder for shards, manifest.json and tokenizer/")
    parser.add_argument("--workers", type=int, default=None, help="encoding processes (default 2)")
    parser.add_argument("--shard-tokens", type=int, default=None,
                        help=f"close a shard at this many ids (default {DEFAULT_SHARD_TOKENS})")
    parser.add_argument("--shard-documents", type=int, default=None,
                        help=f"close a shard at this many documents (default {DEFAULT_SHARD_DOCUMENTS})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge a spec file with the command line (the command line wins)."""
    spec: dict[str, Any] = {}
    if args.spec:
        import yaml

        spec = yaml.safe_load(Path(args.spec).read_text()) or {}
        unknown = set(spec) - {"source", "tokenizer", "out", "workers", "shard_tokens", "shard_documents"}
        if unknown:
            raise ValueError(f"{args.spec}: unknown key(s) {', '.join(sorted(unknown))}")
    source = dict(spec.get("source") or {})
    if args.source:
        source = {"name": args.source} if source.get("name") != args.source else source
    if args.path:
        source["path"] = args.path
    source.update(_parse_pairs(args.option, "--option"))
    tokenizer = dict(spec.get("tokenizer") or {})
    if args.tokenizer:
        tokenizer = {"domain": args.tokenizer} if tokenizer.get("domain") != args.tokenizer else tokenizer
    tokenizer.update(_parse_pairs(args.set, "--set"))
    out = args.out or spec.get("out")
    if not source.get("name") or not tokenizer.get("domain") or not out:
        raise ValueError("need --source, --tokenizer and --out (or a --spec file that gives them)")
    return {"source": source, "tokenizer": tokenizer, "out": out,
            "workers": args.workers if args.workers is not None else int(spec.get("workers", 2)),
            "shard_tokens": int(args.shard_tokens or spec.get("shard_tokens", DEFAULT_SHARD_TOKENS)),
            "shard_documents": int(args.shard_documents or spec.get("shard_documents", DEFAULT_SHARD_DOCUMENTS))}


def run(args: argparse.Namespace) -> int:
    try:
        spec = spec_from_args(args)
        start = time.perf_counter()
        manifest = prepare(spec["source"], spec["tokenizer"], spec["out"], workers=spec["workers"],
                           shard_tokens=spec["shard_tokens"], shard_documents=spec["shard_documents"],
                           progress=not args.quiet)
    except (ValueError, FileNotFoundError, ModuleNotFoundError, RuntimeError) as exc:
        print(f"shortcutlm prepare: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    for split, entry in manifest["splits"].items():
        extra = "".join(f", {k} {entry[k]:,.6g}" if isinstance(entry[k], float) else f", {k} {entry[k]:,}"
                        for k in entry if k not in ("documents", "tokens", "shards"))
        print(f"{split}: {entry['documents']:,} documents, {entry['tokens']:,} tokens in {len(entry['shards'])} shard(s){extra}")
    print(f"{manifest['inputs']['rejected']} rejected of {manifest['inputs']['total']} inputs; "
          f"manifest: {Path(spec['out']) / MANIFEST} ({elapsed:.1f} s)")
    for item in manifest["rejected"][:10]:
        print(f"  rejected {item['input']}: {item['reason']}")
    return 0
