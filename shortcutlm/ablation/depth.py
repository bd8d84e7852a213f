"""Each reading's difference from the baseline as a function of depth, for a grid whose variants differ
in their number of layers (``recipes/ablation_depth.yaml``).

A variant's *reading* is its fields apart from ``n_layer``; its baseline is the variant of the same
depth whose fields apart from ``n_layer`` are the ablation baseline's. The difference is seed-paired,
as everywhere on the page, so the question the shortcut's argument asks (does the gain grow with
depth?) is read from the same rule as every verdict.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from shortcutlm.ablation.stats import compare

DEPTH = "n_layer"


def _reading(fields: dict[str, Any]) -> str:
    """What a variant changes apart from its depth, as a label: ``shortcut last_layer`` (empty: plain)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(fields.items()) if k not in (DEPTH, "train"))


def depth_series(variants: dict[str, dict[str, Any]], baseline: str, model: dict[str, Any],
                 summary: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]] | None:
    """``{reading: [{depth, variant, against, delta, spread, n, verdict}, ...]}`` by rising depth, or None
    when the variants span fewer than two depths. ``variants``: the ablation's name -> fields;
    ``summary``: the dataset's per-variant entries (their ``losses`` by seed)."""
    depth_of = {name: int((fields or {}).get(DEPTH, model.get(DEPTH, 0))) for name, fields in variants.items()}
    if len(set(depth_of.values())) < 2:
        return None
    plain = _reading(variants[baseline] or {})
    baselines = {depth_of[name]: name for name, fields in variants.items() if _reading(fields or {}) == plain}
    series: dict[str, list[dict[str, Any]]] = {}
    for name, fields in variants.items():
        reading, depth = _reading(fields or {}), depth_of[name]
        against = baselines.get(depth)
        if reading == plain or against is None:
            continue
        losses = {int(s): v for s, v in (summary.get(name, {}).get("losses") or {}).items()}
        base = {int(s): v for s, v in (summary.get(against, {}).get("losses") or {}).items()}
        found = compare(losses, base)
        series.setdefault(reading, []).append({"depth": depth, "variant": name, "against": against,
                                               "delta": found["delta"], "spread": found["spread"],
                                               "n": found["n"], "verdict": found["verdict"]})
    return {reading: sorted(points, key=lambda p: p["depth"]) for reading, points in series.items()} or None


def plot_by_depth(series: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    """Each reading's difference from its depth's baseline against depth, with the seed spread as bars."""
    from shortcutlm.drawing.plots import finish_line_plot, plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for reading, points in series.items():
        shown = [p for p in points if p["delta"] is not None]
        ax.errorbar([p["depth"] for p in shown], [p["delta"] for p in shown],
                    yerr=[p["spread"] or 0.0 for p in shown], marker="o", capsize=4, label=reading)
    depths = sorted({p["depth"] for points in series.values() for p in points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, [str(d) for d in depths])
    return finish_line_plot(fig, ax, path, title, "layers", "test loss − baseline's of the same depth (nats)",
                            zero_line=True)
