"""A grid over depth: each reading is compared with the plain model of its own depth, seed by seed."""
from __future__ import annotations

import pytest

from shortcutlm.ablation.depth import depth_series

VARIANTS = {"baseline_8": {}, "last_layer_8": {"shortcut": "last_layer"},
            "baseline_4": {"n_layer": 4}, "last_layer_4": {"n_layer": 4, "shortcut": "last_layer"},
            "depth_res_16": {"n_layer": 16, "shortcut": "depth", "value_residual": "resformer"}}
LOSSES = {"baseline_8": {"0": 4.0, "1": 4.2, "2": 4.1}, "last_layer_8": {"0": 3.9, "1": 4.15, "2": 4.05},
          "baseline_4": {"0": 4.3, "1": 4.4, "2": 4.35}, "last_layer_4": {"0": 4.31, "1": 4.38, "2": 4.36},
          "depth_res_16": {"0": 3.5, "1": 3.6, "2": 3.55}}


def test_each_reading_is_paired_with_the_baseline_of_its_depth():
    summary = {name: {"losses": losses} for name, losses in LOSSES.items()}
    series = depth_series(VARIANTS, "baseline_8", {"n_layer": 8}, summary)
    assert list(series) == ["shortcut last_layer"]  # depth_res_16 has no 16-layer baseline: not compared
    four, eight = series["shortcut last_layer"]
    assert (four["depth"], four["against"], eight["depth"], eight["against"]) == (4, "baseline_4", 8, "baseline_8")
    assert four["delta"] == pytest.approx((0.01 - 0.02 + 0.01) / 3)
    assert eight["delta"] == pytest.approx((-0.1 - 0.05 - 0.05) / 3)
    assert eight["n"] == 3 and eight["verdict"] == "better" and four["verdict"] == "within spread"


def test_a_grid_of_one_depth_has_no_depth_series():
    assert depth_series({"baseline": {}, "shortcut": {"shortcut": "depth"}}, "baseline", {"n_layer": 4},
                        {"baseline": {"losses": {"0": 1.0}}, "shortcut": {"losses": {"0": 0.9}}}) is None


def test_the_page_shows_the_table_and_the_plot(tmp_path):
    summary = {name: {"losses": losses} for name, losses in LOSSES.items()}
    section = {"by_depth": depth_series(VARIANTS, "baseline_8", {"n_layer": 8}, summary)}
    from shortcutlm.ablation import page

    lines = page._by_depth_lines("bach_chorales", section, tmp_path, tmp_path / "results" / "bach_chorales")
    text = "\n".join(lines)
    assert "| reading | 4 layers | 8 layers |" in text
    assert "-0.067 ± 0.029 (better, n=3)" in text
    assert (tmp_path / "results" / "bach_chorales" / "delta_by_depth.png").stat().st_size > 1000
