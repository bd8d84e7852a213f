"""``pairs.json``: each checkpoint's source worth and task scores, kept beside a run's results.

Written by the recipe's stages and by ``shortcutlm evaluate`` (:mod:`~shortcutlm.pairs.run`), read by
the report's pairs section (:mod:`~shortcutlm.pairs.page`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from shortcutlm.artifacts.files import read_json_or_none

RESULTS = "pairs.json"


def results_path(root: str | Path) -> Path:
    return Path(root) / RESULTS


def read_results(root: str | Path) -> dict[str, Any]:
    """The results in ``root`` by checkpoint name (empty when there are none, or they cannot be read)."""
    body = read_json_or_none(results_path(root))
    return body if isinstance(body, dict) else {}
