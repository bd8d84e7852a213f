"""Markdown cells and tables of the results page: numbers with their spread, sizes, ratios, verdicts."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from shortcutlm.core.formatting import markdown_table as table
from shortcutlm.core.formatting import nbytes, param_count

__all__ = ["table", "nbytes", "param_count", "display_path", "machine_label", "fmt", "fmt_pm", "ratio_text",
           "bold_verdict"]


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (as the user would type it)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def machine_label(info: dict[str, Any]) -> str:
    if not isinstance(info, dict):
        return str(info)
    threads = info.get("threads")
    where = info.get("gpu") or f"{info.get('processor')} CPU, {threads} thread{'' if threads == 1 else 's'}"
    return f"{where} (torch {info.get('torch')})"


def fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def fmt_pm(mean: float | None, std: float | None, digits: int = 4, signed: bool = False) -> str:
    """``mean ± std`` (just the mean without a std; ``–`` without a mean)."""
    if mean is None:
        return "–"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def ratio_text(ratio: float | None, higher: str, lower: str, tolerance: float = 0.05) -> str:
    """`` (1.23×, higher)`` after a value; the word only when the ratio is off 1 by more than ``tolerance``."""
    if ratio is None:
        return ""
    word = higher if ratio > 1 + tolerance else lower if ratio < 1 - tolerance else ""
    return f" ({ratio:.2f}×{', ' + word if word else ''})"


def bold_verdict(text: str) -> str:
    word, _, rest = text.partition(" ")
    return f"**{word}**" + (f" {rest}" if rest else "") if word in ("better", "worse") else text
