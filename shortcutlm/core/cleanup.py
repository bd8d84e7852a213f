"""Failed commands leave no empty output folders behind.

A command that fails before writing anything (a wrong path, a refused setting) should leave the
disk as it found it: an empty ``runs/x/data`` left over looks like a run and misleads the next
attempt. Folders that hold any file are kept: they may be a resumable partial run.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable, Iterator

from shortcutlm.artifacts.lock import LOCK


def holds_files(folder: Path) -> bool:
    """Any file but a run's lock (which the run removes as it ends)."""
    return any(path.is_file() and path.name != LOCK for path in folder.rglob("*"))


@contextmanager
def removed_if_failed(folder: str | Path, worth_keeping: Callable[[Path], bool] = holds_files) -> Iterator[Path]:
    """Run the body; if it raises, remove what it created of ``folder``'s path (the folder and any
    parents that did not exist) unless ``worth_keeping`` says otherwise (default: it holds a file)."""
    folder = Path(folder)
    top = None  # the outermost folder of the path that does not exist yet
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        top = candidate
    try:
        yield folder
    except BaseException:
        if top is not None and top.is_dir() and not worth_keeping(top):
            shutil.rmtree(top, ignore_errors=True)
        raise
