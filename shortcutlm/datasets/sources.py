"""Readers of datasets in their published layouts: local path in, Documents out.

Every reader yields :class:`~shortcutlm.documents.Document` objects with a stable id and
the dataset's own split where it has one, plus :class:`Rejected` records for inputs that
the layout lists but that cannot become a document (a transcript line without its flac,
a CSV row whose MIDI file is missing). ``prepare`` keeps both, so every input is
accounted for.

Use :func:`read_source` with a source spec ``{"name": ..., "path": ..., **options}``.
Corpora shipped inside packages (Bach chorales, their audio rendering, Shakespeare) live
in :mod:`shortcutlm.datasets.embedded` and are registered here too.
"""
from __future__ import annotations

import csv
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from shortcutlm.datasets.splits import DEFAULT_FRACTIONS, parse_fractions, plan_splits
from shortcutlm.documents import Document, Item, Reader, Rejected, safe_id

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
MIDI_EXTENSIONS = (".mid", ".midi")
TEXT_EXTENSIONS = (".txt", ".md", ".text")

LIBRISPEECH_SPLITS = {"train": "train", "dev": "valid", "test": "test"}
MAESTRO_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
TEXT8_SIZES = (90_000_000, 5_000_000, 5_000_000)


def _need_dir(path: str | Path | None, what: str) -> Path:
    if path is None:
        raise ValueError(f"source {what!r} needs a path")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    return path


def _options(name: str, options: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"source {name!r}: unknown option(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(allowed)) or 'none'}")


# ---------------------------------------------------------------------------------- LibriSpeech

def _librispeech_subsets(root: Path, subsets: list[str] | None) -> list[Path]:
    pattern = re.compile(r"^(train|dev|test)-")
    if pattern.match(root.name):
        found = [root]
    else:
        if (root / "LibriSpeech").is_dir():
            root = root / "LibriSpeech"
        found = sorted(p for p in root.iterdir() if p.is_dir() and pattern.match(p.name))
    if subsets:
        found = [p for p in found if p.name in subsets]
        missing = sorted(set(subsets) - {p.name for p in found})
        if missing:
            raise FileNotFoundError(f"librispeech: subset(s) {', '.join(missing)} not found under {root}")
    if not found:
        raise FileNotFoundError(f"librispeech: no train-*/dev-*/test-* subset folders under {root}")
    return found


def librispeech(path: str | Path | None = None, subsets: list[str] | str | None = None) -> Iterator[Item]:
    """``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` + ``<speaker>-<chapter>.trans.txt``.

    The subset folder gives the split (train-* → train, dev-* → valid, test-* → test); the
    transcript goes into ``meta["transcript"]``. A transcript line without its flac is
    rejected; a flac without a transcript line is kept with ``transcript`` None.
    """
    root = _need_dir(path, "librispeech")
    wanted = [s.strip() for s in subsets.split(",")] if isinstance(subsets, str) else subsets
    for subset in _librispeech_subsets(root, wanted):
        split = LIBRISPEECH_SPLITS[subset.name.split("-", 1)[0]]
        for speaker in sorted((p for p in subset.iterdir() if p.is_dir()), key=lambda p: p.name):
            for chapter in sorted((p for p in speaker.iterdir() if p.is_dir()), key=lambda p: p.name):
                transcripts: dict[str, str] = {}
                for trans in sorted(chapter.glob("*.trans.txt")):
                    for line in trans.read_text(encoding="utf-8").splitlines():
                        if line.strip():
                            utt, _, words = line.strip().partition(" ")
                            transcripts[utt] = words
                flacs = {p.stem: p for p in chapter.glob("*.flac")}
                for utt in sorted(set(transcripts) | set(flacs)):
                    meta = {"subset": subset.name, "speaker": speaker.name, "chapter": chapter.name,
                            "transcript": transcripts.get(utt)}
                    if utt not in flacs:
                        yield Rejected(str(chapter / f"{utt}.flac"), "listed in the transcript but the flac is missing",
                                       split, safe_id(utt))
                        continue
                    yield Document(safe_id(utt), split, "librispeech", path=flacs[utt], meta=meta)


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
    file = _need_dir(path, "text8")
    if file.is_dir():
        file = file / "text8"
    chunk_chars = int(chunk_chars)
    if chunk_chars < 1:
        raise ValueError("text8: chunk_chars must be positive")
    data = file.read_text(encoding="utf-8")
    for split, start, end in _text8_bounds(len(data)):
        index, pos = 0, start
        while pos < end:
            cut = min(pos + chunk_chars, end)
            if cut < end:
                space = data.find(" ", cut, end)
                cut = end if space < 0 else space + 1
            yield Document(f"text8-{split}-{index:05d}", split, "text8", text=data[pos:cut],
                           meta={"start": pos, "end": cut})
            index, pos = index + 1, cut


# --------------------------------------------------------------------------------- WikiText-103

