"""The ablation's own JSON files (run records, caches, ``results.json``): read, sanitise, write atomically.

Every file the ablation writes goes through :func:`write_json` (or :func:`write_text` for the
page), and every cache is ``{"key": ..., "<field>": ...}`` compared after the same sanitising
(:func:`jsonable`), so a key read back from disk equals a freshly computed one.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_text(path: Path, text: str, encoding: str | None = None) -> None:
    """Write through a temporary file beside ``path``, then rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding=encoding)
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(jsonable(data), indent=2, sort_keys=True, default=str) + "\n")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: numpy values to Python, NaN and ±inf to None, tuples to lists, keys to str."""
    try:
        import numpy as np
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
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


def read_cache(path: Path, key: Any, field: str) -> Any:
    """``field`` of the cache file at ``path`` when it was stored under ``key``; else None."""
    data = read_json(path)
    if data and data.get("key") == jsonable(key):
        return data[field]
    return None


def write_cache(path: Path, key: Any, field: str, value: Any) -> None:
    write_json(path, {"key": key, field: value})
