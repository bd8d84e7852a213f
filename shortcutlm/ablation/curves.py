"""Training curves: each variant's smoothed training loss relative to the baseline's (ResFormer's
view), averaged over the seeds both finished; each variant's validation loss over the steps (whether
the runs were still learning when they stopped); and their plots."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from shortcutlm.ablation.config import AblationConfig
from shortcutlm.ablation.runs import Run, is_trained
from shortcutlm.artifacts.checkpoint import CheckpointFolder


def finished_curves(runs: list[Run], metric: str) -> dict[str, dict[int, tuple[Any, Any]]]:
    """``{variant: {seed: (steps, values)}}`` of ``metric`` from every finished run at the variants' steps
    (the baseline's longer runs left out), where it was logged at least twice."""
    from shortcutlm.drawing.plots import read_curves

    curves: dict[str, dict[int, tuple[Any, Any]]] = {}
    for run in runs:
        files = CheckpointFolder(run.folder)
        if run.multiple != 1.0 or not is_trained(run) or not files.has_metrics:
            continue
        c = read_curves(files.metrics_path).get(metric)
        if c is not None and len(c[0]) >= 2:
            curves.setdefault(run.variant, {})[run.seed] = c
    return curves


def relative_training_loss(runs: list[Run], cfg: AblationConfig) -> dict[str, Any] | None:
    """ResFormer's relative training loss: each variant's smoothed train loss minus the baseline's,
    averaged over the seeds both have finished, on the baseline's logged steps."""
    import numpy as np

    from shortcutlm.drawing.plots import smooth

    curves = {variant: {seed: (x, smooth(y)) for seed, (x, y) in seeds.items()}
              for variant, seeds in finished_curves(runs, "train/loss").items()}
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


def validation_curves(runs: list[Run], cfg: AblationConfig) -> dict[str, Any] | None:
    """Each variant's validation loss at every logged step, the mean over its finished seeds (the steps
    all of them logged)."""
    import numpy as np

    per_variant = finished_curves(runs, "val/loss")
    out: dict[str, Any] = {}
    for variant in cfg.variants:
        seeds = per_variant.get(variant)
        if not seeds:
            continue
        steps = sorted(set.intersection(*(set(x.tolist()) for x, _ in seeds.values())))
        if len(steps) < 2:
            continue
        mean = np.mean([np.interp(steps, x, y) for x, y in seeds.values()], axis=0)
        out[variant] = {"steps": [int(s) for s in steps], "loss": mean.tolist(), "seeds": sorted(seeds)}
    return out or None


def still_falling(curve: dict[str, Any]) -> dict[str, Any]:
    """How much the loss fell over the first and the last quarter of the steps: a run still learning
    fast ends with a last-quarter fall near its first-quarter fall; one that has slowed, far below it."""
    import numpy as np

    steps, loss = np.array(curve["steps"], dtype=float), np.array(curve["loss"], dtype=float)
    end = steps[-1]
    first = float(np.interp(steps[0], steps, loss) - np.interp(steps[0] + end / 4, steps, loss))
    last = float(np.interp(end * 3 / 4, steps, loss) - loss[-1])
    return {"first_quarter": first, "last_quarter": last, "from_step": int(steps[0]), "to_step": int(end),
            "final": float(loss[-1])}


def plot_relative_loss(rel: dict[str, Any], path: Path, title: str) -> Path:
    return _plot_variant_lines({v: (c["steps"], c["delta"], len(c["seeds"])) for v, c in rel.items()}, path, title,
                               "train loss − baseline's (nats, smoothed)", zero_line=True)


def plot_validation_loss(curves: dict[str, Any], path: Path, title: str) -> Path:
    return _plot_variant_lines({v: (c["steps"], c["loss"], len(c["seeds"])) for v, c in curves.items()}, path, title,
                               "validation loss (nats per token)", zero_line=False)


def _plot_variant_lines(lines: dict[str, tuple[list, list, int]], path: Path, title: str, ylabel: str,
                        zero_line: bool) -> Path:
    from shortcutlm.drawing.plots import finish_line_plot, plt, variant_colours

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = variant_colours(lines)  # each variant in its colour of every plot
    for variant, (xs, ys, n) in lines.items():
        ax.plot(xs, ys, color=colours[variant], label=f"{variant} (mean of {n} seed{'s' * (n > 1)})")
    return finish_line_plot(fig, ax, path, title, "optimiser step", ylabel, zero_line)