WIKITEXT_FILES = {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"}
_ARTICLE_HEADING = re.compile(r"^ = [^=].* = $")


def _wikitext_articles(lines: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    title, body = "", []  # type: str, list[str]
    for line in lines:
        if _ARTICLE_HEADING.match(line.rstrip("\n")):
            if title or any(x.strip() for x in body):
                yield title, body
            title, body = line.strip().strip("=").strip(), [line]
        else:
            body.append(line)
    if title or any(x.strip() for x in body):
        yield title, body


def wikitext103(path: str | Path | None = None) -> Iterator[Item]:
    """``wiki.{train,valid,test}.tokens``, cut into articles at the `` = Title = `` lines.

    Lines are kept verbatim (heading included) so the articles of a split concatenate back
    to the file.
    """
    root = _need_dir(path, "wikitext103")
    if root.is_file():
        root = root.parent
    if not (root / WIKITEXT_FILES["train"]).is_file() and (root / "wikitext-103").is_dir():
        root = root / "wikitext-103"
    missing = [f for f in WIKITEXT_FILES.values() if not (root / f).is_file()]
    if len(missing) == len(WIKITEXT_FILES):
        raise FileNotFoundError(f"wikitext103: none of {', '.join(WIKITEXT_FILES.values())} under {root}")
    for split, name in WIKITEXT_FILES.items():
        if name in missing:
            continue
        with open(root / name, encoding="utf-8") as handle:
            for index, (title, body) in enumerate(_wikitext_articles(handle)):
                yield Document(f"wikitext103-{split}-{index:06d}", split, "wikitext103", text="".join(body),
                               meta={"title": title})


# ------------------------------------------------------------------------------------ MAESTRO v3

def maestro(path: str | Path | None = None, files: str = "midi") -> Iterator[Item]:
    """MAESTRO v3: ``maestro-v3.0.0.csv`` (its ``split`` column) plus the MIDI (or audio) files.

    ``files="audio"`` reads the ``audio_filename`` column instead, for acoustic tokens.
    Rows whose file is missing or whose split is unknown are rejected.
    """
    if files not in ("midi", "audio"):
        raise ValueError(f"maestro: files must be 'midi' or 'audio', not {files!r}")
    given = _need_dir(path, "maestro")
    csv_path = given if given.is_file() else given / "maestro-v3.0.0.csv"
    if not csv_path.is_file():
        candidates = sorted(given.glob("maestro-v*.csv")) if given.is_dir() else []
        if not candidates:
            raise FileNotFoundError(f"maestro: no maestro-v3.0.0.csv in {given}")
        csv_path = candidates[-1]
    root = csv_path.parent
    column = f"{files}_filename"
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for needed in ("split", column):
            if needed not in (reader.fieldnames or []):
                raise ValueError(f"maestro: {csv_path} has no {needed!r} column")
        for row in reader:
            rel = row[column]
            doc_id = safe_id(str(Path(rel).with_suffix("")))
            split = MAESTRO_SPLITS.get(row["split"].strip())
            if split is None:
                yield Rejected(rel, f"unknown split {row['split']!r} in {csv_path.name}", "", doc_id)
                continue
            file = root / rel
            if not file.is_file():
                yield Rejected(str(file), "listed in the CSV but the file is missing", split, doc_id)
                continue
            meta = {k: row[k] for k in ("canonical_composer", "canonical_title", "year", "duration") if k in row}
            yield Document(doc_id, split, "maestro", path=file, meta=meta)


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


def folder(path: str | Path | None = None, extensions: list[str] | str | None = None,
           fractions: Any = DEFAULT_FRACTIONS) -> Iterator[Item]:
    """Every audio / MIDI / text file under a folder; split by a hash of the relative path.

    ``extensions`` (e.g. ``".mid,.midi"``) narrows the files read; by default every audio,
    MIDI and text suffix is taken (prepare narrows it to the tokenizer's own suffixes).
    ``fractions`` defaults to 90/5/5. A collection too small to split by file (a split would
    be empty, or train would get under half its share of the bytes) is split inside its files
    into contiguous parts instead (:func:`~shortcutlm.datasets.splits.plan_splits`); a file cut
    in parts gives one document per part, with id ``<file id>__<split>``.
    """
    root = _need_dir(path, "folder")
    if isinstance(extensions, str):
        extensions = [e.strip() for e in extensions.split(",") if e.strip()]
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                     for e in (extensions or AUDIO_EXTENSIONS + MIDI_EXTENSIONS + TEXT_EXTENSIONS))
    split_fractions = parse_fractions(fractions)
    visible = _visible_files(root)
    files = [p for p in visible if p.suffix.lower() in suffixes and p.exists()]
    if not files:
        raise FileNotFoundError(_no_match(root, suffixes))
    taken = set(files)
    yield from _passed_over([p for p in visible if p not in taken], suffixes)
    rels = [p.relative_to(root).as_posix() for p in files]
    plan = plan_splits({rel: file.stat().st_size for file, rel in zip(files, rels)}, split_fractions)
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
    "librispeech": (librispeech, ("path", "subsets")),
    "text8": (text8, ("path", "chunk_chars")),
    "wikitext103": (wikitext103, ("path",)),
    "maestro": (maestro, ("path", "files")),
    "folder": (folder, ("path", "extensions", "fractions")),
    "bach_chorales": (_embedded("bach_chorales"), ("limit", "cache", "workers")),
    "chorales_audio": (_embedded("chorales_audio"), ("limit", "cache", "workers", "sample_rate")),
    "shakespeare": (_embedded("shakespeare"), ("limit",)),
}


def read_source(spec: dict[str, Any]) -> Iterator[Item]:
    """Documents and rejections of a source spec ``{"name": ..., "path": ..., **options}``."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in READERS:
        raise ValueError(f"unknown source {name!r}; expected one of {', '.join(READERS)}")
    reader, allowed = READERS[name]
    _options(name, spec, allowed)
    if spec.get("path") is None:
        spec.pop("path", None)
    return iter(reader(**spec))
