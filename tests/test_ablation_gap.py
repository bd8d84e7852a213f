"""The gap over training (``gap_over_training``): each variant's seed-paired gap in validation loss at every
validation step, read from the runs' own logs, and its trend by the page's rule."""
from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import yaml

import shortcutlm.ablation as ab
from shortcutlm.ablation.gap import trend
from shortcutlm.artifacts.checkpoint import CheckpointFolder
from tests.test_ablation import micro_config

STEPS = np.array([100, 200, 300, 400])


def curves(values: dict[int, list[float]]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {seed: (STEPS, np.array(v, dtype=float)) for seed, v in values.items()}


@pytest.mark.parametrize("variant, reading", [
    ({0: [2.9, 2.5, 2.2, 1.8], 1: [3.0, 2.6, 2.3, 1.9], 2: [2.95, 2.55, 2.25, 1.86]}, "widens"),
    ({0: [2.6, 2.5, 2.4, 2.0], 1: [2.7, 2.6, 2.5, 2.1], 2: [2.65, 2.55, 2.45, 2.04]}, "closes"),
    ({0: [2.9, 2.5, 2.2, 1.9], 1: [3.0, 2.6, 2.3, 2.1], 2: [2.95, 2.55, 2.25, 2.0]}, "holds"),
])
def test_the_trend_compares_the_end_with_a_quarter_of_the_way_in_seed_by_seed(variant, reading):
    base = curves({0: [3.0, 2.6, 2.3, 2.0], 1: [3.1, 2.7, 2.4, 2.1], 2: [3.05, 2.65, 2.35, 2.05]})
    found = trend(curves(variant), base, [0, 1, 2], STEPS.tolist())
    changes = [(variant[s][3] - base[s][1][3]) - (variant[s][0] - base[s][1][0]) for s in (0, 1, 2)]
    assert (found["from_step"], found["to_step"]) == (100, 400)
    assert found["change"] == pytest.approx(statistics.fmean(changes))
    assert found["spread"] == pytest.approx(statistics.stdev(changes))
    assert found["reading"] == reading


def test_the_page_shows_the_gap_at_every_validation_step(tmp_path):
    config = micro_config(tmp_path, tmp_path / "texts", gap_over_training=True, baseline_steps=[1],
                          diagnostics={"enabled": False})
    cfg = yaml.safe_load(config.read_text())
    cfg["train"].update({"max_steps": 6, "val_every": 2})
    config.write_text(yaml.safe_dump(cfg))
    a = ab.load_ablation(config)
    ab.run_ablation(a, tmp_path / "runs", tmp_path / "docs", progress=False, command="shortcutlm ablate micro.yaml")
    section = json.loads((tmp_path / "docs" / "results.json").read_text())["datasets"]["tinytext"]
    gap = section["validation_gap"]["shortcut_depth"]
    logged = {}
    for run in ab.plan_runs(a, tmp_path / "runs"):
        rows = [line.split(",") for line in CheckpointFolder(run.folder).metrics_path.read_text().splitlines()]
        col, step = rows[0].index("val/loss"), rows[0].index("opt_step")
        logged[(run.variant, run.seed)] = {int(float(r[step])): float(r[col]) for r in rows[1:] if r[col]}
    steps = [p["step"] for p in gap["points"]]
    assert len(steps) >= 2
    for point in gap["points"]:  # every point is the seed-paired difference of the runs' own logs
        diffs = [logged[("shortcut_depth", s)][point["step"]] - logged[("baseline", s)][point["step"]] for s in (0, 1)]
        assert point["delta"] == pytest.approx(statistics.fmean(diffs))
        assert point["spread"] == pytest.approx(statistics.stdev(diffs)) and point["n"] == 2
    md = (tmp_path / "docs" / "results.md").read_text()
    assert "### tinytext: the gap over training" in md and "![the gap over training]" in md
    assert f"- **shortcut_depth**: the gap **{gap['trend']['reading']}** from step" in md
    assert (tmp_path / "docs" / "results" / "tinytext" / "validation_gap.png").is_file()
