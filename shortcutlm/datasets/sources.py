"""Readers of datasets in their published layouts: local path in, Documents out.

Every reader yields :class:`~shortcutlm.documents.Document` objects with a stable id and
the dataset's own split where it has one, plus :class:`Rejected` records for inputs that
the layout lists but that cannot become a document (a transcript line without its flac,
a CSV row whose MIDI file is missing), and first a :class:`~shortcutlm.datasets.found.Found`
line saying which folder it read and what it found there. ``prepare`` keeps all three, so
every input is accounted for.

Use :func:`read_source` with a source spec ``{"name": ..., "path": ..., **options}``. The
published datasets have a module each (:mod:`~shortcutlm.datasets.librispeech`,
:mod:`~shortcutlm.datasets.wikitext`, :mod:`~shortcutlm.datasets.maestro`); text8 and any
folder are read here. Corpora shipped inside packages (Bach chorales, their audio rendering,
Shakespeare) live in :mod:`shortcutlm.datasets.embedded` and are registered here too.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator

from shortcutlm.datasets.found import Found, SourceError, here_or_one_down, need_path
from shortcutlm.datasets.librispeech import librispeech
from shortcutlm.datasets.maestro import maestro
from shortcutlm.datasets.splits import DEFAULT_FRACTIONS, parse_fractions, plan_splits
from shortcutlm.datasets.wikitext import wikitext103
from shortcutlm.documents import Document, Item, Reader, Rejected, safe_id

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
MIDI_EXTENSIONS = (".mid", ".midi")
TEXT_EXTENSIONS = (".txt", ".md", ".text")

TEXT8_SIZES = (90_000_000, 5_000_000, 5_000_000)

#: Words in a file or folder name that say which published split it belongs to.
SPLIT_WORDS = {"train": "train", "training": "train", "valid": "valid", "validation": "valid", "val": "valid",
               "dev": "valid", "test": "test", "testing": "test"}
FOLDER_SPLIT_MODES = ("auto", "names", "hash")


def _options(name: str, options: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SourceError(f"source {name!r}: unknown option(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(allowed)) or 'none'}")


# ---------------------------------------------------------------------------------------- text8

def _text8_bounds(n: int) -> list[tuple[str, int, int]]:
    """Customary 90M/5M/5M characters; a file of another size is split 90/5/5 proportionally."""
    if n == sum(TEXT8_SIZES):
        a, b = TEXT8_SIZES[0], TEXT8_SIZES[0] + TEXT8_SIZES[1]
    else:
        a, b = int(n * 0.90), int(n * 0.95)
    return [("train", 0, a), ("valid", a, b), ("test", b, n)]


def text8(path: str | Path | None = None, chunk_chars: int = 1_000_000) -> Iterator[Item]:
    """text8 (one line of 100M characters): documents are consecutive slices of each split.

    Slices are about ``chunk_chars`` long (so prepare can encode them in parallel); inner
    cut points move forward to the next space so no word is broken. The split boundaries
    themselves stay at exactly 90M / 95M characters, as customary.
    """
    file = need_path(path, "text8")
    if file.is_dir():
        folder = here_or_one_down(file, lambda f: (f / "text8").is_file())
        if folder is None:
            raise FileNotFoundError(f"text8: no file named text8 in {file} or in a folder right under it "
                                    "(text8.zip unpacks to that one file)")
        file = folder / "text8"
    chunk_chars = int(chunk_chars)
    if chunk_chars < 1:
        raise SourceError("text8: chunk_chars must be positive")
    try:
        data = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SourceError(f"text8: {file} is not UTF-8 text (byte {err.start}: {err.reason}); text8 holds lower-case "
                          "a-z and spaces only") from None
    yield Found("text8", file.parent, f"{file.name}, {len(data):,} characters"
                + (" (the published 100,000,000: split 90M/5M/5M)" if len(data) == sum(TEXT8_SIZES)
                   else " (not the published 100,000,000: split 90/5/5 proportionally)"))
    for split, start, end in _text8_bounds(len(data)):
        index, pos = 0, start
        while pos < end:
            cut = min(pos + chunk_chars, end)
            if cut < end:
                space = data.find(" ", cut, end)
                cut = end if space < 0 else space + 1
            meta: dict[str, Any] = {"start": pos, "end": cut}
            if pos > 0 and data[pos - 1] != " " and data[pos:pos + 1] != " ":
                meta["begins_mid_word"] = True  # a customary split boundary falls inside a word
            yield Document(f"text8-{split}-{index:05d}", split, "text8", text=data[pos:cut], meta=meta)
            index, pos = index + 1, cut


# ---------------------------------------------------------------------------------- any folder

def _visible_files(root: Path) -> list[Path]:
    """Files under ``root`` (and links to nothing), hidden files and folders (a leading dot) left out, in path order."""
    return sorted(p for p in root.rglob("*") if (p.is_file() or (p.is_symlink() and not p.exists()))
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _passed_over(files: list[Path], suffixes: tuple[str, ...]) -> Iterator[Rejected]:
    """The files a folder reader does not read, each listed with why (skipped, not failed)."""
    for file in files:
        if file.is_symlink() and not file.exists():
            why = f"a symbolic link to {os.readlink(file)}, which does not exist"
        else:
            why = f"a {file.suffix.lower() or 'suffix-less'} file; only {' '.join(suffixes)} are read here"
        yield Rejected(str(file), f"skipped: {why}", skipped=True)


def _no_match(root: Path, suffixes: tuple[str, ...]) -> str:
    """One line for a folder with no input: the suffixes looked for and what the folder holds instead."""
    held = Counter(p.suffix.lower() or "(no suffix)" for p in _visible_files(root))
    what = ", ".join(f"{n} {suffix}" for suffix, n in held.most_common(6)) if held else "no files"
    return f"folder: no file under {root} ends in {' '.join(suffixes)} (it holds {what})"


def named_split(rel: str) -> tuple[str | None, str]:
    """The split a relative path's folder and file names carry (``wiki.test.raw`` → test, ``dev/x.wav``
    → valid), and a problem when they name two different splits."""
    named = set()
    for part in rel.split("/"):
        for word in re.split(r"[^0-9a-z]+", part.lower()):
            if word in SPLIT_WORDS:
                named.add(SPLIT_WORDS[word])
    if len(named) > 1:
        return None, f"its path names two splits ({', '.join(sorted(named))}); rename or move it"
    return (named.pop() if named else None), ""


def _split_by_names(rels: list[str], mode: str, root: Path) -> dict[str, tuple[str | None, str]]:
    """Each file's named split (or its problem); refuses a folder where some files name a split and others do not."""
    named = {rel: named_split(rel) for rel in rels}
    carriers = [rel for rel, (split, problem) in named.items() if split or problem]
    bare = [rel for rel in rels if rel not in carriers]
    if mode == "auto" and carriers and bare:
        example = next((rel for rel in carriers if named[rel][0]), carriers[0])
        raise SourceError(f"folder: {len(carriers)} file(s) under {root} name a split (e.g. {example} → "
                          f"{named[example][0] or 'two of them'}) but {len(bare)} do not (e.g. {bare[0]}); move "
                          "those into train/, valid/ or test/ folders, or set the source option splits=hash to split "
                          "every file by a hash of its path and ignore the names")
    if mode == "names":
        unnamed = (None, "its path names no split (train, valid/validation/dev or test) and the source option "
                         "splits=names asks for one")
        return {rel: unnamed if rel in bare else named[rel] for rel in rels}
    return named


