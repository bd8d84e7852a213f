"""Plots: a variant has one colour wherever it is drawn, and colour bars say what they measure."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.colors import to_hex

from shortcutlm.drawing import plots
from shortcutlm.drawing.plots import (OTHER_COLOURS, VARIANT_COLOURS, heatmap_figure, layer_panels_figure,
                              loss_curves_figure, plt, variant_colour, variant_colours)

SUITE = ["baseline", "resformer", "learnable", "svformer", "shortcut_depth", "shortcut_full", "shortcut_resformer"]


def line_colours(fig) -> dict[str, str]:
    """{legend label: colour} of every line of a figure."""
    return {line.get_label(): to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()}


def test_a_variant_keeps_its_colour_whatever_else_is_drawn():
    for name in SUITE + ["my_variant", "baseline_1.5x"]:
        alone = variant_colours([name])[name]
        assert alone == variant_colour(name)
        assert variant_colours(SUITE + [name])[name] == alone
        assert variant_colours(list(reversed(SUITE)) + [name])[name] == alone
        assert variant_colours([name, "svformer"])[name] == alone
    assert len({variant_colour(v) for v in SUITE}) == len(SUITE)  # the suite's variants never share one


def test_other_names_hash_stably_and_never_take_a_suite_colour():
    names = [f"run{i}" for i in range(40)]
    assert all(variant_colour(n) in OTHER_COLOURS for n in names)
    assert not set(OTHER_COLOURS) & set(VARIANT_COLOURS.values())
    code = "from shortcutlm.drawing.plots import variant_colour; print(variant_colour('my_variant'))"
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                   cwd=Path.cwd(), env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert other_process == variant_colour("my_variant")


def test_two_series_of_one_variant_in_one_plot_get_two_colours():
    colours = variant_colours(["a", "b", "c"], {"a": "baseline", "b": "baseline", "c": "svformer"})
    assert colours["a"] == variant_colour("baseline") and colours["c"] == variant_colour("svformer")
    assert len(set(colours.values())) == 3


def write_metrics(path: Path, offset: float) -> Path:
    rows = ["opt_step,train/loss,val/loss"] + [f"{s},{5 - s * 0.1 + offset},{'' if s % 2 else 5 - s * 0.1}"
                                               for s in range(6)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_loss_curves_use_the_variant_colours(tmp_path):
    a, b = write_metrics(tmp_path / "a.csv", 0.0), write_metrics(tmp_path / "b.csv", 0.3)
    for runs in ({"svformer": a, "baseline": b}, {"baseline": b, "svformer": a}, {"svformer": a}):
        fig = loss_curves_figure(runs)
        colours = line_colours(fig)
        for name in runs:
            assert colours[f"{name} train (smoothed)"] == colours[f"{name} validation"] == variant_colour(name)
        plt.close(fig)


def test_layer_panels_use_the_variant_colours():
    panel = {"series": {"svformer": [1, 2], "x": [2, 3]}, "dashed": {"svformer": [0, 1]}}
    fig = layer_panels_figure([panel], variants={"x": "baseline"})
    lines = fig.axes[0].get_lines()
    assert [to_hex(line.get_color()) for line in lines] == [variant_colour("svformer"), variant_colour("baseline"),
                                                            variant_colour("svformer")]
    plt.close(fig)


def test_ablation_relative_loss_uses_the_variant_colours(tmp_path, monkeypatch):
    from shortcutlm.ablation import plot_relative_loss

    figures = []
    real = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig) or real(fig))
    rel = {v: {"steps": [0, 1], "delta": [0.0, 0.1], "seeds": [0]} for v in ("svformer", "resformer")}
    plot_relative_loss(rel, tmp_path / "r.png", "t")
    colours = {label.split(" (")[0]: c for label, c in line_colours(figures[-1]).items() if " (mean" in label}
    assert colours == {"svformer": variant_colour("svformer"), "resformer": variant_colour("resformer")}


def test_heatmap_colour_bar_has_a_label(tmp_path):
    fig = heatmap_figure(np.eye(3), "t", "depth", "token", "attention weight", ["emb", "L1", "L2"])
    bar = fig.axes[-1]
    assert bar is not fig.axes[0] and bar.get_ylabel() == "attention weight"
    plt.close(fig)
    assert plots.plot_heatmap(np.eye(3), tmp_path / "h.png", "t", "x", "y", "weight").is_file()
