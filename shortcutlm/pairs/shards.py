"""The paired folder's shards: one open shard per split, closed when it is full, as ``prepare`` does.

A pairs folder at LibriSpeech's scale (960 hours, each pair written both ways and its target alone)
holds far more than one shard's worth per split; shards close at ``prepare``'s sizes
(:data:`~shortcutlm.datasets.prepare_common.DEFAULT_SHARD_TOKENS` ids or
:data:`~shortcutlm.datasets.prepare_common.DEFAULT_SHARD_DOCUMENTS` documents), so the loader can spread
them over workers and ranks and no single file grows without bound.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.datasets.prepare_common import DEFAULT_SHARD_DOCUMENTS, DEFAULT_SHARD_TOKENS
from shortcutlm.datasets.shards import ShardWriter, read_shard


def folder_documents(folder: Path, split: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(key, ids)`` of a prepared folder's documents (of ``split``, or all), a shard at a time."""
    manifest = ShardManifest.read(folder)
    for record in manifest.shards_of(split) if split else manifest.shards:
        for key, ids, _meta in read_shard(folder / record.name):
            yield key, ids


class SplitShards:
    """Writers for every split of one folder; ``finish`` closes the open ones and returns every record."""

    def __init__(self, out: Path, dtype: np.dtype, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                 shard_documents: int = DEFAULT_SHARD_DOCUMENTS) -> None:
        self.out, self.dtype = out, dtype
        self.shard_tokens, self.shard_documents = int(shard_tokens), int(shard_documents)
        self.open: dict[str, ShardWriter] = {}
        self.next_index: dict[str, int] = {}
        self.records: list[dict[str, Any]] = []

    def add(self, split: str, key: str, document: np.ndarray, meta: dict[str, Any]) -> None:
        writer = self.open.get(split)
        if writer is None:
            index = self.next_index.get(split, 0)
            writer = self.open[split] = ShardWriter(self.out, split, index, self.dtype)
            self.next_index[split] = index + 1
        writer.add(key, document, meta)
        if writer.values >= self.shard_tokens or len(writer.doc_ids) >= self.shard_documents:
            self.records.append(self.open.pop(split).finish().to_dict())

    def finish(self) -> list[dict[str, Any]]:
        for split in list(self.open):
            self.records.append(self.open.pop(split).finish().to_dict())
        return sorted(self.records, key=lambda r: r["name"])

    def abort(self) -> None:
        """Drop the unfinished shards (the prepare stops; it writes the folder again from its parts)."""
        for writer in self.open.values():
            writer.abort()
        self.open.clear()
