"""What a source is worth to its target: the target's loss with its source and without it.

For every paired document of a split, the same target ids (the target and the EOS that ends it) are
scored twice by one model: after ``EOS <source marker> source <task marker>`` and after
``EOS <task marker>`` alone. The difference, in nats per target token, is what reading the source
saves the model: zero when it ignores the source, the target's whole loss when the source
determines it. A document too long for the model's context with its source is skipped and listed.
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
from shortcutlm.models import GPT
from shortcutlm.pairs.tasks import PairError
from shortcutlm.tokenizers.composite import task_marker_name
from shortcutlm.tokenizers.paired import split_document, tasks_of


@dataclass
class TaskWorth:
    """One task's sums over a split: target tokens, nats with and without the source."""

    task: str
    documents: int = 0
    target_tokens: int = 0
    nats_with: float = 0.0
    nats_without: float = 0.0
    skipped: list[str] = field(default_factory=list)

    @property
    def loss_with(self) -> float:
        return self.nats_with / self.target_tokens if self.target_tokens else float("nan")

    @property
    def loss_without(self) -> float:
        return self.nats_without / self.target_tokens if self.target_tokens else float("nan")

    @property
    def worth(self) -> float:
        """Nats per target token the source is worth (loss without it minus loss with it)."""
        return self.loss_without - self.loss_with

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "documents": self.documents, "target_tokens": self.target_tokens,
                "loss_with_source": self.loss_with, "loss_without_source": self.loss_without,
                "source_worth_nats_per_token": self.worth, "skipped": list(self.skipped)}


@torch.no_grad()
def target_nats(model: GPT, ids: np.ndarray, first_target: int) -> tuple[np.ndarray, np.ndarray]:
    """``(nats, target ids)`` of the targets ``ids[first_target:]``, each predicted from all ids before it."""
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64))[None]
    logits = model(x[:, :-1])
    nats = torch.nn.functional.cross_entropy(logits[0].double(), x[0, 1:], reduction="none")
    return nats[first_target - 1:].numpy(), x[0, first_target:].numpy()


def document_worth(model: GPT, eos: int, before: np.ndarray, marker: int,
                   target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One document scored both ways: ``(nats with, targets with, nats without, targets without)``."""
    tail = np.concatenate([[marker], target, [eos]]).astype(np.int64)
    with_source = np.concatenate([[eos], before, tail])
    without = np.concatenate([[eos], tail])
    nats_with, targets_with = target_nats(model, with_source, len(before) + 2)
    nats_without, targets_without = target_nats(model, without, 2)
    return nats_with, targets_with, nats_without, targets_without


def source_worth(checkpoint: str | Path | Checkpoint, data_dir: str | Path | None = None, split: str = "test",
                 device: str = "cpu", max_documents: int | None = None) -> dict[str, TaskWorth]:
    """Each task's target loss with and without its source over ``split`` of the pairs folder
    (default: the one the checkpoint was trained on)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_folder(checkpoint, torch.device(device))
    tasks = tasks_of(ckpt.tokenizer)
    if not tasks:
        raise PairError(f"checkpoint {ckpt.folder} was not trained on pairs (its vocabulary has no task markers)")
    folder = ckpt.shard_folder(data_dir)
    manifest = ShardManifest.read(folder)
    if manifest.fingerprint != ckpt.tokenizer.fingerprint():
        raise PairError(f"{folder}: its tokenizer ({manifest.fingerprint}) is not the checkpoint's "
                        f"({ckpt.tokenizer.fingerprint()})")
    model = ckpt.model.to(device).eval()
    eos, block = ckpt.tokenizer.eos_id, model.config.block_size
    markers = {name: ckpt.tokenizer.special_ids[task_marker_name(name)] for name in tasks}
    results = {name: TaskWorth(name) for name in tasks}
    seen = 0
    for shard in manifest.split(split).shards:
        for key, tokens, meta in read_shard(folder / shard):
            if meta.get("alone"):
                continue
            task, before, target = split_document(ckpt.tokenizer, tokens)
            entry = results[task]
            if len(before) + len(target) + 3 - 1 > block:
                entry.skipped.append(f"{key}: {len(before) + len(target) + 2} ids, more than the context ({block})")
                continue
            nats_with, targets_with, nats_without, targets_without = document_worth(
                model, eos, before, markers[task], target)
            assert np.array_equal(targets_with, targets_without)  # the same targets both ways, by construction
            entry.documents += 1
            entry.target_tokens += len(targets_with)
            entry.nats_with += float(nats_with.sum())
            entry.nats_without += float(nats_without.sum())
            seen += 1
            if max_documents is not None and seen >= max_documents:
                return results
    return results
