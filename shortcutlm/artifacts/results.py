"""Evaluation results: ``results.json`` (every figure) and ``results.md`` (the tables) in one folder.

``shortcutlm evaluate --out DIR`` and the recipe's evaluate stage write them; the run report and
scripts read them back through here. The JSON is ``{"split", "created", "checkpoints": [record,
...]}``, one record per checkpoint as :func:`shortcutlm.evaluation.evaluate_checkpoint` returns it.

Non-finite numbers: JSON has none, so the one sanitiser (:func:`~shortcutlm.artifacts.files.jsonable`)
writes NaN and ±inf as ``null``. A NaN means "no targets" (a loss group the split never hit) and
stays ``null``. The one infinity an evaluation can produce is a perplexity whose loss overflows
``exp``; it is a function of ``loss_nats``, which is always written, so :func:`read_results` puts
it back (``inf``) where the loss is known. Readers of the file see the same numbers as the caller of
the evaluation, and the markdown (rendered before writing) shows ``inf``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.files import read_json, write_json, write_text

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
_FIX = "run `shortcutlm evaluate` (or the recipe's evaluate stage) again"


def results_json_path(folder: str | Path) -> Path:
    return Path(folder) / RESULTS_JSON


def results_md_path(folder: str | Path) -> Path:
    return Path(folder) / RESULTS_MD


def has_results(folder: str | Path) -> bool:
    return results_json_path(folder).is_file()


def write_results(folder: str | Path, results: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``results.md`` then ``results.json`` into ``folder`` (each atomically); returns both paths."""
    md = write_text(results_md_path(folder), markdown)
    js = write_json(results_json_path(folder), results, sort_keys=False)
    return md, js


def _perplexity(record: dict[str, Any]) -> None:
    """Put back a perplexity written as null because it overflowed (see the module docstring)."""
    loss = record.get("loss_nats")
    if record.get("perplexity") is None and isinstance(loss, (int, float)) and record.get("tokens"):
        record["perplexity"] = math.inf  # e^loss is finite whenever it was written as a number


def read_results(folder: str | Path) -> dict[str, Any]:
    """The evaluation in ``folder``'s ``results.json``; an ArtifactError naming the file when it is
    missing or unreadable."""
    results = read_json(results_json_path(folder), "evaluation results", _FIX)
    for record in results.get("checkpoints", []):
        _perplexity(record)
        for key, groups in record.items():
            if key.startswith("per_") and isinstance(groups, dict):
                for group in groups.values():
                    if isinstance(group, dict):
                        _perplexity(group)
    return results


def read_results_or_none(folder: str | Path) -> dict[str, Any] | None:
    """:func:`read_results`, or None when the folder holds no results (not evaluated yet)."""
    return read_results(folder) if has_results(folder) else None


def read_markdown(folder: str | Path) -> str | None:
    """The tables of ``results.md``, or None when the folder holds none."""
    path = results_md_path(folder)
    return path.read_text(encoding="utf-8") if path.is_file() else None
