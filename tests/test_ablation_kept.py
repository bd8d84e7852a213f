"""Finished sections of the previous page survive a sitting that trains only other datasets."""
from __future__ import annotations

import copy

from shortcutlm.ablation.kept import keep_previous_sections

SETTINGS = {"model": {"n_layer": 4}, "train": {"lr": 0.002, "max_steps": 150}, "evaluate": {"split": "test"}}
GRID = {"variants": {"baseline": {}, "svformer": {"value_residual": "svformer"}}, "seeds": [0, 1, 2],
        "baseline": "baseline", "baseline_steps": [1.0]}


def page(status: str, **changes) -> dict:
    section = {**copy.deepcopy(SETTINGS), "runs": [{"status": status}] * 3}
    for key, value in changes.items():
        section[key] = value
    return section


def results(sections: dict, created: str = "2026-11-22 09:38:38 UTC", **grid) -> dict:
    return {**copy.deepcopy(GRID), **grid, "created": created, "datasets": sections}


def test_a_dataset_without_run_folders_keeps_its_finished_section():
    previous = results({"text": page("done"), "audio": page("done")})
    fresh = results({"text": page("pending"), "audio": page("done")}, created="now")
    assert keep_previous_sections(fresh, previous, trained_here=["audio"]) == ["text"]
    assert fresh["datasets"]["text"]["runs"][0]["status"] == "done"
    assert fresh["datasets"]["text"]["kept_from"] == "2026-11-22 09:38:38 UTC"
    assert "kept_from" not in fresh["datasets"]["audio"]


def test_nothing_is_kept_when_settings_changed_or_the_dataset_was_trained_here():
    previous = results({"text": page("done")})
    changed = results({"text": page("pending", train={"lr": 0.001, "max_steps": 150})})
    assert keep_previous_sections(changed, previous, trained_here=[]) == []
    other_seeds = results({"text": page("pending")}, seeds=[0])
    assert keep_previous_sections(other_seeds, previous, trained_here=[]) == []
    trained = results({"text": page("pending")})
    assert keep_previous_sections(trained, previous, trained_here=["text"]) == []
    assert keep_previous_sections(results({"text": page("pending")}), None, trained_here=[]) == []
    assert trained["datasets"]["text"]["runs"][0]["status"] == "pending"


def test_a_kept_section_lists_its_variants_in_the_grids_order(tmp_path):
    """An older results.json held its keys sorted by name; the kept table follows the ablation file's order."""
    from shortcutlm.artifacts.ablation import read_previous_results, write_page

    old = page("done", variants={"svformer": {"n": 3}, "baseline": {"n": 3}})  # as a sorted file gave them back
    fresh = results({"text": page("pending")}, created="now")
    assert keep_previous_sections(fresh, results({"text": old}), trained_here=[]) == ["text"]
    assert list(fresh["datasets"]["text"]["variants"]) == ["baseline", "svformer"]
    # The page's results.json now keeps the order it was written in.
    write_page(tmp_path, "# page\n", {"variants": {"z_last": {}, "a_first": {}}})
    assert list(read_previous_results(tmp_path)["variants"]) == ["z_last", "a_first"]
