"""Where a recipe run puts its parts under its output folder (read by the runner and the report)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunLayout:
    """Where a recipe run puts things under its output folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def checkpoint(self, variant: str) -> Path:
        return self.root / "checkpoints" / variant

    @property
    def evaluation(self) -> Path:
        return self.root / "eval"

    def samples(self, variant: str) -> Path:
        return self.root / "samples" / variant

    def pair_media(self, variant: str, task: str) -> Path:
        """The report's copies of a paired task's sources and references that lie outside the run folder."""
        return self.root / "pairs" / variant / task

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"
