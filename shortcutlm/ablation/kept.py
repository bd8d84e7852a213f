"""Sections of the previous page kept for datasets whose run folders are not here.

An ablation is spread over sittings and machines: re-training one dataset (``--datasets``) on a
machine that lacks the other datasets' run folders would otherwise turn their finished sections
into "pending". A previous section is kept only when nothing of that dataset was trained here and
its model, training, evaluation and variants equal the current ablation's, and the page says so.
"""
from __future__ import annotations

from typing import Any

SECTION_SETTINGS = ("model", "train", "evaluate")
GRID_SETTINGS = ("variants", "seeds", "baseline", "baseline_steps")


def _finished(section: dict[str, Any]) -> int:
    return sum(1 for run in section.get("runs", []) if run.get("status") == "done")


def keep_previous_sections(results: dict[str, Any], previous: dict[str, Any] | None,
                           trained_here: list[str]) -> list[str]:
    """Replace each dataset section with no finished run by the previous page's, when its settings
    match; returns the datasets kept."""
    kept: list[str] = []
    if not previous or any(_plain(results.get(key)) != _plain(previous.get(key)) for key in GRID_SETTINGS):
        return kept
    old_sections = previous.get("datasets", {})
    for dataset, section in results["datasets"].items():
        old = old_sections.get(dataset)
        if dataset in trained_here or old is None or _finished(section) or not _finished(old):
            continue
        if any(_plain(section.get(key)) != _plain(old.get(key)) for key in SECTION_SETTINGS):
            continue
        order = list(results.get("variants") or {})  # an older results.json may hold them sorted by name
        variants = dict(sorted(old.get("variants", {}).items(),
                               key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        results["datasets"][dataset] = {**old, "variants": variants,
                                        "kept_from": previous.get("created") or "an earlier page"}
        kept.append(dataset)
    return kept


def _plain(value: Any) -> Any:
    """Settings as JSON keeps them (tuples become lists), so a fresh section compares with a read one."""
    import json

    return json.loads(json.dumps(value, default=str))
