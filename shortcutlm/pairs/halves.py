"""The halves of the pairs as one folder per domain, laid out for ``prepare``'s folder source.

``<out>/halves/<domain>/<split>/p<index>.<ext>``: a link to the source's file (audio, MIDI), or the
text of a transcript written out; the split folder carries the pair's split (``splits: names``), so
both halves of a pair land in the same split, and file names carry no words of their own (a stem
such as ``dev_take`` could otherwise name a split). ``<out>/halves/pairs.json`` maps each index to
its pair.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.files import read_json_or_none, write_json, write_text
from shortcutlm.documents import safe_id
from shortcutlm.pairs.records import Pair
from shortcutlm.pairs.tasks import PairError

HALVES = "halves"
INDEX = "pairs.json"


def half_name(index: int) -> str:
    return f"p{index:06d}"


def doc_key(file: str) -> str:
    """The document id ``prepare``'s folder source gives a half (``file``: its path under ``out``,
    ``halves/<domain>/<split>/p<index>.<ext>``): the path inside the domain's folder, made a key."""
    return safe_id("/".join(file.split("/")[2:]).replace("/", "__"))


def check_same_source(out: Path, source: dict[str, Any]) -> None:
    """A pairs folder holds the pairs of one source: another source's halves would mix with its own
    (and the parts' prepare would resume over them), so it is refused in one line."""
    body = read_json_or_none(out / HALVES / INDEX)
    if isinstance(body, dict) and body.get("source") != source:
        raise PairError(f"{out} holds the pairs of another source ({body.get('source')}); prepare these pairs "
                        f"({source}) into a new folder")


def write_halves(pairs: list[Pair], out: Path, source: dict[str, Any]) -> dict[str, Any]:
    """Lay the halves out under ``out/halves`` (kept where they are already) and return the index."""
    root = out / HALVES
    index: dict[str, Any] = {"source": source, "pairs": []}
    for number, pair in enumerate(pairs):
        files = {}
        for half in pair.halves:
            target = root / half.domain / pair.split / (half_name(number) + half.suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            if half.text is not None:
                if not target.is_file() or target.read_text(encoding="utf-8") != half.text:
                    write_text(target, half.text)
            else:
                assert half.path is not None
                original = half.path.resolve()
                if target.is_symlink() and Path(os.readlink(target)) != original:
                    target.unlink()  # a link this step made, to an earlier run's file
                if not target.is_symlink():
                    if target.exists():
                        raise PairError(f"{target}: a file this step did not write; prepare pairs into a new folder")
                    target.symlink_to(original)
            files[half.domain] = target.relative_to(out).as_posix()
        index["pairs"].append({"index": number, "pair_id": pair.pair_id, "split": pair.split, "files": files,
                               "sources": {h.domain: h.describe() for h in pair.halves}, "meta": pair.meta})
    write_json(root / INDEX, index)
    return index


def read_index(out: Path) -> dict[str, Any]:
    body = read_json_or_none(out / HALVES / INDEX)
    if not isinstance(body, dict):
        raise PairError(f"{out / HALVES / INDEX}: missing or not a pairs index; prepare the pairs again")
    return body
