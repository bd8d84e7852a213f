"""Training curves: each variant's smoothed training loss relative to the baseline's (ResFormer's
view), averaged over the seeds both finished, and its plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from shortcutlm.ablation.config import AblationConfig
from shortcutlm.ablation.runs import Run, is_trained
from shortcutlm.artifacts.checkpoint import CheckpointFolder


def relative_training_loss(runs: list[Run], cfg: AblationConfig) -> dict[str, Any] | None:
    """ResFormer's relative training loss: each variant's smoothed train loss minus the baseline's,
    averaged over the seeds both have finished, on the baseline's logged steps."""
    import numpy as np

    from shortcutlm.plots import read_curves, smooth

    curves: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for run in runs:
        files = CheckpointFolder(run.folder)
        if run.multiple != 1.0 or not is_trained(run) or not files.has_metrics:
            continue
        c = read_curves(files.metrics_path).get("train/loss")
        if c is not None and len(c[0]) >= 2:
            curves.setdefault(run.variant, {})[run.seed] = (c[0], smooth(c[1]))
    base = curves.get(cfg.baseline)
    if not base:
        return None
    out: dict[str, Any] = {}
    for variant, seeds in curves.items():
        if variant == cfg.baseline:
            continue
        shared = sorted(set(seeds) & set(base))
        if not shared:
            continue
        diffs = []
        for s in shared:
            bx, by = base[s]
            vx, vy = seeds[s]
            diffs.append(np.interp(bx, vx, vy) - by)
        steps = base[shared[0]][0]
        mean = np.mean(diffs, axis=0)
        out[variant] = {"steps": steps.tolist(), "delta": mean.tolist(), "seeds": shared,
                        "final": float(mean[-1])}
    return out or None


def plot_relative_loss(rel: dict[str, Any], path: Path, title: str) -> Path:
    from shortcutlm.plots import plt, variant_colours

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = variant_colours(rel)  # each variant in its colour of every plot
    for variant, c in rel.items():
        n = len(c["seeds"])
        ax.plot(c["steps"], c["delta"], color=colours[variant], label=f"{variant} (mean of {n} seed{'s' * (n > 1)})")
    ax.axhline(0.0, color="0.3", linewidth=1, linestyle=":")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("train loss − baseline's (nats, smoothed)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
