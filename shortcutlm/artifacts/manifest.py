"""The shard manifest: ``manifest.json`` beside a folder of prepared shards.

``prepare`` writes it (through :func:`write_manifest`, durably after every shard: a resumed
prepare trusts it); everything else reads it through :class:`ShardManifest`. Its layout::

    format, version          "shortcutlm-shards", 1
    complete                 false until prepare (or the merge of its jobs) finished
    created, updated         local times
    source                   the source settings prepare was given (name, path, options)
    tokenizer_settings       the tokenizer settings prepare was given
    tokenizer                TokenizerInfo: domain, fingerprint, vocab_size, n_streams, special_ids,
                             folder, files and their sha256 (a served folder's files are checked)
    dtype                    the shards' integer type
    splits                   {split: SplitInfo: documents, tokens, shard names, sums of the meta}
    shards                   [ShardRecord: name, split, sha256, size, documents, tokens, doc_ids,
                              doc_tokens, sums]
    rejected                 [{input, reason, split, doc_id, skipped?}]: every input not in a shard
    inputs                   {total, documents, rejected, skipped}
    warnings, notes, found   lines prepare logged (split sizes, the tokenizer's notes, what a
                             published layout's reader found)
    last_run, plan, job      timings of the last sitting; a prepare across jobs' plan and slice
    mixture                  a joint folder's parts, weights and fingerprints (datasets/mixture.py)

The records (:class:`ShardRecord`, :class:`SplitInfo`, :class:`TokenizerInfo`) are frozen and
typed; the manifest as a whole stays a dictionary while prepare builds it, because prepare
rewrites it after every shard and keeps every key it does not own (a newer field survives a
resume).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.files import ArtifactError, read_json, write_json
from shortcutlm.artifacts.records import NUMBER, mapping
from shortcutlm.artifacts.records import field as checked
from shortcutlm.artifacts.names import (MAX_DOCUMENTS, MAX_MANIFEST_BYTES, MAX_SHARD_BYTES, MAX_SHARDS,
                                        MAX_TOKENIZER_FILES, UnsafeName, bounded_count, plain_name)
from shortcutlm.tokenizers.base import ignored_ids

MANIFEST = "manifest.json"
FORMAT = "shortcutlm-shards"
VERSION = 1
TOKENIZER_FOLDER = "tokenizer"


class ShardError(ArtifactError, RuntimeError):
    """A shard folder is unusable: a shard is missing, fails its checksum or is not a readable tar of
    samples, or its manifest is foreign or unfinished."""


def manifest_path(folder: str | Path) -> Path:
    """Where the manifest of the shard folder ``folder`` is."""
    return Path(folder) / MANIFEST


def has_manifest(folder: str | Path) -> bool:
    return manifest_path(folder).is_file()


def read_manifest(folder: str | Path, require_complete: bool = True) -> dict[str, Any]:
    """The manifest beside the shards; refuses a missing, foreign or unfinished one.

    A missing manifest is a :class:`FileNotFoundError` (the folder was never prepared); any other
    problem is a :class:`ShardError` naming the file and the fix.
    """
    path = manifest_path(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest here; run `shortcutlm prepare` to make shards")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ShardError(f"{path}: {path.stat().st_size:,} bytes, more than a shard manifest may hold "
                         f"({MAX_MANIFEST_BYTES:,}); refusing to read it")
    try:
        manifest = read_json(path, "shard manifest", "re-run `shortcutlm prepare` into this folder")
    except ArtifactError as err:
        raise ShardError(str(err)) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: not a shortcutlm shard manifest")
    check_names(manifest, path)
    if require_complete and not manifest.get("complete"):
        raise ShardError(f"{path}: prepare did not finish; re-run it with the same arguments to resume")
    return manifest


def check_names(manifest: dict[str, Any], where: str | Path) -> None:
    """Refuse a manifest whose file names leave its folder or whose lists exceed the bounds.

    Every name it gives (shards, the tokenizer's folder and files) is joined to the folder it was
    read from, or to a cache of a served folder: see :mod:`shortcutlm.artifacts.names`. One line
    (a :class:`ShardError`) names the file, the field and the value.
    """
    try:
        tokenizer = manifest.get("tokenizer") or {}
        if not isinstance(tokenizer, dict):
            raise UnsafeName(f"{where}: tokenizer is a {type(tokenizer).__name__}, not a mapping")
        if tokenizer.get("folder") is not None:
            plain_name(tokenizer["folder"], "tokenizer.folder", where)
        for name in bounded_count(tokenizer.get("files") or [], MAX_TOKENIZER_FILES, "tokenizer.files", where):
            plain_name(name, "tokenizer.files[]", where)
        documents = 0
        for record in bounded_count(manifest.get("shards") or [], MAX_SHARDS, "shards", where):
            if not isinstance(record, dict):
                raise UnsafeName(f"{where}: a shards[] entry is a {type(record).__name__}, not a mapping")
            plain_name(record.get("name"), "shards[].name", where)
            documents += len(bounded_count(record.get("doc_ids") or [], MAX_DOCUMENTS, "shards[].doc_ids", where))
            size = record.get("size", 0)
            if not isinstance(size, int) or not 0 <= size <= MAX_SHARD_BYTES:
                raise UnsafeName(f"{where}: shard {record['name']} gives size {size!r}, not a whole number of bytes "
                                 f"up to {MAX_SHARD_BYTES:,}")
        if documents > MAX_DOCUMENTS:
            raise UnsafeName(f"{where}: its shards list {documents:,} documents, "
                             f"more than the {MAX_DOCUMENTS:,} allowed")
        splits = manifest.get("splits") or {}
        for split, entry in (splits.items() if isinstance(splits, dict) else ()):
            listed = entry.get("shards") if isinstance(entry, dict) else None
            for name in bounded_count(listed or [], MAX_SHARDS, f"splits.{split}.shards", where):
                plain_name(name, f"splits.{split}.shards[]", where)
    except UnsafeName as err:
        raise ShardError(str(err)) from err


def read_manifest_or_none(folder: str | Path, require_complete: bool = False) -> dict[str, Any] | None:
    """The manifest, or None when the folder holds no readable shortcutlm manifest (nothing prepared yet)."""
    try:
        return read_manifest(folder, require_complete)
    except (FileNotFoundError, ShardError):
        return None


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically and durably (a resumed ``prepare`` keeps the shards it lists)."""
    return write_json(manifest_path(folder), manifest, durable=True, sort_keys=False)


# ------------------------------------------------------------------ partial manifests of prepare jobs

#: ``manifest.part-00001-of-00004.json``: what job 1 of 4 of a prepare across machines wrote.
PART_MANIFEST = "manifest.part-{index:05d}-of-{count:05d}.json"
_PART_PATTERN = re.compile(r"^manifest\.part-(\d{5})-of-(\d{5})\.json$")


def part_manifest_path(folder: str | Path, index: int, count: int) -> Path:
    """Where job ``index`` of ``count`` records its shards and rejections."""
    return Path(folder) / PART_MANIFEST.format(index=index, count=count)


def part_manifests(folder: str | Path) -> dict[tuple[int, int], Path]:
    """Every partial manifest in ``folder``: ``{(index, count): path}``."""
    found = {}
    for path in Path(folder).glob("manifest.part-*.json"):
        match = _PART_PATTERN.match(path.name)
        if match:
            found[(int(match[1]), int(match[2]))] = path
    return dict(sorted(found.items()))


def read_part_manifest(path: str | Path) -> dict[str, Any]:
    """A job's partial manifest; refuses a foreign or unreadable one, naming the file."""
    try:
        manifest = read_json(path, "partial shard manifest", "re-run that prepare job")
    except ArtifactError as err:
        raise ShardError(str(err)) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "job" not in manifest:
        raise ShardError(f"{path}: not a shortcutlm partial shard manifest")
    check_names(manifest, path)
    return manifest


def write_part_manifest(folder: str | Path, index: int, count: int, manifest: dict[str, Any]) -> Path:
    """Write job ``index`` of ``count``'s manifest atomically and durably (the job resumes from it)."""
    return write_json(part_manifest_path(folder, index, count), manifest, durable=True, sort_keys=False)


@dataclass(frozen=True)
class ShardRecord:
    """One finished shard as the manifest lists it: its file, checksum and size, and the documents it
    holds in order (their ids and lengths in positions), with the sums of their meta."""

    name: str
    split: str
    sha256: str
    documents: int
    tokens: int
    size: int
    doc_ids: tuple[str, ...] = ()
    doc_tokens: tuple[int, ...] = ()
    sums: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The entry as written (keys in the order prepare has always written them)."""
        return {"name": self.name, "split": self.split, "sha256": self.sha256, "documents": self.documents,
                "tokens": self.tokens, "size": self.size, "doc_ids": list(self.doc_ids),
                "doc_tokens": list(self.doc_tokens), "sums": dict(self.sums)}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ShardRecord:
        """Read an entry, refusing one whose fields have the wrong type or disagree in length."""
        entry = mapping(data, source, "a shards[] entry")
        doc_ids = checked(entry, "doc_ids", list, source, [])
        doc_tokens = checked(entry, "doc_tokens", list, source, [])
        if not all(isinstance(d, str) for d in doc_ids) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in doc_tokens):
            raise ArtifactError(f"{source}: doc_ids must be strings and doc_tokens whole numbers")
        if doc_tokens and len(doc_tokens) != len(doc_ids):
            raise ArtifactError(f"{source}: {len(doc_ids)} doc_ids but {len(doc_tokens)} doc_tokens")
        sums = checked(entry, "sums", dict, source, {})
        return cls(checked(entry, "name", str, source), checked(entry, "split", str, source),
                   checked(entry, "sha256", str, source), checked(entry, "documents", int, source),
                   checked(entry, "tokens", int, source), checked(entry, "size", int, source, 0),
                   tuple(doc_ids), tuple(doc_tokens),
                   {k: v for k, v in sums.items() if isinstance(v, NUMBER) and not isinstance(v, bool)})


@dataclass(frozen=True)
class SplitInfo:
    """One split of the manifest: its documents, tokens (time steps), shard names, and the sums of
    the documents' meta (``seconds`` for audio and MIDI, ``bytes`` for text)."""

    name: str
    documents: int = 0
    tokens: int = 0
    shards: tuple[str, ...] = ()
    sums: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, entry: dict[str, Any] | None) -> SplitInfo:
        entry = dict(entry or {})
        sums = {k: v for k, v in entry.items() if k not in ("documents", "tokens", "shards")}
        return cls(name, int(entry.get("documents", 0)), int(entry.get("tokens", 0)),
                   tuple(entry.get("shards", ())), sums)

    @property
    def seconds(self) -> float | None:
        value = self.sums.get("seconds")
        return float(value) if value else None

    @property
    def bytes(self) -> int | None:
        value = self.sums.get("bytes")
        return int(value) if value else None

    @property
    def tokens_per_second(self) -> float | None:
        """Tokens per second of the split's audio or music (None for text, or an empty split)."""
        return self.tokens / self.seconds if self.tokens and self.seconds else None

    def sizes(self) -> dict[str, Any]:
        """Everything but the shard names (what a checkpoint's data record keeps of the split)."""
        return {"documents": self.documents, "tokens": self.tokens, **self.sums}


