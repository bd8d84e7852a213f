"""The diagnostics' pictures: one PNG per measure, every checkpoint side by side in its variant's colour.

Kept apart from :mod:`shortcutlm.run.diagnostics`, which measures; this only draws what it measured.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from shortcutlm.drawing.plots import plot_heatmap, plot_layer_panels

DEPTH_MAP_COLORBAR = "shortcut attention weight (mean over heads; each row sums to 1)"


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"



def write_plots(results: dict[str, dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """The comparison PNGs for ``{label: diagnose_checkpoint(...)}``; returns ``{plot name: path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    longest = max(results.values(), key=lambda r: r["n_layer"])
    same_t = len({r["tokens"] for r in results.values()}) == 1

    def refs(key: str, name: str) -> dict[str, Any]:
        if same_t:
            return {f"{name} (T={longest['tokens']})": longest[key]}
        return {f"{name}, {label} (T={r['tokens']})": (r[key], label) for label, r in results.items()}

    def series(key: str) -> dict[str, list[float]]:
        return {label: r[key] for label, r in results.items()}

    # Each model is drawn in its variant's colour, the one it has in every plot of the suite.
    variants = {label: r.get("name") or label for label, r in results.items()}

    def draw(panels: list[dict], path: Path, title: str = "") -> Path:
        return plot_layer_panels(panels, path, title, variants)

    plots: dict[str, Path] = {}
    plots["entropy"] = draw([
        {"series": series("entropy"), "ylabel": "token-importance entropy (nats)",
         "title": "entropy of attention received per token",
         "references": refs("entropy_uniform_causal", "uniform causal")},
        {"series": series("entropy_normalised"), "ylabel": "entropy / uniform-causal entropy",
         "title": "normalised by uniform causal attention", "references": {"uniform causal": 1.0}},
    ], out / "entropy.png", "attention concentration (lower = more concentrated)")
    plots["first_token_value_norm"] = draw([
        {"series": series("first_token_value_norm"), "dashed": series("other_token_value_norm"),
         "ylabel": "value-state L2 norm", "title": "first token (solid) vs mean of the others (dashed)"},
        {"series": series("first_token_value_ratio"), "ylabel": "‖v_0‖ / mean ‖v_j‖ (j ≥ 1)",
         "title": "first-token value norm ratio", "references": {"equal norms": 1.0}},
    ], out / "first_token_value_norm.png", "value states of the first token")
    plots["first_token_attention"] = draw([
        {"series": series("first_token_attention"), "ylabel": "mean attention to token 0",
         "title": "attention received by the first token",
         "references": refs("first_token_attention_uniform_causal", "uniform causal")},
    ], out / "first_token_attention.png")
    depth_axis = {"x_start": 0, "xlabel": "depth", "xticklabels": longest["hidden_labels"]}
    plots["hidden_norm"] = draw([
        {"series": series("hidden_norm"), "ylabel": "mean ‖h‖₂ over tokens", "title": "hidden-state norm",
         **depth_axis},
    ], out / "hidden_norm.png")
    plots["token_similarity"] = draw([
        {"series": series("token_similarity"), "ylabel": "mean off-diagonal cosine similarity",
         "title": "token similarity of hidden states", **depth_axis},
    ], out / "token_similarity.png")
    shortcuts = {label: r for label, r in results.items() if r.get("shortcut")}
    if shortcuts:
        plots["depth_weights"] = draw([
            {"series": {label: (r["shortcut"]["depths"], r["shortcut"]["depth_weights"])
                        for label, r in shortcuts.items()},
             "ylabel": "mean shortcut attention", "title": "shortcut attention over depth, mean over tokens",
             **depth_axis},
        ], out / "depth_weights.png")
    for label, r in shortcuts.items():
        sc = r["shortcut"]
        plots[f"depth_map_{label}"] = plot_heatmap(
            np.asarray(sc["depth_map"]), out / f"depth_map_{_safe(label)}.png",
            f"shortcut attention over depth\n{label} ({sc['mode']})", "depth", "token", DEPTH_MAP_COLORBAR,
            sc["depth_labels"], sc.get("depth_map_tokens"))
    return plots
