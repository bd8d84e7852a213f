"""The per-split totals and warnings of a shard manifest, computed from its shard records.

Kept apart from ``prepare`` because a one-job prepare and the merge of a prepare across machines
must sum their shards the same way.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from shortcutlm.artifacts.manifest import ShardRecord

SPLIT_ORDER = ("train", "valid", "test")


def summarise(manifest: dict[str, Any], n_inputs: int) -> None:
    """Fill ``manifest["splits"]`` and ``manifest["inputs"]`` from its shards and rejections."""
    splits: dict[str, dict[str, Any]] = {}
    for index, listed in enumerate(manifest["shards"]):
        record = ShardRecord.from_dict(listed, f"shards[{index}]")
        entry = splits.setdefault(record.split, {"documents": 0, "tokens": 0, "shards": []})
        entry["documents"] += record.documents
        entry["tokens"] += record.tokens
        entry["shards"].append(record.name)
        for key, value in record.sums.items():
            entry[key] = entry.get(key, 0) + value
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    manifest["splits"] = dict(sorted(splits.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))
    written = sum(s["documents"] for s in splits.values())
    skipped = sum(1 for r in manifest["rejected"] if r.get("skipped"))
    # Skipped files (a type no tokenizer here reads, a link to nothing) are listed, but are not inputs.
    manifest["inputs"] = {"total": n_inputs - skipped, "documents": written,
                          "rejected": len(manifest["rejected"]) - skipped, "skipped": skipped}


def split_warnings(manifest: dict[str, Any], expected: Mapping[str, int]) -> list[str]:
    """One line per standard split that holds no document, saying why (``expected``: documents
    the source gave per split)."""
    warnings = []
    for split in SPLIT_ORDER:
        if manifest["splits"].get(split, {}).get("documents"):
            continue
        why = (f"all {expected.get(split, 0)} of its documents were rejected" if expected.get(split)
               else f"the source gave no {split} documents")
        warnings.append(f"the {split} split is empty: {why}")
    return warnings
