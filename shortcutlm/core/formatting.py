"""How numbers and tables look wherever the suite shows them: one function per kind of figure.

Pages (evaluation results, the ablation pages) and the benchmarks' terminal lines format parameter
counts, byte sizes and tables here, so the same figure reads the same everywhere.
"""
from __future__ import annotations

from collections.abc import Iterable


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table (``|`` inside a cell escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned text columns for a terminal: the first left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [headers, *rows]]


def param_count(n: float | None, digits: int = 3) -> str:
    """Parameters in millions (``11.408M``, ``digits`` decimals) or, below 100k, thousands (``42.5k``)."""
    if n is None:
        return "–"
    return f"{n / 1e6:.{digits}f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def count(n: float) -> str:
    """Any other quantity (tokens/s, documents) in 3 significant figures with k/M/G: ``10.7M``."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def nbytes(n: float | None) -> str:
    """A size in binary units with two decimals: ``9.00 MiB``."""
    if n is None:
        return "–"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"