def folder(path: str | Path | None = None, extensions: list[str] | str | None = None,
           fractions: Any = DEFAULT_FRACTIONS, splits: str = "auto") -> Iterator[Item]:
    """Every audio / MIDI / text file under a folder, in the split its name carries or by a hash of its path.

    ``extensions`` (e.g. ``".mid,.midi"``) narrows the files read; by default every audio,
    MIDI and text suffix is taken (prepare narrows it to the tokenizer's own suffixes).

    ``splits``: ``auto`` (default) uses the split a file's or folder's name carries (``train``;
    ``valid``, ``validation``, ``val`` or ``dev``; ``test``: ``wiki.test.raw``, ``dev/a.wav``) when
    the files carry one, and refuses a folder where some do and some do not, so a published test
    file never lands in train unsaid; ``names`` requires a name (a file without one is rejected);
    ``hash`` ignores names. A path that names two splits is rejected.

    Without names, splits come from a hash of the relative path (``fractions``, default 90/5/5).
    A collection too small to split by file (a split would be empty, or train would get under
    half its share of the bytes) is split inside its files into contiguous parts instead
    (:func:`~shortcutlm.datasets.splits.plan_splits`); a file cut in parts gives one document per
    part, with id ``<file id>__<split>``.
    """
    root = need_path(path, "folder")
    if splits not in FOLDER_SPLIT_MODES:
        raise SourceError(f"folder: splits must be one of {', '.join(FOLDER_SPLIT_MODES)}, not {splits!r}")
    if isinstance(extensions, str):
        extensions = [e.strip() for e in extensions.split(",") if e.strip()]
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                     for e in (extensions or AUDIO_EXTENSIONS + MIDI_EXTENSIONS + TEXT_EXTENSIONS))
    try:
        split_fractions = parse_fractions(fractions)
    except ValueError as err:
        raise SourceError(f"folder: {err}") from None
    visible = _visible_files(root)
    files = [p for p in visible if p.suffix.lower() in suffixes and p.exists()]
    if not files:
        raise FileNotFoundError(_no_match(root, suffixes))
    taken = set(files)
    yield from _passed_over([p for p in visible if p not in taken], suffixes)
    rels = [p.relative_to(root).as_posix() for p in files]
    by_name = _split_by_names(rels, splits, root) if splits != "hash" else {}
    if splits == "names" or any(split or problem for split, problem in by_name.values()):
        counts = Counter(split for split, _ in by_name.values() if split)
        yield Found("folder", root, f"{len(files)} {'/'.join(suffixes)} file(s) in the splits their names carry ("
                    + ", ".join(f"{split} {counts[split]}" for split in ("train", "valid", "test") if counts[split])
                    + ")")
        for file, rel in zip(files, rels):
            split, problem = by_name[rel]
            doc_id = safe_id(rel.replace("/", "__"))
            if split is None:
                yield Rejected(str(file), problem, "", doc_id)
            else:
                yield Document(doc_id, split, "folder", path=file, meta={"relative_path": rel})
        return
    plan = plan_splits({rel: file.stat().st_size for file, rel in zip(files, rels)}, split_fractions)
    cut = any(len(parts) > 1 for parts in plan.values())
    shares = "/".join(f"{100 * f:g}" for f in split_fractions)
    yield Found("folder", root, f"{len(files)} {'/'.join(suffixes)} file(s), no split names; "
                + (f"too few to split by file, so cut inside them {shares} by bytes" if cut
                   else f"split {shares} by a hash of each path"))
    for file, rel in zip(files, rels):
        doc_id = safe_id(rel.replace("/", "__"))
        for split, start, end in plan[rel]:
            if (start, end) == (0.0, 1.0):
                yield Document(doc_id, split, "folder", path=file, meta={"relative_path": rel})
            else:
                yield Document(f"{doc_id}__{split}", split, "folder", path=file, span=(start, end),
                               meta={"relative_path": rel, "part": [start, end]})


