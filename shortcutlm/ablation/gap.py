"""The gap over training: each variant's validation loss minus the baseline's at every validation step,
paired by seed, and whether it widens, holds or closes (``gap_over_training`` in an ablation file).

A grid that trains longer (``recipes/ablation_length.yaml``) asks whether a variant's gain is an early-
training effect. The gap at a step is read by the page's one rule (the mean of the per-seed differences
against their sample std); its trend compares, seed by seed, the gap at the end with the gap a quarter of
the way in: the change (end minus quarter) is *widens* when it moves the gap further from zero in the
direction it ends, *closes* when it moves it back toward zero, each only when the change's mean is larger
than its spread, and *holds* otherwise.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from shortcutlm.ablation.config import AblationConfig
from shortcutlm.ablation.curves import finished_curves
from shortcutlm.ablation.runs import Run
from shortcutlm.ablation.stats import compare


def _at(curve: tuple[Any, Any], step: int) -> float | None:
    steps, values = curve
    for s, v in zip(steps.tolist(), values.tolist()):
        if int(s) == step:
            return float(v)
    return None


def validation_gap(runs: list[Run], cfg: AblationConfig) -> dict[str, Any] | None:
    """``{variant: {"points": [{step, delta, spread, n, verdict}, ...], "trend": {...}}}`` over the
    validation steps the variant and the baseline both logged in every shared seed."""
    curves = finished_curves(runs, "val/loss")
    base = curves.get(cfg.baseline)
    if not base:
        return None
    out: dict[str, Any] = {}
    for variant in cfg.variants:
        seeds = curves.get(variant)
        if variant == cfg.baseline or not seeds:
            continue
        shared = sorted(set(seeds) & set(base))
        if not shared:
            continue
        steps = sorted(set.intersection(*(set(int(s) for s in c[0].tolist()) for s in shared
                                          for c in (seeds[s], base[s]))))
        points = []
        for step in steps:
            v = {s: x for s in shared if (x := _at(seeds[s], step)) is not None}
            b = {s: x for s in shared if (x := _at(base[s], step)) is not None}
            found = compare(v, b)
            points.append({"step": step, "delta": found["delta"], "spread": found["spread"], "n": found["n"],
                           "verdict": found["verdict"]})
        if len(points) >= 2:
            out[variant] = {"points": points, "trend": trend(seeds, base, shared, steps)}
    return out or None


def trend(seeds: dict[int, Any], base: dict[int, Any], shared: list[int], steps: list[int]) -> dict[str, Any]:
    """The change of the seed-paired gap from a quarter of the way in to the end, and its reading."""
    end = steps[-1]
    quarter = min(steps, key=lambda s: abs(s - end / 4))
    changes, ends = [], []
    for s in shared:
        values = [_at(seeds[s], quarter), _at(base[s], quarter), _at(seeds[s], end), _at(base[s], end)]
        if any(x is None for x in values):
            continue
        vq, bq, ve, be = (float(x) for x in values if x is not None)
        changes.append((ve - be) - (vq - bq))
        ends.append(ve - be)
    if len(changes) < 2:
        return {"from_step": quarter, "to_step": end, "change": None, "spread": None, "reading": "pending"}
    change, spread, final = statistics.fmean(changes), statistics.stdev(changes), statistics.fmean(ends)
    if abs(change) <= spread:
        reading = "holds"
    elif (change < 0) == (final < 0):
        reading = "widens"
    else:
        reading = "closes"
    return {"from_step": quarter, "to_step": end, "change": change, "spread": spread, "n": len(changes),
            "reading": reading}


def plot_gap(gaps: dict[str, Any], path: Path, title: str) -> Path:
    """Each variant's seed-paired gap in validation loss over the steps, with the seeds' spread as a band."""
    import numpy as np

    from shortcutlm.drawing.plots import finish_line_plot, plt, variant_colours

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = variant_colours(gaps)
    for variant, entry in gaps.items():
        points = [p for p in entry["points"] if p["delta"] is not None]
        x = np.array([p["step"] for p in points], dtype=float)
        y = np.array([p["delta"] for p in points], dtype=float)
        band = np.array([p["spread"] or 0.0 for p in points], dtype=float)
        ax.plot(x, y, marker="o", markersize=3, color=colours[variant], label=variant)
        ax.fill_between(x, y - band, y + band, color=colours[variant], alpha=0.15)
    return finish_line_plot(fig, ax, path, title, "optimiser step", "validation loss − baseline's (nats)",
                            zero_line=True)
