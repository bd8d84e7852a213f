"""Writing and reading artifact files: atomically, durably where it matters, one JSON convention.

A reader (a resumed run, a report, another rank) must never see half a file, so every write goes
to a temporary file beside the target and is renamed over it. ``durable`` also flushes the data
and the folder entry to disk (``fsync``) before and after the rename: a power cut or ``kill -9``
then leaves the old file or the new one, never an empty one. Use it for what a resume depends
on (checkpoint folders, manifests); caches and reports can skip it.
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any
from collections.abc import Callable

from shortcutlm.core.errors import UserError


class ArtifactError(UserError):
    """An artifact file is missing or unreadable; the message names the file and what to do."""


class DiskFull(ArtifactError):
    """The device filled up while a run wrote its files; what was saved before stays, and a re-run resumes."""


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def is_no_space(err: BaseException | None) -> bool:
    """The error (or one it came from) says the device or quota is full. torch's zip writer and
    some libraries report it as a RuntimeError with the system's words."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            return True
        if isinstance(err, RuntimeError) and ("No space left" in str(err) or "file write failed" in str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full(path: str | Path, what: str) -> DiskFull:
    """One line for a full device: the folder, what was being written, and the free space there."""
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:,.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFull(f"{folder}: no space left on the device while writing {what} ({free}); what was saved before "
                    "is kept: free some space and run the same command again to resume")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open a folder: the rename still stands
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (``durable``: with fsync)."""
    def fill(fh: IO[bytes]) -> None:
        fh.write(data)

    return write_with(path, fill, durable)


def write_with(path: str | Path, fill: Callable[[IO[bytes]], Any], durable: bool = False,
               shared: bool = False) -> Path:
    """Write ``path`` by calling ``fill`` on an open binary file, then rename it into place.

    For what is too large to hold as bytes first (model weights) or is written by a library
    (``torch.save``). ``shared``: several processes may write this file at once (a cache shared by
    DDP ranks), so each writes a temporary file of its own name; the last rename wins whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if shared:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        tmp, fh = Path(name), os.fdopen(fd, "wb")
    else:
        tmp = path.with_name(path.name + ".tmp")
        fh = open(tmp, "wb")
    try:
        with fh:
            fill(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_no_space(err):
            raise disk_full(path.parent, path.name) from err
        raise
    if durable:
        _fsync_folder(path.parent)
    return path


def write_text(path: str | Path, text: str, durable: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), durable)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: numpy values to Python, NaN and ±inf to None (JSON has neither),
    tuples to lists, keys and paths to strings."""
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data: Any, durable: bool = False, sort_keys: bool = True) -> Path:
    """Write ``data`` as indented JSON (see :func:`jsonable`) atomically."""
    text = json.dumps(jsonable(data), indent=2, sort_keys=sort_keys, default=str) + "\n"
    return write_text(path, text, durable)


def read_json(path: str | Path, what: str = "file", fix: str = "") -> Any:
    """The JSON in ``path``, or one :class:`ArtifactError` line naming the file (``what`` it is and
    ``fix``, how to recover)."""
    path = Path(path)
    tail = f"; {fix}" if fix else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ArtifactError(f"{path}: no such {what}{tail}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: cannot read this {what} ({err}){tail}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: this {what} is not valid JSON ({err}){tail}") from err


def read_json_or_none(path: str | Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (caches: recompute then)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
