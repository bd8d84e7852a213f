"""WikiText-103 as published (Merity et al., 2016), in either of its two variants.

* raw (``wikitext-103-raw-v1.zip`` → ``wikitext-103-raw/wiki.{train,valid,test}.raw``): the
  articles' own characters; what a subword tokenizer should be trained on;
* tokenised (``wikitext-103-v1.zip`` → ``wikitext-103/wiki.{train,valid,test}.tokens``): words
  split by spaces, rare words replaced by ``<unk>``, hyphens written `` @-@ ``.

``--path`` may be the variant's folder, a file in it, or the folder the zips were unpacked into.
``variant="auto"`` reads raw where both are present; the reader says which one it read. Articles
are cut at their `` = Title = `` lines (sub-headings `` = = … = = `` stay inside).
"""
from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Iterable, Iterator

from shortcutlm.datasets.found import Found, SourceError, need_path
from shortcutlm.documents import Document, Item, Rejected

SPLITS = ("train", "valid", "test")
VARIANTS = {"raw": "wiki.{split}.raw", "tokens": "wiki.{split}.tokens"}
FOLDERS = {"raw": ("wikitext-103-raw", "wikitext-2-raw"), "tokens": ("wikitext-103", "wikitext-2")}
_ARTICLE_HEADING = re.compile(r"^ = [^=].* = $")


def _files(folder: Path, variant: str) -> dict[str, Path]:
    return {s: folder / VARIANTS[variant].format(split=s) for s in SPLITS
            if (folder / VARIANTS[variant].format(split=s)).is_file()}


def locate(given: Path, variant: str = "auto") -> tuple[str, Path, dict[str, Path]]:
    """The variant read, its folder and its files by split: here first, then the published folders right
    under it, then any other folder right under it."""
    if variant not in ("auto", *VARIANTS):
        raise SourceError(f"wikitext103: variant must be auto, raw or tokens, not {variant!r}")
    root = given.parent if given.is_file() else given
    order = ("raw", "tokens") if variant == "auto" else (variant,)
    others = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    places = [root] + [root / name for v in order for name in FOLDERS[v]] + others  # the published names first
    for place in places:
        for kind in order:
            files = _files(place, kind) if place.is_dir() else {}
            if files:
                return kind, place, files
    wanted = " or ".join(VARIANTS[v].format(split="{train,valid,test}") for v in order)
    raise FileNotFoundError(f"wikitext103: no {wanted} in {root} or in a folder right under it (e.g. "
                            f"{FOLDERS[order[0]][0]}/)")


def _articles(lines: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    title, body = "", []  # type: str, list[str]
    for line in lines:
        if _ARTICLE_HEADING.match(line.rstrip("\n")):
            if title or any(x.strip() for x in body):
                yield title, body
                body = []
            # blank lines before the first heading open the first article, so nothing is lost
            title, body = line.strip().strip("=").strip(), body + [line]
        else:
            body.append(line)
    if title or any(x.strip() for x in body):
        yield title, body


def _other_variant(kind: str, folder: Path) -> str:
    other = "tokens" if kind == "raw" else "raw"
    for place in [folder, folder.parent] + [folder.parent / n for n in FOLDERS[other]]:
        if place.is_dir() and _files(place, other):
            return f"; the {other} variant is also in {place} (source option variant={other} reads it)"
    return ""


def wikitext103(path: str | Path | None = None, variant: str = "auto") -> Iterator[Item]:
    """Articles of ``wiki.{train,valid,test}.raw`` (or ``.tokens``), one document each.

    Lines are kept verbatim (heading included) so a split's articles concatenate back to its
    file. A split file that is missing is said in the found line (``prepare`` warns of the empty
    split); one that is not UTF-8 is rejected from the first bad line on.
    """
    kind, folder, files = locate(need_path(path, "wikitext103"), str(variant))
    missing = [VARIANTS[kind].format(split=s) for s in SPLITS if s not in files]
    note = f" (missing: {', '.join(missing)})" if missing else ""
    yield Found("wikitext103", folder, f"the {kind} variant, {', '.join(p.name for p in files.values())}{note}"
                                       f"{_other_variant(kind, folder)}")
    for split, file in files.items():
        index = 0
        with open(file, encoding="utf-8") as handle:
            try:
                for title, body in _articles(handle):
                    yield Document(f"wikitext103-{split}-{index:06d}", split, "wikitext103", text="".join(body),
                                   meta={"title": title, "variant": kind})
                    index += 1
            except UnicodeDecodeError as err:
                yield Rejected(str(file), f"not UTF-8 ({err.reason} at byte {err.start} of a read block); the "
                                          f"file was read up to article {index} only", split)
