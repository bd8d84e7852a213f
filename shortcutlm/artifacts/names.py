"""Names read from outside (a manifest, a served folder's listing, a checkpoint folder) are untrusted.

A manifest names files inside its folder: shards, the tokenizer's folder and files. Whoever wrote
it (a server, a colleague, a corrupted disk) may have written ``../../.bashrc`` or ``/etc/passwd``
there; followed, such a name reads or writes outside the folder. Every such name passes
:func:`plain_name` before it is joined to a folder, and :func:`inside` checks the joined path does
not leave the folder through a symbolic link either. Counts and sizes read from outside are held
to the bounds here before anything is allocated for them.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from shortcutlm.artifacts.files import ArtifactError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, s3:, file:, pipe:, and Windows drives (C:)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: A manifest larger than this is refused before it is parsed (a real one lists about 30 bytes per
#: document: 64 MiB is some two million documents).
MAX_MANIFEST_BYTES = 64 << 20
#: Shards one manifest may list (400 billion tokens at the default 4M tokens a shard).
MAX_SHARDS = 100_000
#: Documents one manifest may list across its shards.
MAX_DOCUMENTS = 20_000_000
#: Files a tokenizer folder may hold, and the size of each (EnCodec's weights are about 90 MB).
MAX_TOKENIZER_FILES = 64
MAX_TOKENIZER_FILE_BYTES = 2 << 30
#: One shard (the default closes a shard at 4M ids, about 8 MB of uint16).
MAX_SHARD_BYTES = 4 << 30


class UnsafeName(ArtifactError, ValueError):
    """A name read from outside is not a plain relative path inside its folder."""


def plain_name(value: Any, field: str, where: str | Path) -> str:
    """``value`` when it is a plain relative path (``a/b.tar``) that stays inside its folder.

    Refused, in one line naming ``where`` (the file it was read from), ``field`` and the value: a
    non-string or empty name, an absolute path, a drive or scheme (``C:``, ``http:``), a ``..``
    part, a backslash, a control character.
    """
    problem = _problem(value)
    if problem:
        raise UnsafeName(f"{where}: {field} {value!r} is not a plain relative path inside the folder ({problem}); "
                         "refusing to follow it")
    return value


def _problem(value: Any) -> str:
    if not isinstance(value, str):
        return f"a {type(value).__name__}, not a string"
    if not value or value.strip() != value:
        return "empty or padded with spaces"
    if _CONTROL.search(value):
        return "it holds a control character"
    if "\\" in value:
        return "it holds a backslash"
    if value.startswith("/") or value.startswith("~"):
        return "an absolute path"
    if _SCHEME.match(value):
        return "a drive or URL scheme"
    if any(part in ("..", ".") or not part for part in PurePosixPath(value).parts) or "//" in value:
        return "it climbs out with '..' or has empty parts"
    return ""


def inside(folder: str | Path, name: str, field: str, where: str | Path) -> Path:
    """``folder / name`` once ``name`` is plain and the path (through any symbolic link) stays in ``folder``."""
    folder = Path(folder)
    path = folder / plain_name(name, field, where)
    real, top = path.resolve(), folder.resolve()
    if real != top and top not in real.parents:
        raise UnsafeName(f"{where}: {field} {name!r} leads outside {folder} (to {real}) through a symbolic link; "
                         "refusing to follow it")
    return path


def bounded_count(items: Any, limit: int, field: str, where: str | Path) -> list[Any]:
    """``items`` as a list when it is one of at most ``limit`` entries; one line otherwise."""
    if not isinstance(items, list):
        raise UnsafeName(f"{where}: {field} is a {type(items).__name__}, not a list")
    if len(items) > limit:
        raise UnsafeName(f"{where}: {field} lists {len(items):,} entries, more than the {limit:,} allowed")
    return items
