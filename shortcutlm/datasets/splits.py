"""Train/valid/test assignment for data that has no published split.

By file: a split must not change when a file is added elsewhere or when the run is repeated,
so it comes from a hash of a stable key (a relative path or a document id), never from
``random`` or listing order. Tiny collections are then nudged so that every split a trainer
needs is non-empty.

Inside files, for collections too small to split by file: when the by-file assignment leaves
a split with a non-zero fraction empty, or gives train less than half its share of the bytes,
or (in a collection of fewer than ``SMALL_COLLECTION`` files) gives valid or test less than a
tenth of theirs (``MIN_SHARE``; e.g. the one large file of three landing in test, or in train
with two 5-byte files as valid and test), the files are laid
end to end in path order and cut at the fractions of their total size (90/5/5 by default):
train is the first 90% of the bytes, valid the next 5%, test the last 5%. Only the files that
straddle a cut are split, each into contiguous parts ("documents" with a ``span``); the cut
inside a file falls on the next word start (text), the sample (audio) or the nearest bar line (MIDI). So two
files, or one, still give every split, and train gets its share however the sizes fall.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import cast
from collections.abc import Iterable, Mapping, Sequence

SPLITS = ("train", "valid", "test")
DEFAULT_FRACTIONS = (0.90, 0.05, 0.05)
#: Splitting by file must give each split at least this part of its fraction of the bytes
#: (valid and test only in collections of fewer than SMALL_COLLECTION files: in larger ones a
#: few short held-out files are no reason to give up hash splits).
MIN_SHARE = {"train": 0.5, "valid": 0.1, "test": 0.1}
SMALL_COLLECTION = 20

#: One part of a file: ``(split, start, end)``, start and end as fractions of the file.
Part = tuple[str, float, float]


def parse_fractions(value: object) -> tuple[float, float, float]:
    """Accept ``(0.9, 0.05, 0.05)``, ``[90, 5, 5]`` or ``"90,5,5"``; normalise to sum 1."""
    if isinstance(value, str):
        parts: Sequence[object] = [p for p in value.replace("/", ",").split(",") if p.strip()]
    else:
        parts = list(cast("Iterable[object]", value))  # a non-iterable still raises in list()
    if len(parts) != 3:
        raise ValueError(f"split fractions {value!r}: give three numbers for train, valid, test")
    numbers = [float(p) for p in parts]  # type: ignore[arg-type]
    if any(n < 0 for n in numbers) or sum(numbers) <= 0 or numbers[0] <= 0:
        raise ValueError(f"split fractions {value!r}: need non-negative numbers and a positive train share")
    total = sum(numbers)
    return (numbers[0] / total, numbers[1] / total, numbers[2] / total)


def unit_hash(key: str) -> float:
    """A number in [0, 1) that depends only on ``key`` (same on every machine and Python)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()  # a name that is not UTF-8 too
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

    With 2 or more keys and a non-zero valid share there is at least one valid key (and one
    train key); with 3 or more and a non-zero test share, at least one test key. The keys moved
    are those whose hash is nearest the missing split's band, so the choice is as stable as the
    hash itself.
    """
    fractions = tuple(fractions)
    if len(keys) < 2:
        return {key: "train" for key in keys}
    splits = {key: hash_split(key, fractions) for key in keys}
    extra = [s for s, f in zip(SPLITS[1:], fractions[1:]) if f > 0][: len(keys) - 1]
    wanted = ["train", *extra]
    for split in wanted:
        if split in splits.values():
            continue
        # Take from the biggest split that can spare a key (one that is not wanted can spare
        # its only key), picking the key whose hash lies nearest the missing split's band.
        counts = Counter(splits.values())
        donor = max((s for s in SPLITS if counts[s] > (1 if s in wanted else 0)), key=lambda s: counts[s])
        target = {"train": 0.0, "valid": fractions[0], "test": 1.0}[split]
        candidates = sorted((k for k, s in splits.items() if s == donor),
                            key=lambda k: (abs(unit_hash(k) - target), k))
        splits[candidates[0]] = split
    return splits


def by_file_is_usable(splits: Mapping[str, str], sizes: Mapping[str, int], fractions: Sequence[float]) -> bool:
    """Every split with a non-zero fraction has a file and holds ``MIN_SHARE`` of its share of the bytes
    (valid and test: only checked in collections of fewer than ``SMALL_COLLECTION`` files)."""
    total = sum(sizes.values())
    held: Counter[str] = Counter()
    for key, split in splits.items():
        held[split] += sizes[key]
    present = set(splits.values())
    checked = ("train",) if len(sizes) >= SMALL_COLLECTION else SPLITS
    return all(split in present and (split not in checked or held[split] >= MIN_SHARE[split] * fraction * total)
               for split, fraction in zip(SPLITS, fractions) if fraction > 0)


def contiguous_parts(sizes: Mapping[str, int], fractions: Sequence[float]) -> dict[str, list[Part]]:
    """Files laid end to end (in the mapping's order) and cut at the fractions of the total size."""
    total = sum(sizes.values())
    edges = [0.0, fractions[0] * total, (fractions[0] + fractions[1]) * total, float(total)]
    parts: dict[str, list[Part]] = {}
    position = 0
    for key, size in sizes.items():
        low, high = position, position + size
        position = high
        if size == 0:  # nothing to cut: the file goes where it sits
            index = next((i for i in range(3) if low < edges[i + 1]), 2)
            parts[key] = [(SPLITS[index], 0.0, 1.0)]
            continue
        own = []
        for split, start, end in zip(SPLITS, edges, edges[1:]):
            a, b = max(low, start), min(high, end)
            if b > a:
                own.append((split, 0.0 if a == low else (a - low) / size, 1.0 if b == high else (b - low) / size))
        parts[key] = own
    return parts


def plan_splits(sizes: Mapping[str, int], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, list[Part]]:
    """Each key's parts: its whole file in one split when splitting by file is usable, else
    contiguous ranges over the collection (see the module docstring). ``sizes`` in path order."""
    fractions = tuple(fractions)
    by_file = assign_splits(list(sizes), fractions)
    if sum(sizes.values()) == 0 or by_file_is_usable(by_file, sizes, fractions):
        return {key: [(split, 0.0, 1.0)] for key, split in by_file.items()}
    return contiguous_parts(sizes, fractions)