# ------------------------------------------------------------------------------------- registry

def _embedded(name: str) -> Reader:
    def reader(**options: Any) -> Iterable[Item]:
        from shortcutlm.datasets import embedded
        return getattr(embedded, name)(**options)
    reader.__name__ = name
    return reader


READERS: dict[str, tuple[Reader, tuple[str, ...]]] = {
    "librispeech": (librispeech, ("path", "subsets", "limit")),
    "text8": (text8, ("path", "chunk_chars")),
    "wikitext103": (wikitext103, ("path", "variant")),
    "maestro": (maestro, ("path", "files")),
    "folder": (folder, ("path", "extensions", "fractions", "splits")),
    "bach_chorales": (_embedded("bach_chorales"), ("limit", "cache", "workers")),
    "chorales_audio": (_embedded("chorales_audio"), ("limit", "cache", "workers", "sample_rate")),
    "shakespeare": (_embedded("shakespeare"), ("limit",)),
}


def read_source(spec: dict[str, Any], found: list[Found] | None = None) -> Iterator[Document | Rejected]:
    """Documents and rejections of a source spec ``{"name": ..., "path": ..., **options}``.

    A reader of a published layout also says where it found its data: those :class:`Found`
    notes go into ``found`` when given (``prepare`` prints and records them) and are dropped
    otherwise, so the stream itself holds only documents and rejections.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in READERS:
        raise SourceError(f"unknown source {name!r}; expected one of {', '.join(READERS)}")
    reader, allowed = READERS[name]
    _options(name, spec, allowed)
    if spec.get("path") is None:
        spec.pop("path", None)
    return _documents(reader(**spec), found)


def _documents(items: Iterable[Item], found: list[Found] | None) -> Iterator[Document | Rejected]:
    for item in items:
        if isinstance(item, Found):
            if found is not None:
                found.append(item)
        else:
            yield item
