"""Train/valid/test assignment for data that has no published split.

A split must not change when a file is added elsewhere or when the run is repeated, so it
comes from a hash of a stable key (a relative path or a document id), never from
``random`` or listing order. Tiny collections are then nudged so that every split a
trainer needs is non-empty.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

SPLITS = ("train", "valid", "test")
DEFAULT_FRACTIONS = (0.90, 0.05, 0.05)


def parse_fractions(value: object) -> tuple[float, float, float]:
    """Accept ``(0.9, 0.05, 0.05)``, ``[90, 5, 5]`` or ``"90,5,5"``; normalise to sum 1."""
    if isinstance(value, str):
        parts: Sequence[object] = [p for p in value.replace("/", ",").split(",") if p.strip()]
    else:
        parts = list(value)  # type: ignore[arg-type]
    if len(parts) != 3:
        raise ValueError(f"split fractions {value!r}: give three numbers for train, valid, test")
    numbers = [float(p) for p in parts]  # type: ignore[arg-type]
    if any(n < 0 for n in numbers) or sum(numbers) <= 0 or numbers[0] <= 0:
        raise ValueError(f"split fractions {value!r}: need non-negative numbers and a positive train share")
    total = sum(numbers)
    return (numbers[0] / total, numbers[1] / total, numbers[2] / total)


def unit_hash(key: str) -> float:
    """A number in [0, 1) that depends only on ``key`` (same on every machine and Python)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """The split of one key, from its hash alone."""
    u = unit_hash(key)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "valid"
    return "test"


def assign_splits(keys: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, str]:
    """Hash splits for a whole collection, guaranteeing usable splits for tiny ones.

    With 2 or more keys there is at least one valid key (and one train key); with 3 or more
    and a non-zero test share, at least one test key. The keys moved are those whose hash is
    nearest the missing split's band, so the choice is as stable as the hash itself.
    """
    fractions = tuple(fractions)
    splits = {key: hash_split(key, fractions) for key in keys}
    if len(keys) < 2:
        return {key: "train" for key in keys}
    wanted = ["train", "valid"] + (["test"] if len(keys) >= 3 and fractions[2] > 0 else [])
    for split in wanted:
        members = [k for k, s in splits.items() if s == split]
        if members:
            continue
        # Take from the split with the most keys, picking the key whose hash lies nearest
        # the missing split's band.
        counts = {s: sum(1 for v in splits.values() if v == s) for s in SPLITS}
        donor = max((s for s in SPLITS if counts[s] > 1), key=lambda s: counts[s])
        target = {"train": 0.0, "valid": fractions[0], "test": 1.0}[split]
        candidates = sorted((k for k, s in splits.items() if s == donor),
                            key=lambda k: (abs(unit_hash(k) - target), k))
        splits[candidates[0]] = split
    return splits
