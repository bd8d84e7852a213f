"""The ``shortcutlm ablate`` command lines the page quotes: the whole ablation, and one dataset of it."""
from __future__ import annotations

import shlex

from shortcutlm.ablation.config import Ablation
from shortcutlm.ablation.markdown import display_path


def command_line(ablation: Ablation, datasets: list[str] | None = None, out: str | None = None,
                 docs: str | None = None) -> str:
    """The ``shortcutlm ablate`` command that reproduces (or continues) this ablation."""
    parts = ["shortcutlm", "ablate", display_path(ablation.path)]
    if ablation.config.preset:
        parts += ["--preset", ablation.config.preset]
    if datasets:
        parts += ["--datasets", ",".join(datasets)]
    for item in ablation.overrides:
        parts += ["--set", item]
    if out:
        parts += ["--out", out]
    if docs:
        parts += ["--docs", docs]
    return " ".join(shlex.quote(p) for p in parts)


def narrowed_command(command: str, dataset: str) -> str:
    """``command`` limited to one dataset (``--datasets``), i.e. what reproduces that dataset's tables."""
    try:
        parts = shlex.split(command)
    except ValueError:
        return command
    kept: list[str] = []
    skip = False
    for part in parts:
        if skip:
            skip = False
            continue
        if part == "--datasets":
            skip = True
            continue
        if part.startswith("--datasets="):
            continue
        kept.append(part)
    return " ".join(shlex.quote(p) for p in kept + ["--datasets", dataset])
