"""Where a reader found its dataset: the folder it read and which variant of the layout it saw.

A published dataset is unpacked by hand, so ``--path`` may name the dataset's own folder or the
folder its archive was unpacked into (one level up). Readers look in both, and say which folder
they read and what they found there (``Found``, yielded before the documents); ``prepare``
prints that line and keeps it in the manifest, so a run never reads a folder nobody saw named.
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

from shortcutlm.documents import Found
from shortcutlm.core.errors import UserError

__all__ = ["Found", "SourceError", "here_or_one_down", "need_path"]


class SourceError(UserError, ValueError):
    """A source spec or a dataset's own files cannot be read as asked (an unknown option, a folder that
    mixes named and unnamed splits, a CSV without its columns): one line naming the file or option."""


def need_path(path: str | Path | None, what: str) -> Path:
    """The ``path`` option as a Path that exists, or a one-line error naming it."""
    if path is None:
        raise SourceError(f"source {what!r} needs a path")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(f"{what}: {resolved} does not exist")
    return resolved


def here_or_one_down(root: Path, holds: Callable[[Path], bool], names: tuple[str, ...] = ()) -> Path | None:
    """``root`` when it holds the dataset, else the one folder right under it that does.

    ``names`` are the published top folder names, tried first (``LibriSpeech``,
    ``maestro-v3.0.0``); then every other sub-folder. Two sub-folders that both hold the
    dataset are ambiguous: the caller gets the first in ``names`` order, then path order.
    """
    if holds(root):
        return root
    if not root.is_dir():
        return None
    for name in names:
        if (root / name).is_dir() and holds(root / name):
            return root / name
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if holds(child):
            return child
    return None
