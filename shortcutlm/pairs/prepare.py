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

The manifest's ``pairs`` entry records the tasks, how many pairs went to each split, and every
leftover with its reason (``unpaired``: no partner; ``bad pair``: halves that disagree, skipped).
Splits are the pairs' own: both halves and every document made from a pair share its split.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from shortcutlm.artifacts.manifest import (TOKENIZER_FOLDER, ShardManifest, manifest_path,
                                           write_manifest)
from shortcutlm.datasets.new_manifest import new_manifest
from shortcutlm.datasets.prepare import prepare
from shortcutlm.datasets.shards import ShardWriter, read_shard, token_dtype
from shortcutlm.datasets.summary import summarise
from shortcutlm.pairs.collect import collect_pairs
from shortcutlm.pairs.halves import HALVES, check_same_source, doc_key, write_halves
from shortcutlm.pairs.records import BAD_PAIR, UNPAIRED, Leftover, Pair
from shortcutlm.pairs.tasks import TASKS, PairError, Task, task_named, tasks_between
from shortcutlm.tokenizers import load_tokenizer
from shortcutlm.tokenizers.composite import CompositeTokenizer
from shortcutlm.tokenizers.paired import paired, target_alone
from shortcutlm.tokenizers.domains import DOMAINS

PARTS = "parts"

log = logging.getLogger(__name__)


def _part_tokens(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A prepared part's documents by id, and its rejected documents' reasons by id."""
    manifest = ShardManifest.read(folder)
    tokens: dict[str, np.ndarray] = {}
    for split in manifest.splits.values():
        for shard in split.shards:
            for key, ids, _meta in read_shard(folder / shard):
                tokens[key] = ids
    rejected = {str(r.get("doc_id")): str(r.get("reason")) for r in manifest.rejected if r.get("doc_id")}
    return tokens, rejected


def _wanted_tasks(names: list[str] | None, domains: set[str]) -> list[Task]:
    tasks = [task_named(n) for n in names] if names else tasks_between(domains)
    missing = [t.name for t in tasks if not {t.source, t.target} <= domains]
    if missing:
        raise PairError(f"task(s) {', '.join(missing)} need halves this source has none of (it pairs "
                        f"{', '.join(sorted(domains))})")
    if not tasks:
        raise PairError(f"no task pairs {', '.join(sorted(domains))}")
    return tasks


def _write_sequences(out: Path, pairs: list[Pair], index: dict[str, Any], parts: dict[str, Any],
                     joint: CompositeTokenizer, wanted: list[Task], alone: bool,
                     leftovers: list[Leftover]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One shard per split of ``<source> source <task> target`` sequences for every pair whose halves were
    both encoded (and, in train, each target alone); a pair with a rejected half joins ``leftovers``.
    Returns the shard records and the pairs written per split."""
    dtype = token_dtype(joint.vocab_size)
    writers: dict[str, ShardWriter] = {}
    counts: dict[str, int] = {}
    for entry, pair in zip(index["pairs"], pairs):
        ids: dict[str, np.ndarray] = {}
        for half in pair.halves:
            tokens, rejected = parts[half.domain]
            key = doc_key(entry["files"][half.domain])
            if key in tokens:
                ids[half.domain] = tokens[key]
            else:
                why = rejected.get(key, "no document was written for it")
                ids = {}
                leftovers.append(Leftover(" + ".join(h.describe() for h in pair.halves),
                                          f"its {half.domain} half was rejected: {why}", UNPAIRED, pair.split,
                                          pair.pair_id))
                break
        if not ids:
            continue
        counts[pair.split] = counts.get(pair.split, 0) + 1
        writer = writers.get(pair.split)
        if writer is None:
            writer = writers[pair.split] = ShardWriter(out, pair.split, 0, dtype)
        for task in (t for t in wanted if {t.source, t.target} <= set(ids)):
            src_ids, tgt_ids = ids[task.source], ids[task.target]
            meta = {"pair_id": pair.pair_id, "task": task.name, "split": pair.split, "index": entry["index"],
                    "source_file": entry["files"][task.source], "target_file": entry["files"][task.target],
                    "source_tokens": int(src_ids.shape[-1]), "target_tokens": int(tgt_ids.shape[-1])}
            document = paired(joint, task.name, task.source, src_ids, task.target, tgt_ids)
            writer.add(f"{pair.pair_id}-{task.name}", document, meta)
            if alone and pair.split == "train":
                writer.add(f"{pair.pair_id}-{task.name}-alone", target_alone(joint, task.name, task.target, tgt_ids),
                           {**meta, "source_tokens": 0, "alone": True})
    shards = [w.finish().to_dict() for w in writers.values()]
    return shards, counts


def prepare_pairs(source: dict[str, Any], tokenizers: dict[str, dict[str, Any]], out: str | Path,
                  tasks: list[str] | None = None, alone: bool = True, workers: int = 2,
                  progress: bool = True) -> dict[str, Any]:
    """Prepare paired sequences from ``source`` (``{"name": chorales|librispeech|folder, ...}``) into
    ``out``; ``tokenizers``: the settings of each domain's tokenizer (``{"midi": {...}, "acoustic": {...}}``);
    ``tasks``: the task names to write (default: every task the pairs serve). Returns the manifest."""
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
    index = write_halves(pairs, out, source)

    parts: dict[str, Any] = {}
    for name in (d for d in DOMAINS if d in domains):  # the joint vocabulary's parts in a fixed order
        settings = {k: v for k, v in tokenizers[name].items() if k != "domain"}
        prepare({"name": "folder", "path": str(out / HALVES / name), "splits": "names"}, {"domain": name, **settings},
                out / PARTS / name, workers=workers, progress=progress)
        parts[name] = _part_tokens(out / PARTS / name)
    joint = CompositeTokenizer({name: load_tokenizer(out / PARTS / name / TOKENIZER_FOLDER) for name in parts},
                               tasks=[t.name for t in TASKS.values() if t in wanted])
    joint.save(out / TOKENIZER_FOLDER)

    shards, counts = _write_sequences(out, pairs, index, parts, joint, wanted, alone, leftovers)

    manifest = new_manifest({"name": "pairs", "pairs": dict(source)}, {"domain": joint.domain}, joint,
                            out / TOKENIZER_FOLDER)
    manifest.update({
        "complete": True, "shards": shards, "warnings": [], "notes": [], "found": found,
        "pairs": {"tasks": [t.name for t in wanted], "alone": bool(alone), "pairs_per_split": counts,
                  "tokenizers": json.loads(json.dumps(tokenizers, default=str)),
                  "parts": {name: f"{PARTS}/{name}" for name in parts},
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
    return manifest
