"""LibriSpeech as published (openslr.org/12): each archive unpacks to ``LibriSpeech/<subset>/``.

Layout: ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with one
``<speaker>-<chapter>.trans.txt`` per chapter (lines ``<utt id> WORDS IN CAPITALS``); subsets are
``train-clean-100``, ``train-clean-360``, ``train-other-500``, ``dev-clean``, ``dev-other``,
``test-clean``, ``test-other``. The subset's prefix is the split (train → train, dev → valid,
test → test). ``--path`` may be a subset folder, ``LibriSpeech/`` or the folder holding it.
"""
from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Iterator

from shortcutlm.datasets.found import Found, SourceError, here_or_one_down, need_path
from shortcutlm.documents import Document, Item, Rejected, safe_id

SPLITS = {"train": "train", "dev": "valid", "test": "test"}
SUBSET = re.compile(r"^(train|dev|test)-")


def _holds_subsets(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() and SUBSET.match(p.name) for p in folder.iterdir())


def find_subsets(given: Path, wanted: list[str] | None) -> tuple[Path, list[Path]]:
    """The folder holding the subsets and the subset folders to read (all, or ``wanted``)."""
    if SUBSET.match(given.name) and given.is_dir():
        root, found = given.parent, [given]
    else:
        located = here_or_one_down(given, _holds_subsets, ("LibriSpeech",))
        if located is None:
            raise FileNotFoundError(f"librispeech: no train-*/dev-*/test-* subset folders in {given} "
                                    "or in a folder right under it (e.g. LibriSpeech/)")
        root = located
        order = list(SPLITS)
        found = sorted((p for p in root.iterdir() if p.is_dir() and SUBSET.match(p.name)),
                       key=lambda p: (order.index(p.name.split("-", 1)[0]), p.name))
    if wanted:
        missing = [s for s in wanted if s not in {p.name for p in found}]
        if missing:
            raise FileNotFoundError(f"librispeech: subset(s) {', '.join(missing)} not found in {root} "
                                    f"(it holds {', '.join(p.name for p in found)}); set source.subsets "
                                    "to the subsets you have")
        found = [p for p in found if p.name in wanted]
    return root, found


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)


def _chapter(chapter: Path) -> tuple[dict[str, str], dict[str, Path], list[Rejected]]:
    """A chapter's transcript lines and flac files by utterance id, and its unreadable transcripts."""
    transcripts: dict[str, str] = {}
    problems: list[Rejected] = []
    for trans in sorted(chapter.glob("*.trans.txt")):
        try:
            text = trans.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as err:
            problems.append(Rejected(str(trans), f"unreadable transcript ({type(err).__name__}); its utterances "
                                                 "are kept without transcripts"))
            continue
        for line in text.splitlines():
            if line.strip():
                utt, _, words = line.strip().partition(" ")
                transcripts[utt] = words
    flacs = {p.name[:-len(".flac")]: p for p in chapter.iterdir() if p.name.endswith(".flac") and p.is_file()}
    return transcripts, flacs, problems


def _spread(ids: list[str], limit: int | None) -> list[str]:
    """``limit`` ids spread evenly over the sorted list (so a small sample still hears many speakers)."""
    if limit is None or limit >= len(ids):
        return ids
    return [ids[(i * len(ids)) // limit] for i in range(limit)]


def _subset_items(subset: Path, limit: int | None) -> Iterator[Item]:
    split = SPLITS[subset.name.split("-", 1)[0]]
    entries: list[tuple[str, dict, Path | None, Path]] = []
    for speaker in _subdirs(subset):
        for chapter in _subdirs(speaker):
            transcripts, flacs, problems = _chapter(chapter)
            for problem in problems:
                yield Rejected(problem.input, problem.reason, split)
            for utt in sorted(set(transcripts) | set(flacs)):
                meta = {"subset": subset.name, "speaker": speaker.name, "chapter": chapter.name,
                        "transcript": transcripts.get(utt)}
                entries.append((utt, meta, flacs.get(utt), chapter))
    chosen = set(_spread([e[0] for e in entries], limit))
    for utt, meta, flac, chapter in entries:
        if utt not in chosen:
            continue
        if flac is None:
            yield Rejected(str(chapter / f"{utt}.flac"), "listed in the transcript but the flac is missing",
                           split, safe_id(utt))
        else:
            yield Document(safe_id(utt), split, "librispeech", path=flac, meta=meta)


def librispeech(path: str | Path | None = None, subsets: list[str] | str | None = None,
                limit: int | None = None) -> Iterator[Item]:
    """Utterances of the chosen subsets (all found by default), their transcripts in ``meta["transcript"]``.

    ``limit``: at most this many utterances per subset, spread evenly over its speakers and
    chapters (for small runs on a full copy). A transcript line without its flac is rejected; a
    flac without a transcript line is kept with ``transcript`` None.
    """
    given = need_path(path, "librispeech")
    wanted = [s.strip() for s in subsets.split(",") if s.strip()] if isinstance(subsets, str) else subsets
    if limit is not None and int(limit) < 1:
        raise SourceError(f"librispeech: limit must be a positive number of utterances per subset, not {limit}")
    root, found = find_subsets(given, list(wanted) if wanted else None)
    described = ", ".join(f"{p.name} ({SPLITS[p.name.split('-', 1)[0]]})" for p in found)
    each = f", at most {int(limit)} utterances each" if limit is not None else ""
    yield Found("librispeech", root, f"subsets {described}{each}")
    for subset in found:
        yield from _subset_items(subset, int(limit) if limit is not None else None)
