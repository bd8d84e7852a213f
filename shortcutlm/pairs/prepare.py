"""``prepare_pairs``: a pair source in, a prepared folder of paired sequences out.

1. The pairs are collected (:mod:`~shortcutlm.pairs.collect`); leftovers and bad pairs are kept.
2. Their halves are laid out per domain (:mod:`~shortcutlm.pairs.halves`) and each domain is prepared
   by the ordinary ``prepare`` into ``<out>/parts/<domain>`` (its tokenizer trained on the train
   halves, every reader protected, resumable); a half that prepare rejects leaves its partner unpaired.
3. One joint vocabulary over the parts with a marker per task
   (:class:`~shortcutlm.tokenizers.composite.CompositeTokenizer`) is saved in ``<out>/tokenizer``,
   and every pair becomes one document per task it serves, both directions
   (:mod:`~shortcutlm.pairs.sequences`), in shards beside a ``manifest.json`` of the usual format.
   ``alone``: each train pair's target also appears once without its source, so the model has seen
   a target unconditioned and "the target without its source" is a question it was trained on.
   Shards close at ``prepare``'s sizes (:mod:`~shortcutlm.pairs.shards`); the largest part is read a
   shard at a time. ``max_tokens``: a pair too long for the context is left over, not cut.
4. ``unpaired``: single-domain sources join the train split, encoded with the pairs' tokenizers
   (:mod:`~shortcutlm.pairs.unpaired`).

The manifest's ``pairs`` entry records the tasks, how many pairs went to each split, and every
leftover with its reason (``unpaired``: no partner; ``bad pair``: halves that disagree, skipped;
``too long``: longer than ``max_tokens``), and what each unpaired source gave.
Splits are the pairs' own: both halves and every document made from a pair share its split.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from shortcutlm.artifacts.manifest import (TOKENIZER_FOLDER, ShardManifest, manifest_path, read_manifest_or_none,
                                           write_manifest)
from shortcutlm.datasets.new_manifest import new_manifest
from shortcutlm.datasets.prepare import prepare
from shortcutlm.datasets.shards import token_dtype
from shortcutlm.datasets.summary import summarise
from shortcutlm.pairs.collect import collect_pairs
from shortcutlm.pairs.halves import HALVES, check_same_source, doc_key, write_halves
from shortcutlm.pairs.records import BAD_PAIR, TOO_LONG, UNPAIRED, Leftover, Pair
from shortcutlm.pairs.shards import SplitShards, folder_documents
from shortcutlm.pairs.tasks import TASKS, PairError, Task, task_named, tasks_between
from shortcutlm.pairs.unpaired import UnpairedPart, check_unpaired, unpaired_documents
from shortcutlm.tokenizers import load_tokenizer
from shortcutlm.tokenizers.composite import CompositeTokenizer
from shortcutlm.tokenizers.paired import paired, target_alone
from shortcutlm.tokenizers.domains import DOMAINS

PARTS = "parts"

log = logging.getLogger(__name__)


def _rejections(folder: Path) -> dict[str, str]:
    """A prepared part's rejected documents' reasons by id."""
    return {str(r.get("doc_id")): str(r.get("reason")) for r in ShardManifest.read(folder).rejected if r.get("doc_id")}


def _tokens(folder: Path) -> int:
    return sum(r.tokens for r in ShardManifest.read(folder).shards)


def _wanted_tasks(names: list[str] | None, domains: set[str]) -> list[Task]:
    tasks = [task_named(n) for n in names] if names else tasks_between(domains)
    missing = [t.name for t in tasks if not {t.source, t.target} <= domains]
    if missing:
        raise PairError(f"task(s) {', '.join(missing)} need halves this source has none of (it pairs "
                        f"{', '.join(sorted(domains))})")
    if not tasks:
        raise PairError(f"no task pairs {', '.join(sorted(domains))}")
    return tasks


class _Sequences:
    """Writes each pair's documents (every task it serves, both directions; in train each target alone too)
    and keeps the tallies: pairs per split, and the pairs that became leftovers."""

    def __init__(self, shards: SplitShards, joint: CompositeTokenizer, wanted: list[Task], alone: bool,
                 max_tokens: int | None, leftovers: list[Leftover]) -> None:
        self.shards, self.joint, self.wanted, self.alone = shards, joint, wanted, alone
        self.max_tokens, self.leftovers = max_tokens, leftovers
        self.counts: dict[str, int] = {}
        self.longest = 0

    def write(self, entry: dict[str, Any], pair: Pair, ids: dict[str, np.ndarray]) -> None:
        where = " + ".join(h.describe() for h in pair.halves)
        length = sum(int(v.shape[-1]) for v in ids.values()) + 3  # two markers and the EOS that ends it
        if self.max_tokens is not None and length > self.max_tokens:
            self.leftovers.append(Leftover(where, f"{length} tokens as one sequence, more than pairs.max_tokens "
                                                  f"({self.max_tokens}): too long for the context", TOO_LONG,
                                           pair.split, pair.pair_id))
            return
        self.longest = max(self.longest, length)
        self.counts[pair.split] = self.counts.get(pair.split, 0) + 1
        for task in (t for t in self.wanted if {t.source, t.target} <= set(ids)):
            src_ids, tgt_ids = ids[task.source], ids[task.target]
            meta = {"pair_id": pair.pair_id, "task": task.name, "split": pair.split, "index": entry["index"],
                    "source_file": entry["files"][task.source], "target_file": entry["files"][task.target],
                    "source_tokens": int(src_ids.shape[-1]), "target_tokens": int(tgt_ids.shape[-1])}
            document = paired(self.joint, task.name, task.source, src_ids, task.target, tgt_ids)
            self.shards.add(pair.split, f"{pair.pair_id}-{task.name}", document, meta)
            if self.alone and pair.split == "train":
                self.shards.add(pair.split, f"{pair.pair_id}-{task.name}-alone",
                                target_alone(self.joint, task.name, task.target, tgt_ids),
                                {**meta, "source_tokens": 0, "alone": True})


def _write_pairs(pairs: list[Pair], index: dict[str, Any], folders: dict[str, Path], sequences: _Sequences) -> None:
    """Every pair whose halves were both encoded, through ``sequences``; a pair with a rejected half joins
    the leftovers. The largest part is read shard by shard and its partners looked up in the smaller
    parts, held in memory (LibriSpeech's transcripts are a few percent of its audio's ids)."""
    streamed = max(folders, key=lambda d: _tokens(folders[d]))
    held = {d: dict(folder_documents(f)) for d, f in folders.items() if d != streamed}
    entries = list(zip(index["pairs"], pairs))
    by_key = {doc_key(e["files"][streamed]): k for k, (e, _p) in enumerate(entries) if streamed in e["files"]}
    done: set[int] = set()
    seen: set[str] = set()
    rejections = {d: _rejections(f) for d, f in folders.items()}

    def halves(number: int, first: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        entry, pair = entries[number]
        ids = dict(first)
        for half in pair.halves:
            if half.domain not in ids:
                part = held[half.domain] if half.domain in held else {}
                found = part.get(doc_key(entry["files"][half.domain]))
                if found is None:
                    return None
                ids[half.domain] = found
        return ids

    for key, tokens in folder_documents(folders[streamed]):
        seen.add(key)
        number = by_key.get(key)
        if number is not None and (ids := halves(number, {streamed: tokens})) is not None:
            done.add(number)
            sequences.write(*entries[number], ids)
    for number, (entry, pair) in enumerate(entries):
        if number in done:
            continue
        if streamed not in entry["files"] and (ids := halves(number, {})) is not None:
            sequences.write(entry, pair, ids)
            continue
        for half in pair.halves:  # the first half no document was written for, and why
            key = doc_key(entry["files"][half.domain])
            if key in seen or any(key in part for part in held.values()):
                continue
            why = rejections[half.domain].get(key, "no document was written for it")
            sequences.leftovers.append(Leftover(" + ".join(h.describe() for h in pair.halves),
                                                f"its {half.domain} half was rejected: {why}", UNPAIRED,
                                                pair.split, pair.pair_id))
            break


def prepare_pairs(source: dict[str, Any], tokenizers: dict[str, dict[str, Any]], out: str | Path,
                  tasks: list[str] | None = None, alone: bool = True, workers: int = 2,
                  progress: bool = True, max_tokens: int | None = None,
                  unpaired: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Prepare paired sequences from ``source`` (``{"name": chorales|librispeech|folder, ...}``) into
    ``out``; ``tokenizers``: the settings of each domain's tokenizer (``{"midi": {...}, "acoustic": {...}}``);
    ``tasks``: the task names to write (default: every task the pairs serve); ``max_tokens``: a pair
    whose sequence is longer is left over (too long for the context); ``unpaired``: single-domain
    sources mixed into train (:mod:`~shortcutlm.pairs.unpaired`). Returns the manifest."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / HALVES).is_dir():
        raise PairError(f"{out} is not empty and not a pairs folder; prepare pairs into a new folder")
    source = json.loads(json.dumps(source, default=str))  # as the index records it
    check_same_source(out, source)
    clock = time.perf_counter()
    found: list[str] = []
    pairs: list[Pair] = []
    leftovers: list[Leftover] = []
    for item in collect_pairs(source, found):
        if isinstance(item, Pair):
            pairs.append(item)
        else:
            leftovers.append(item)
    if not pairs:
        reasons = "; ".join(left.line() for left in leftovers[:3])
        raise PairError(f"pair source {source.get('name')!r} gave no pairs ({len(leftovers)} left over: {reasons})")
    domains = {h.domain for p in pairs for h in p.halves}
    wanted = _wanted_tasks(tasks, domains)
    missing = sorted(d for d in domains if d not in tokenizers)
    if missing:
        raise PairError(f"pairs need a tokenizer for {', '.join(missing)}: give its settings (pairs.tokenizers)")
    mixed_in = check_unpaired(unpaired, domains, wanted)
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 4):
        raise PairError(f"pairs.max_tokens: give the longest sequence to keep, in tokens (4 or more), "
                        f"not {max_tokens!r}")
    index = write_halves(pairs, out, source)

    folders: dict[str, Path] = {}
    for name in (d for d in DOMAINS if d in domains):  # the joint vocabulary's parts in a fixed order
        settings = {k: v for k, v in tokenizers[name].items() if k != "domain"}
        prepare({"name": "folder", "path": str(out / HALVES / name), "splits": "names"}, {"domain": name, **settings},
                out / PARTS / name, workers=workers, progress=progress)
        folders[name] = out / PARTS / name
    joint = CompositeTokenizer({name: load_tokenizer(folder / TOKENIZER_FOLDER) for name, folder in folders.items()},
                               tasks=[t.name for t in TASKS.values() if t in wanted])
    joint.save(out / TOKENIZER_FOLDER)

    earlier = {str(r.get("name")) for r in (read_manifest_or_none(out) or {}).get("shards") or []}
    shards = SplitShards(out, token_dtype(joint.vocab_size))
    sequences = _Sequences(shards, joint, wanted, alone, max_tokens, leftovers)
    reports: list[UnpairedPart] = []
    try:
        _write_pairs(pairs, index, folders, sequences)
        for key, document, meta in unpaired_documents(mixed_in, out, joint, pairs, out / PARTS, workers, progress,
                                                      reports):
            shards.add("train", key, document, meta)
        records = shards.finish()
    except BaseException:
        shards.abort()
        raise
    counts = sequences.counts

    manifest = new_manifest({"name": "pairs", "pairs": dict(source)}, {"domain": joint.domain}, joint,
                            out / TOKENIZER_FOLDER)
    manifest.update({
        "complete": True, "shards": records, "warnings": [], "notes": [], "found": found,
        "pairs": {"tasks": [t.name for t in wanted], "alone": bool(alone), "pairs_per_split": counts,
                  "tokenizers": json.loads(json.dumps(tokenizers, default=str)),
                  "parts": {name: f"{PARTS}/{name}" for name in folders},
                  "max_tokens": max_tokens, "longest_sequence": sequences.longest,
                  "unpaired": [r.as_dict() for r in reports],
                  "leftovers": [left.as_dict() for left in leftovers]},
        "last_run": {"seconds": time.perf_counter() - clock},
    })
    summarise(manifest, len(pairs))
    bad = [left for left in leftovers if left.kind == BAD_PAIR]
    if bad:  # one line for the batch; each pair and its reason are in the manifest
        log.warning("pairs: %d bad pair(s) skipped (e.g. %s); every one is listed in %s (pairs.leftovers)",
                    len(bad), bad[0].line(), manifest_path(out))
    for split in ("train", "valid", "test"):
        if not counts.get(split):
            manifest["warnings"].append(f"the {split} split holds no pairs")
    write_manifest(out, manifest)
    for name in earlier - {r["name"] for r in records}:  # an earlier prepare's shards this one did not rewrite
        (out / name).unlink(missing_ok=True)
    return manifest
