"""A paired recipe's stages: its pairs prepared, and each checkpoint's tasks measured.

A recipe trains on pairs by naming ``pairs`` instead of a ``source`` and ``tokenizer``::

    pairs:
      source: {name: chorales, limit: 40, segments: 8}      # or librispeech (path) or folder (path)
      tokenizers: {midi: {...}, acoustic: {layout: flatten, ...}}
      tasks: [synthesize, transcribe]                        # default: every task the pairs serve
      per_task: 8                                            # held-out pairs generated and scored per task
      max_tokens: 1024                                       # optional: longer pairs are left over
      unpaired: [{domain: midi, source: {name: bach_chorales}}]  # optional: single-domain train documents

``prepare`` writes the pairs folder (:mod:`~shortcutlm.pairs.prepare`); training reads it as any
prepared folder (``train.target_only`` takes the loss on the targets). The evaluation stage adds, per
checkpoint, what the source is worth to each task's target (:mod:`~shortcutlm.pairs.worth`); the
generation stage writes each task's targets of held-out sources into the variant's samples and scores
them beside chance and the ceiling (:mod:`~shortcutlm.pairs.scores`). Both go into ``pairs.json``,
which the report's pairs section reads.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.files import write_json
from shortcutlm.artifacts.manifest import read_manifest_or_none
from shortcutlm.models import SamplingSettings
from shortcutlm.pairs.prepare import prepare_pairs
from shortcutlm.pairs.results import read_results, results_path
from shortcutlm.pairs.scores import score_tasks
from shortcutlm.pairs.worth import source_worth
from shortcutlm.run.recipe import Recipe

log = logging.getLogger(__name__)


def ensure_pairs(recipe: Recipe, data_dir: str | Path, progress: bool = True) -> Path:
    """Prepare the recipe's pairs into ``data_dir`` unless it holds them already (same source, tokenizers,
    tasks, ``alone``, ``max_tokens`` and unpaired sources); with other settings, preparing again refuses
    in one line what cannot change."""
    data_dir = Path(data_dir)
    spec = recipe.pairs
    manifest = read_manifest_or_none(data_dir, require_complete=True)
    if not manifest or not holds_pairs(manifest, spec):
        manifest = prepare_pairs(dict(spec["source"]), dict(spec["tokenizers"]), data_dir, spec.get("tasks"),
                                 alone=bool(spec.get("alone", True)), workers=2, progress=progress,
                                 max_tokens=spec.get("max_tokens"), unpaired=spec.get("unpaired"))
    warn_if_longer_than_context(recipe, manifest)
    return data_dir


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def holds_pairs(manifest: dict[str, Any], spec: dict[str, Any]) -> bool:
    """The prepared folder holds the pairs ``spec`` asks for (its source, tokenizers, tasks and options)."""
    made = manifest.get("pairs") or {}
    return (_same((manifest.get("source") or {}).get("pairs"), spec["source"])
            and _same(made.get("tokenizers"), spec["tokenizers"])
            and made.get("alone") == bool(spec.get("alone", True))
            and made.get("max_tokens") == spec.get("max_tokens")
            and _same([u.get("source") for u in made.get("unpaired") or []],
                      [u.get("source") for u in spec.get("unpaired") or []])
            and (not spec.get("tasks") or made.get("tasks") == list(spec["tasks"])))


def warn_if_longer_than_context(recipe: Recipe, manifest: dict[str, Any]) -> None:
    """One line when some pairs do not fit the model's context (their target would be cut from its source)."""
    longest = int((manifest.get("pairs") or {}).get("longest_sequence") or 0)
    blocks = {int({**recipe.model, **(fields or {})}.get("block_size") or 0) for fields in recipe.variants.values()}
    block = min(blocks) if blocks else 0
    if block and longest > block + 1:
        log.warning("pairs: the longest pair is %d tokens as one sequence, more than the context (%d); its target "
                    "is then read without all of its source. Set pairs.max_tokens to leave such pairs out.",
                    longest, block + 1)


def record_worth(root: str | Path, variants: dict[str, Path], data_dir: Path | None,
                 split: str = "test") -> dict[str, Any]:
    """Each variant's source worth per task, kept in ``<root>/pairs.json``."""
    results = read_results(root)
    for name, folder in variants.items():
        worth = source_worth(folder, data_dir, split)
        results.setdefault(name, {})["worth"] = {task: w.as_dict() for task, w in worth.items()}
    write_json(results_path(root), results)
    return results


def worth_of_paired(checkpoints: list[str | Path], data_dir: str | Path | None, split: str,
                    out: str | Path) -> list[str]:
    """``shortcutlm evaluate``'s addition for paired checkpoints: their source worth in ``<out>/pairs.json``
    and the report's lines for it (nothing when no checkpoint was trained on pairs)."""
    from shortcutlm.artifacts.checkpoint import CheckpointFolder
    from shortcutlm.tokenizers import load_tokenizer
    from shortcutlm.tokenizers.paired import tasks_of

    paired = {}
    for folder in checkpoints:
        tokenizer_dir = CheckpointFolder(Path(folder)).tokenizer_dir
        if tokenizer_dir.is_dir() and tasks_of(load_tokenizer(tokenizer_dir)):
            paired[Path(folder).name] = Path(folder)
    if not paired:
        return []
    record_worth(out, paired, Path(data_dir) if data_dir else None, split)
    from shortcutlm.pairs.page import pairs_section

    return pairs_section(out)


def record_scores(recipe: Recipe, root: str | Path, variants: dict[str, Path], samples: dict[str, Path],
                  data_dir: Path) -> dict[str, Any]:
    """Each variant's targets of held-out sources (in its samples folder) and their scores, in ``pairs.json``."""
    results = read_results(root)
    g = recipe.generate
    settings = SamplingSettings(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=g.seed)
    for name, folder in variants.items():
        scores = score_tasks(folder, samples[name], data_dir, per_task=int(recipe.pairs.get("per_task", 4)),
                             settings=settings)
        results.setdefault(name, {})["scores"] = {task: s.as_dict() for task, s in scores.items()}
    write_json(results_path(root), results)
    return results
