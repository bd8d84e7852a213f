"""Bytes on disk: WebDataset shards of token arrays and their checksums (the manifest that lists
them is the artifact layer's: :mod:`shortcutlm.artifacts.manifest`).

A shard sample is one document: key = doc id (no dots), ``tokens.npy`` (uint16 where the
vocabulary fits, else int32; shape ``[T]`` or ``[K, T]``) and ``meta.json`` (source,
split, doc id, byte count or duration). Shards are written with webdataset's
``TarWriter`` — the reference writer of the format, so member names and encodings are
exactly what webdataset readers expect — into a temp file that is renamed only when
complete, so a killed run never leaves a half shard that looks whole. Member times are
fixed, so the same documents give byte-identical shards (and checksums) on every run.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np

from shortcutlm.artifacts.files import disk_full, is_no_space
from shortcutlm.artifacts.manifest import FORMAT, VERSION, ShardError, ShardManifest, ShardRecord, read_manifest
from shortcutlm.artifacts.remote import shard_bytes, where_is
from shortcutlm.compat import LibraryChanged, webdataset_tar

__all__ = ["FORMAT", "VERSION", "TMP_SUFFIX", "ShardError", "ShardRecord", "ShardWriter", "read_manifest", "read_shard",
           "verify_shard", "sha256_file", "token_dtype", "shard_name", "first_document", "first_document_and_meta"]

TMP_SUFFIX = ".tmp"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (halves disk and read bandwidth), else int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def shard_name(split: str, index: int, part: str = "") -> str:
    """``train-000003.tar``; a job of a prepare across machines adds its part (``train-p00001-000003.tar``),
    so the names of all jobs sort into the order one job would have written."""
    return f"{split}-{part}-{index:06d}.tar" if part else f"{split}-{index:06d}.tar"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array(stream, np.ascontiguousarray(array), allow_pickle=False)
    return stream.getvalue()


class ShardWriter:
    """Writes one shard to ``<name>.tmp``; ``finish()`` renames it into place and returns its record."""

    def __init__(self, folder: str | Path, split: str, index: int, dtype: np.dtype, part: str = "") -> None:
        from webdataset import TarWriter

        self.path = Path(folder) / shard_name(split, index, part)
        self.tmp = self.path.with_name(self.path.name + TMP_SUFFIX)
        self.split, self.dtype = split, np.dtype(dtype)
        self.handle = open(self.tmp, "wb")
        self.tar = TarWriter(self.handle, encoder=False, mtime=0.0, user="", group="", mode=0o644)
        self.doc_ids: list[str] = []
        self.doc_tokens: list[int] = []
        self.tokens = 0  # positions (T per document, whatever the number of streams)
        self.values = 0  # ids stored (K·T per document): what sizes the file
        self.bytes_written = 0

    def add(self, doc_id: str, tokens: np.ndarray, meta: dict[str, Any]) -> None:
        if "." in doc_id or "/" in doc_id:
            raise ValueError(f"document id {doc_id!r} cannot be a WebDataset key (no dots or slashes)")
        tokens = np.asarray(tokens)
        if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"document {doc_id}: ids outside the range of {self.dtype}")
        with self._no_space_is_one_line():
            self.bytes_written += self.tar.write({
                "__key__": doc_id,
                "tokens.npy": npy_bytes(tokens.astype(self.dtype, copy=False)),
                "meta.json": json.dumps(meta, sort_keys=True, default=str).encode("utf-8"),
            })
        self.doc_ids.append(doc_id)
        self.doc_tokens.append(int(tokens.shape[-1]))
        self.tokens += int(tokens.shape[-1])
        self.values += int(tokens.size)

    @contextmanager
    def _no_space_is_one_line(self) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            if is_no_space(err):
                raise disk_full(self.path.parent, f"shard {self.path.name}") from err
            raise

    def finish(self) -> ShardRecord:
        with self._no_space_is_one_line():
            self.tar.close()
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
        digest = sha256_file(self.tmp)
        size = self.tmp.stat().st_size
        self.tmp.replace(self.path)
        return ShardRecord(self.path.name, self.split, digest, len(self.doc_ids), self.tokens, size,
                           tuple(self.doc_ids), tuple(self.doc_tokens))

    def abort(self) -> None:
        """Drop the unfinished shard (closing may fail again, e.g. on a full disk: it is discarded anyway)."""
        try:
            for close in (self.tar.close, self.handle.close):
                try:
                    close()
                except OSError:
                    pass
        finally:
            self.tmp.unlink(missing_ok=True)


def verify_shard(path: str | Path, sha256: str) -> None:
    """Refuse a shard that is missing or whose bytes differ from the manifest's checksum."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"shard {path} is missing (listed in the manifest)")
    actual = sha256_file(path)
    if actual != sha256:
        raise ShardError(f"shard {path} fails its checksum: manifest says sha256 {sha256[:16]}…, "
                         f"file has {actual[:16]}…; the file is corrupt or was changed — re-run prepare")


def decode_sample(sample: dict[str, Any], shard: str | Path) -> tuple[str, np.ndarray, dict[str, Any]]:
    key = sample.get("__key__", "?")
    if "tokens.npy" not in sample or "meta.json" not in sample:
        raise ShardError(f"shard {shard}: sample {key!r} lacks tokens.npy or meta.json")
    try:
        tokens = np.lib.format.read_array(io.BytesIO(sample["tokens.npy"]), allow_pickle=False)
        meta = json.loads(sample["meta.json"])
    except Exception as exc:
        raise ShardError(f"shard {shard}: sample {key!r} cannot be decoded ({exc})") from exc
    return key, tokens, meta


def read_shard(path: str | Path) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    """``(doc_id, tokens, meta)`` for each sample, in the order written.

    Parsing is webdataset's own (through :mod:`shortcutlm.compat.webdataset_tar`); any tar error
    is re-raised as a :class:`ShardError` that names the shard.
    """
    folder, name = Path(path).parent, Path(path).name
    data, path = shard_bytes(folder, name), where_is(folder, name)  # fetched for a folder served from elsewhere
    if data is None:
        raise ShardError(f"shard {path} is missing")
    try:
        for sample in webdataset_tar.tar_samples(io.BytesIO(data), path):
            yield decode_sample(sample, path)
    except (ShardError, LibraryChanged):
        raise
    except Exception as exc:
        raise ShardError(f"shard {path} is not a readable WebDataset tar: {type(exc).__name__}: {exc}") from exc


def first_document(data_dir: Path, splits: tuple[str, ...] = ("test", "valid", "train")) -> np.ndarray | None:
    """Tokens of the first document of the first non-empty split (a reproducible prompt source)."""
    found = first_document_and_meta(data_dir, splits)
    return None if found is None else found[0]


def first_document_and_meta(data_dir: Path, splits: tuple[str, ...] = ("test", "valid", "train")
                            ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """:func:`first_document` with what its source said of it (the shard's ``meta["info"]``)."""
    manifest = ShardManifest.read(data_dir)
    for split in splits:
        for shard in manifest.split(split).shards:
            for _key, tokens, meta in read_shard(Path(data_dir) / shard):
                return tokens.astype(np.int64), dict(meta.get("info") or {})
    return None
