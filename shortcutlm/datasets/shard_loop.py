"""The shard loop of a prepare: a scope's documents, encoded in worker processes, written into shards.

Each shard is recorded in the manifest as soon as it is renamed into place, together with every
rejection so far, so a run killed at any moment resumes after its last whole shard and never writes
a document twice (:mod:`~shortcutlm.datasets.resume` says what an earlier sitting left).
"""
from __future__ import annotations

import time
from dataclasses import replace
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from shortcutlm.artifacts.manifest import TOKENIZER_FOLDER
from shortcutlm.datasets import prepare_common
from shortcutlm.datasets.encode import encoded_stream, rejection_reason
from shortcutlm.datasets.isolation import IsolatedPool
from shortcutlm.datasets.resume import Scope, keep_finished_shards
from shortcutlm.artifacts.manifest import ShardRecord
from shortcutlm.datasets.shards import ShardWriter, token_dtype
from shortcutlm.datasets.sources import Rejected
from shortcutlm.datasets.summary import summarise
from shortcutlm.documents import Document
from shortcutlm.core.heartbeat import PlainCounter
from shortcutlm.tokenizers import Tokenizer


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class ScopeEncoder:
    """Writes one scope's documents into shards, keeping the manifest up to date after each shard.

    ``pending()`` resumes from the scope's earlier sitting (its whole shards kept, its rejections not
    retried); ``add`` puts one encoded document in the open shard (or records why it was rejected),
    closing the shard when it is full or the split changes; ``close_shard`` renames the open shard
    into place and writes the manifest.
    """

    def __init__(self, out: Path, scope: Scope, manifest: dict[str, Any], tok: Tokenizer, shard_tokens: int,
                 shard_documents: int) -> None:
        self.out, self.scope, self.manifest = out, scope, manifest
        self.dtype = token_dtype(tok.vocab_size)
        self.shard_tokens, self.shard_documents = shard_tokens, shard_documents
        self.rejected = scope.rejected
        self.writer: ShardWriter | None = None
        self.sums: dict[str, float] = {}
        self.next_index: dict[str, int] = defaultdict(int)
        self.encoded = {"documents": 0, "tokens": 0}

    def pending(self, progress: bool) -> list[Document]:
        """The scope's documents no earlier sitting finished or rejected; numbers new shards after the kept ones."""
        manifest, scope, previous = self.manifest, self.scope, self.scope.previous
        done: set[str] = set()
        if previous is not None:
            manifest["created"] = previous.get("created", manifest["created"])
            manifest["shards"] = keep_finished_shards(self.out, previous, progress, scope.part)
            done = {doc_id for record in manifest["shards"] for doc_id in record["doc_ids"]}
            # Documents the tokenizer rejected before are not retried: same tokenizer, same answer.
            current = {d.doc_id for d in scope.docs}
            from_source = {r["input"] for r in scope.fixed}  # listed anew by this run (a duplicate shares an id)
            self.rejected = {r["doc_id"]: r for r in previous.get("rejected", [])
                             if r.get("doc_id") in current and r["doc_id"] not in done
                             and r["input"] not in from_source}
        for record in manifest["shards"]:
            split = record["split"]
            self.next_index[split] = max(self.next_index[split], int(record["name"].rsplit("-", 1)[1][:6]) + 1)
        return [d for d in scope.docs
                if d.doc_id not in done and d.doc_id not in self.rejected and d.doc_id not in scope.skip]

    def flush(self) -> None:
        """Write the manifest as it stands: the shards so far, every rejection, the sums."""
        self.manifest["rejected"] = self.scope.fixed + list(self.rejected.values())
        self.manifest["updated"] = _now()
        summarise(self.manifest, self.scope.n_inputs)
        self.scope.write(self.manifest)

    def close_shard(self) -> None:
        """Finish the open shard (if any), record it, and write the manifest."""
        if self.writer is None:
            return
        record: ShardRecord = self.writer.finish()
        self.manifest["shards"].append(replace(record, sums=self.sums).to_dict())
        self.next_index[record.split] += 1
        self.writer, self.sums = None, {}
        self.flush()

    def add(self, doc: Document, tokens: np.ndarray | None, info: Any) -> None:
        """One answer of the workers: the document's tokens and meta, or (tokens None) why it was rejected."""
        if tokens is None:
            self.rejected[doc.doc_id] = Rejected(doc.describe(), rejection_reason(doc, str(info)), doc.split,
                                                 doc.doc_id).as_dict()
            return
        if self.writer is not None and self.writer.split != doc.split:
            self.close_shard()
        if self.writer is None:
            self.writer = ShardWriter(self.out, doc.split, self.next_index[doc.split], self.dtype, self.scope.part)
        meta = {"source": doc.source, "split": doc.split, "doc_id": doc.doc_id, **info}
        if doc.meta:
            meta["info"] = doc.meta
        self.writer.add(doc.doc_id, tokens, meta)
        self.encoded["documents"] += 1
        self.encoded["tokens"] += int(tokens.shape[-1])
        for key, value in info.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.sums[key] = self.sums.get(key, 0) + value
        if self.writer.values >= self.shard_tokens or len(self.writer.doc_ids) >= self.shard_documents:
            self.close_shard()

    def abort(self) -> None:
        """Drop the open shard's temporary file (the run stops; whole shards stay)."""
        if self.writer is not None:
            self.writer.abort()


def encode_scope(out: Path, scope: Scope, manifest: dict[str, Any], tok: Tokenizer, pool: IsolatedPool,
                 shard_tokens: int, shard_documents: int, progress: bool, timeout_s: float | None,
                 timings: dict[str, float]) -> dict[str, Any]:
    """Encode the scope's documents that no earlier sitting finished into shards, recording each."""
    from tqdm import tqdm

    encoder = ScopeEncoder(out, scope, manifest, tok, shard_tokens, shard_documents)
    pending = encoder.pending(progress)
    encoder.flush()  # records the tokenizer fingerprint before any shard exists
    clock = time.perf_counter()
    what = manifest["source"]["name"] + (f" ({scope.job})" if scope.job else "")
    bar = tqdm(total=len(pending), desc=f"prepare {what}", unit="doc", disable=not progress, mininterval=1.0)
    plain = (PlainCounter(f"prepare {what}", len(pending), every_s=prepare_common.PLAIN_EVERY_S, say=None)
             if not progress else None)
    stream = encoded_stream(pending, pool, out / TOKENIZER_FOLDER, tok.domain, timeout_s)
    try:
        for doc, tokens, info in stream:
            bar.update(1)
            if plain is not None:  # the bars are off (a batch log): a plain line every few minutes instead
                plain.update(1)
            encoder.add(doc, tokens, info)
        encoder.close_shard()
    except BaseException:
        encoder.abort()
        raise
    finally:
        stream.close()  # stops the worker pool at once on errors and interrupts
        bar.close()
    manifest["complete"] = True
    # What this run did (a resumed run only counts its own work): for benchmarks and logs.
    manifest["last_run"] = {**timings, "encode_s": time.perf_counter() - clock, "workers": pool.workers,
                            "encoded_documents": encoder.encoded["documents"],
                            "encoded_tokens": encoder.encoded["tokens"]}
    encoder.flush()
    return manifest
