"""PNG plots shared by reports and diagnostics (matplotlib, headless)."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: "plt.Figure", out: Path) -> Path:
    """Lay out, write as PNG (creating the folder) and free the figure."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def read_curves(metrics_csv: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train/loss": (steps, values), "val/loss": ...}`` from a checkpoint's metrics.csv."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    with Path(metrics_csv).open(newline="") as fh:
        for row in csv.DictReader(fh):
            step = float(row["opt_step"])
            for key, value in row.items():
                if key != "opt_step" and value not in ("", None):
                    xs, ys = curves.setdefault(key, ([], []))
                    xs.append(step)
                    ys.append(float(value))
    return {k: (np.array(x), np.array(y)) for k, (x, y) in curves.items()}


def smooth(values: np.ndarray, weight: float = 0.8) -> np.ndarray:
    """Exponential moving average with bias correction (as TensorBoard shows)."""
    out, avg = np.empty_like(values, dtype=float), 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out[i] = avg / (1 - weight ** (i + 1))
    return out


def plot_loss_curves(runs: dict[str, Path], out: Path, title: str = "") -> Path | None:
    """Train (smoothed) and validation loss of several runs on one figure."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    for i, (name, metrics) in enumerate(runs.items()):
        if not Path(metrics).is_file():
            continue
        curves, color = read_curves(metrics), f"C{i}"
        if "train/loss" in curves:
            x, y = curves["train/loss"]
            ax.plot(x, smooth(y), color=color, alpha=0.8, label=f"{name} train (smoothed)")
            drawn = True
        if "val/loss" in curves:
            x, y = curves["val/loss"]
            ax.plot(x, y, "o--", color=color, label=f"{name} validation")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_heatmap(matrix: np.ndarray, out: Path, title: str, xlabel: str, ylabel: str,
                 xticklabels: list[str] | None = None, yticklabels: list[str] | None = None) -> Path:
    """A rows × columns heat map (e.g. token × depth attention of the shortcut)."""
    rows, cols = matrix.shape
    fig, ax = plt.subplots(figsize=(max(5.5, min(12, 2 + 0.5 * cols)), min(14, 2 + 0.12 * rows)))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.05)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xticklabels is not None:
        ax.set_xticks(range(cols), xticklabels, fontsize=7, rotation=90 if cols > 12 else 0)
    if yticklabels is not None and rows <= 64:
        ax.set_yticks(range(rows), yticklabels, fontsize=6)
    return _save(fig, out)


def plot_layer_lines(series: dict[str, np.ndarray], out: Path, title: str, ylabel: str) -> Path:
    """One line per model over layers (for per-layer diagnostics)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in series.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_layer_panels(panels: list[dict], out: Path, title: str = "") -> Path:
    """Side-by-side panels of per-layer (or per-depth) lines, one colour per model throughout.

    Each panel is a dict:

    * ``series``: ``{model: values}`` (drawn at x = ``x_start``, ``x_start`` + 1, …) or
      ``{model: (xs, values)}``; solid lines with markers;
    * ``dashed``: the same form, drawn dashed in the colour of the model of that name (optional);
    * ``references``: ``{label: y}`` or ``{label: (y, model)}`` horizontal dotted lines (grey,
      or the model's colour), for baselines (optional);
    * ``ylabel``, ``title``, ``xlabel`` (default ``"layer"``), ``x_start`` (default 1),
      ``xticklabels`` (labels for x = ``x_start`` …, optional), ``logy`` (optional).
    """
    names: list[str] = []
    for panel in panels:
        for key in ("series", "dashed"):
            names += [n for n in panel.get(key, {}) if n not in names]
    colour = {n: f"C{i % 10}" for i, n in enumerate(names)}

    def xy(values, start: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(values, tuple):
            return np.asarray(values[0], dtype=float), np.asarray(values[1], dtype=float)
        ys = np.asarray(values, dtype=float)
        return np.arange(start, start + len(ys)), ys

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        start = panel.get("x_start", 1)
        for name, values in panel.get("series", {}).items():
            ax.plot(*xy(values, start), marker="o", color=colour[name], label=name)
        for name, values in panel.get("dashed", {}).items():
            ax.plot(*xy(values, start), "--", marker=".", color=colour[name], alpha=0.8)
        for label, ref in panel.get("references", {}).items():
            y, who = ref if isinstance(ref, tuple) else (ref, None)
            ax.axhline(y, linestyle=":", color=colour.get(who, "0.4"), linewidth=1.2, label=label)
        ticks = panel.get("xticklabels")
        if ticks is not None:
            ax.set_xticks(range(start, start + len(ticks)), ticks, fontsize=7, rotation=90 if len(ticks) > 12 else 0)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        if panel.get("logy"):
            ax.set_yscale("log")
        ax.set_xlabel(panel.get("xlabel", "layer"))
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