@dataclass(frozen=True)
class TokenizerInfo:
    """What the manifest records of the tokenizer the shards were made with."""

    domain: str
    fingerprint: str
    vocab_size: int
    n_streams: int
    special_ids: dict[str, int]
    folder: str = TOKENIZER_FOLDER

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> TokenizerInfo:
        return cls(entry.get("domain", ""), entry.get("fingerprint", ""), int(entry.get("vocab_size", 0)),
                   int(entry.get("n_streams", 1)), {k: int(v) for k, v in (entry.get("special_ids") or {}).items()},
                   entry.get("folder") or TOKENIZER_FOLDER)

    @property
    def ignored_ids(self) -> list[int]:
        """Target ids no loss is taken on (padding, the delay layout's empty positions)."""
        return ignored_ids(self.special_ids)


@dataclass(frozen=True)
class ShardManifest:
    """A shard folder's manifest with typed accessors; ``raw`` is the dictionary as written."""

    folder: Path
    raw: dict[str, Any]

    @classmethod
    def read(cls, folder: str | Path, require_complete: bool = True) -> ShardManifest:
        return cls(Path(folder), read_manifest(folder, require_complete))

    @classmethod
    def read_or_none(cls, folder: str | Path, require_complete: bool = False) -> ShardManifest | None:
        raw = read_manifest_or_none(folder, require_complete)
        return None if raw is None else cls(Path(folder), raw)

    @property
    def path(self) -> Path:
        return manifest_path(self.folder)

    @property
    def complete(self) -> bool:
        return bool(self.raw.get("complete"))

    @property
    def source(self) -> dict[str, Any]:
        return self.raw.get("source") or {}

    @property
    def tokenizer_settings(self) -> dict[str, Any]:
        """The tokenizer spec ``prepare`` was given (``domain`` and the stated settings)."""
        return self.raw.get("tokenizer_settings") or {}

    @property
    def tokenizer(self) -> TokenizerInfo:
        return TokenizerInfo.from_dict(self.raw.get("tokenizer") or {})

    @property
    def tokenizer_dir(self) -> Path:
        """The saved tokenizer beside the shards."""
        return self.folder / self.tokenizer.folder

    @property
    def fingerprint(self) -> str:
        return self.tokenizer.fingerprint

    @property
    def domain(self) -> str:
        return self.tokenizer.domain

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def special_ids(self) -> dict[str, int]:
        return self.tokenizer.special_ids

    @property
    def ignored_ids(self) -> list[int]:
        return self.tokenizer.ignored_ids

    @property
    def splits(self) -> dict[str, SplitInfo]:
        """Every split in the manifest's order (train, valid, test, then others)."""
        return {name: SplitInfo.from_dict(name, entry) for name, entry in (self.raw.get("splits") or {}).items()}

    def split(self, name: str) -> SplitInfo:
        """The split ``name`` (empty when the manifest has none of that name)."""
        return SplitInfo.from_dict(name, (self.raw.get("splits") or {}).get(name))

    def has_split(self, name: str) -> bool:
        """The split exists and holds tokens."""
        return self.split(name).tokens > 0

    def split_sizes(self) -> dict[str, dict[str, Any]]:
        """``{split: {documents, tokens, seconds|bytes...}}`` without the shard lists."""
        return {name: info.sizes() for name, info in self.splits.items()}

    @property
    def train_tokens_per_second(self) -> float | None:
        """Tokens per second of the train split's audio or music (None for text or without seconds)."""
        return self.split("train").tokens_per_second

    @property
    def shards(self) -> tuple[ShardRecord, ...]:
        """Every shard the manifest lists, in its order."""
        return tuple(ShardRecord.from_dict(entry, f"{self.path}: shards[{index}]")
                     for index, entry in enumerate(self.raw.get("shards") or []))

    def shards_of(self, split: str) -> list[ShardRecord]:
        """The shards of ``split`` in name order (the order the loader reads them)."""
        return sorted((r for r in self.shards if r.split == split), key=lambda r: r.name)

    @property
    def rejected(self) -> list[dict[str, Any]]:
        return list(self.raw.get("rejected") or [])

    @property
    def warnings(self) -> list[str]:
        return list(self.raw.get("warnings") or [])
