"""Each task scored on held-out pairs with the field's metric, beside its chance level and its ceiling.

For up to ``per_task`` paired documents of a split, the model writes the target of the source file
(:func:`~shortcutlm.pairs.generate.generate_task`) and the metric
(:mod:`~shortcutlm.pairs.metrics`) compares it with the pair's reference. Beside it:

* chance: the same metric between the reference and another pair's reference of the same split
  (a different chorale window or utterance): what a target unrelated to this source scores;
* ceiling: the reference through its tokenizer and back: the best a model writing ids of this
  vocabulary could score.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shortcutlm.artifacts.checkpoint import Checkpoint, load_folder
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.datasets.shards import read_shard
from shortcutlm.models import SamplingSettings
from shortcutlm.pairs.generate import generate_task
from shortcutlm.pairs.metrics import score_files
from shortcutlm.pairs.tasks import PairError, task_named
from shortcutlm.tokenizers.paired import round_trip, tasks_of


CEILING = "ceiling"


@dataclass
class TaskScores:
    """One task's scores: per pair, and their means for the model, chance and the ceiling."""

    task: str
    metric: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def means(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for which in ("model", "chance", "ceiling"):
            values = [row[which] for row in self.rows if row.get(which)]
            if values:
                out[which] = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "pairs": len(self.rows), "means": self.means(),
                "rows": self.rows}


def _documents(folder: Path, split: str) -> list[dict[str, Any]]:
    manifest = ShardManifest.read(folder)
    if not manifest.has_split(split):
        raise PairError(f"{folder}: no {split} split to score")
    return [meta for shard in manifest.split(split).shards for _key, _ids, meta in read_shard(folder / shard)
            if not meta.get("alone")]


def score_tasks(checkpoint: str | Path | Checkpoint, out_dir: str | Path, data_dir: str | Path | None = None,
                split: str = "test", per_task: int = 4, settings: SamplingSettings | None = None,
                device: str = "cpu") -> dict[str, TaskScores]:
    """Every task the checkpoint knows, scored on up to ``per_task`` pairs of ``split``; the targets are
    written into ``out_dir`` (``<source stem>-<task>-seed<seed>.<ext>`` with sidecars), the references
    through their tokenizer under ``out_dir/ceiling/<task>/``."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_folder(checkpoint, torch.device(device))
    folder = ckpt.shard_folder(data_dir)
    settings = settings or SamplingSettings(temperature=1.0, top_k=20, seed=0)
    documents = _documents(folder, split)
    results: dict[str, TaskScores] = {}
    for name in tasks_of(ckpt.tokenizer):
        task = task_named(name)
        chosen = [d for d in documents if d["task"] == name]
        if not chosen:
            continue
        scores = results[name] = TaskScores(name, task.metric)
        where = Path(out_dir)
        for number, meta in enumerate(chosen[:per_task]):
            source, reference = folder / meta["source_file"], folder / meta["target_file"]
            other = folder / chosen[(number + 1) % len(chosen)]["target_file"] if len(chosen) > 1 else None
            row: dict[str, Any] = {"pair_id": meta["pair_id"], "source": str(source), "reference": str(reference)}
            try:
                generated = generate_task(ckpt, name, source, where, settings, device=device,
                                          overwrite=True)
                row["generated"] = str(generated)
                row["model"] = score_files(task.metric, reference, generated)
            except PairError as exc:  # e.g. the model ended the target at once: scored as nothing written
                row["error"] = str(exc)
            if other is not None:
                row["chance"] = score_files(task.metric, reference, other)
                row["chance_reference"] = str(other)
            ceiling = round_trip(ckpt.tokenizer, task.target, reference,
                                 where / CEILING / name / f"{meta['pair_id']}{reference.suffix}")
            row["ceiling"] = score_files(task.metric, reference, ceiling)
            scores.rows.append(row)
    return results
