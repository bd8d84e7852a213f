"""Shard folders built directly from known arrays, so loader tests can check every token."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shortcutlm.artifacts.manifest import FORMAT, VERSION, write_manifest
from shortcutlm.datasets.shards import ShardWriter

EOS, PAD, VOCAB = 1, 0, 60000


def unique_docs(n_docs: int, lengths: list[int] | None = None, n_streams: int = 1, seed: int = 0,
                start: int = 2) -> list[np.ndarray]:
    """Documents whose every token value is unique (so a token says which document it came from)."""
    rng = np.random.default_rng(seed)
    lengths = lengths or [int(x) for x in rng.integers(5, 60, size=n_docs)]
    docs, value = [], start
    for n in lengths:
        if n_streams == 1:
            docs.append(np.arange(value, value + n))
        else:
            docs.append(np.arange(value, value + n_streams * n).reshape(n_streams, n))
        value += n * n_streams
    assert value < VOCAB
    return docs


def write_shards(folder: Path, splits: dict[str, list[np.ndarray]], docs_per_shard: int,
                 n_streams: int = 1) -> dict:
    """Write shards + a manifest the way prepare lays them out."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for split, docs in splits.items():
        for index, start in enumerate(range(0, len(docs), docs_per_shard)):
            writer = ShardWriter(folder, split, index, np.dtype(np.uint16))
            for j, doc in enumerate(docs[start:start + docs_per_shard]):
                writer.add(f"{split}-{start + j:05d}", doc, {"split": split})
            records.append(writer.finish().to_dict())
    manifest = {"format": FORMAT, "version": VERSION, "complete": True, "source": {}, "tokenizer_settings": {},
                "tokenizer": {"domain": "test", "fingerprint": "f" * 16, "vocab_size": VOCAB, "n_streams": n_streams,
                              "special_ids": {"pad": PAD, "bos": 2, "eos": EOS}, "folder": "tokenizer"},
                "dtype": "uint16", "splits": {}, "shards": records, "rejected": [], "inputs": {}}
    write_manifest(folder, manifest)
    return manifest


def stream_of(docs: list[np.ndarray], n_streams: int = 1) -> np.ndarray:
    """EOS d1 EOS d2 … EOS: what the loader packs."""
    eos = np.full((n_streams, 1) if n_streams > 1 else (1,), EOS)
    parts = [eos]
    for doc in docs:
        parts += [doc, eos]
    return np.concatenate(parts, axis=-1)
