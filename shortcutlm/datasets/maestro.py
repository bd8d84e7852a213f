"""MAESTRO v3 as published (magenta.tensorflow.org/datasets/maestro).

``maestro-v3.0.0-midi.zip`` (and the audio zip) unpack to ``maestro-v3.0.0/``, which holds
``maestro-v3.0.0.csv`` (columns ``canonical_composer, canonical_title, split, year,
midi_filename, audio_filename, duration``; ``split`` is ``train``, ``validation`` or ``test``)
and the year folders the CSV's file names point into. ``--path`` may be that folder, the CSV,
or the folder the zip was unpacked into.
"""
from __future__ import annotations

import csv
from pathlib import Path
from collections.abc import Iterator

from shortcutlm.datasets.found import Found, SourceError, here_or_one_down, need_path
from shortcutlm.documents import Document, Item, Rejected, safe_id

SPLITS = {"train": "train", "validation": "valid", "test": "test"}
TOP_FOLDERS = ("maestro-v3.0.0", "maestro-v2.0.0")


def _csv_in(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    if (folder / f"{folder.name}.csv").is_file():
        return folder / f"{folder.name}.csv"
    candidates = sorted(folder.glob("maestro-v*.csv"))
    return candidates[-1] if candidates else None


def find_csv(given: Path) -> Path:
    """The metadata CSV: ``given`` itself, in ``given``, or in the one folder right under it."""
    if given.is_file():
        return given
    folder = here_or_one_down(given, lambda f: _csv_in(f) is not None, TOP_FOLDERS)
    if folder is None:
        raise FileNotFoundError(f"maestro: no maestro-v3.0.0.csv in {given} or in a folder right under it "
                                "(e.g. maestro-v3.0.0/)")
    found = _csv_in(folder)
    assert found is not None
    return found


def _inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` when ``rel`` is a plain relative path that stays inside ``root`` (the CSV is untrusted)."""
    candidate = Path(rel)
    if not rel or candidate.is_absolute() or ".." in candidate.parts:
        return None
    return root / candidate


def maestro(path: str | Path | None = None, files: str = "midi") -> Iterator[Item]:
    """One document per CSV row, in the row's own split; ``files="audio"`` reads ``audio_filename`` instead.

    A row whose file is missing, whose file name leaves the dataset folder, or whose split is not
    one of the published three is rejected with the reason.
    """
    if files not in ("midi", "audio"):
        raise SourceError(f"maestro: files must be 'midi' or 'audio', not {files!r}")
    csv_path = find_csv(need_path(path, "maestro"))
    root = csv_path.parent
    column = f"{files}_filename"
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for needed in ("split", column):
            if needed not in (reader.fieldnames or []):
                raise SourceError(f"maestro: {csv_path} has no {needed!r} column")
        rows = list(reader)
    yield Found("maestro", root, f"{csv_path.name} ({len(rows)} rows), reading its {column} column")
    for row in rows:
        rel = (row.get(column) or "").strip()
        doc_id = safe_id(str(Path(rel).with_suffix(""))) if rel else "row"
        split = SPLITS.get((row.get("split") or "").strip())
        if split is None:
            yield Rejected(rel or csv_path.name, f"unknown split {row.get('split')!r} in {csv_path.name} "
                                                 f"(expected train, validation or test)", "", doc_id)
            continue
        file = _inside(root, rel)
        if file is None:
            yield Rejected(rel or csv_path.name, f"{column} {rel!r} in {csv_path.name} is not a relative path "
                                                 "inside the dataset folder", split, doc_id)
            continue
        if not file.is_file():
            yield Rejected(str(file), "listed in the CSV but the file is missing", split, doc_id)
            continue
        meta = {k: row[k] for k in ("canonical_composer", "canonical_title", "year", "duration") if k in row}
        yield Document(doc_id, split, "maestro", path=file, meta=meta)
