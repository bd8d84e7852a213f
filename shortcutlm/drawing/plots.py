"""PNG plots shared by reports, diagnostics and the ablation (matplotlib, headless).

A variant has one colour in every plot: :func:`variant_colour` maps its name to a colour that
depends on nothing else (not on the order of the series, nor on which others are drawn).
Each plot is built by a ``*_figure`` function that returns the figure (for inspection) and
saved by its ``plot_*`` wrapper.
"""
from __future__ import annotations

import csv
import zlib
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Mapping

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


#: The suite's variant names, each with its own colour of matplotlib's default cycle (tab10).
#: Names for the same model (depth shortcut + ResFormer) share one colour.
VARIANT_COLOURS: dict[str, str] = {
    "baseline": "#1f77b4", "plain": "#1f77b4",
    "resformer": "#ff7f0e",
    "learnable": "#2ca02c",
    "svformer": "#d62728",
    "shortcut_depth": "#9467bd",
    "shortcut_full": "#8c564b",
    "shortcut_last_layer": "#393b79",
    "shortcut_resformer": "#e377c2", "shortcut_depth_resformer": "#e377c2", "depth_resformer": "#e377c2",
}
#: Colours for other names, chosen by a hash of the name; none of them is a known variant's.
OTHER_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#7f7f7f",
                 "#bcbd22", "#17becf")


def variant_colour(name: str) -> str:
    """The colour of a variant in every plot: fixed for the suite's variants, otherwise chosen by a
    stable hash of the name (the same in every process and run)."""
    if name in VARIANT_COLOURS:
        return VARIANT_COLOURS[name]
    return OTHER_COLOURS[zlib.crc32(name.encode()) % len(OTHER_COLOURS)]


def variant_colours(names: Iterable[str], variants: Mapping[str, str] | None = None) -> dict[str, str]:
    """A colour per series of one plot: :func:`variant_colour` of the series' variant
    (``variants[name]``, default the name itself). Two series that would share a colour in the same
    plot (two runs of one variant, or two other names that hash alike) keep it for the first and
    move the next to the following free colour of :data:`OTHER_COLOURS`."""
    variants = variants or {}
    colours: dict[str, str] = {}
    for name in names:
        if name in colours:
            continue
        colour = variant_colour(variants.get(name, name))
        if colour in colours.values():
            start = zlib.crc32(name.encode()) % len(OTHER_COLOURS)
            free = [c for i in range(len(OTHER_COLOURS))
                    if (c := OTHER_COLOURS[(start + i) % len(OTHER_COLOURS)]) not in colours.values()]
            colour = free[0] if free else colour
        colours[name] = colour
    return colours


def finish_line_plot(fig: plt.Figure, ax: Any, path: Path, title: str, xlabel: str, ylabel: str,
                     zero_line: bool) -> Path:
    """Label, grid and legend a plot of lines (a dotted zero line when differences are drawn) and write
    it as PNG: the look every ablation plot shares."""
    if zero_line:
        ax.axhline(0.0, color="0.3", linewidth=1, linestyle=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _save(fig: plt.Figure, out: Path) -> Path:
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


def loss_curves_figure(runs: dict[str, Path], title: str = "") -> plt.Figure | None:
    """Train (smoothed) and validation loss of several runs (keyed by variant) on one figure;
    None when no run has a curve."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    colours = variant_colours(runs)
    for name, metrics in runs.items():
        if not Path(metrics).is_file():
            continue
        curves, color = read_curves(metrics), colours[name]
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
    return fig


def plot_loss_curves(runs: dict[str, Path], out: Path, title: str = "") -> Path | None:
    """:func:`loss_curves_figure` as a PNG; None when no run has a curve."""
    fig = loss_curves_figure(runs, title)
    return None if fig is None else _save(fig, out)


def heatmap_figure(matrix: np.ndarray, title: str, xlabel: str, ylabel: str, colorbar_label: str,
                   xticklabels: list[str] | None = None, yticklabels: list[str] | None = None) -> plt.Figure:
    """A rows × columns heat map (e.g. token × depth attention of the shortcut) with a labelled colour bar."""
    rows, cols = matrix.shape
    fig, ax = plt.subplots(figsize=(max(5.5, min(12, 2 + 0.5 * cols)), min(14, 2 + 0.12 * rows)))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.05, label=colorbar_label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xticklabels is not None:
        ax.set_xticks(range(cols), xticklabels, fontsize=7, rotation=90 if cols > 12 else 0)
    if yticklabels is not None and rows <= 64:
        ax.set_yticks(range(rows), yticklabels, fontsize=6)
    return fig


def plot_heatmap(matrix: np.ndarray, out: Path, title: str, xlabel: str, ylabel: str, colorbar_label: str,
                 xticklabels: list[str] | None = None, yticklabels: list[str] | None = None) -> Path:
    """:func:`heatmap_figure` as a PNG."""
    return _save(heatmap_figure(matrix, title, xlabel, ylabel, colorbar_label, xticklabels, yticklabels), out)


def plot_layer_lines(series: dict[str, np.ndarray], out: Path, title: str, ylabel: str) -> Path:
    """One line per model over layers (for per-layer diagnostics), in each model's colour."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = variant_colours(series)
    for name, values in series.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", color=colours[name], label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_layer_panels(panels: list[dict], out: Path, title: str = "",
                      variants: Mapping[str, str] | None = None) -> Path:
    """:func:`layer_panels_figure` as a PNG."""
    return _save(layer_panels_figure(panels, title, variants), Path(out))


def layer_panels_figure(panels: list[dict], title: str = "", variants: Mapping[str, str] | None = None) -> plt.Figure:
    """Side-by-side panels of per-layer (or per-depth) lines, one colour per model throughout: its
    variant's colour (``variants[model]``, default the model's name; see :func:`variant_colours`).

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
    colour = variant_colours(names, variants)

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
    return fig
