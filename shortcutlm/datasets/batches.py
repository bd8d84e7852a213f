"""The batches a trainer or evaluator reads from a prepared folder: one folder's
(:mod:`shortcutlm.datasets.loader`) or a mixture's (:mod:`shortcutlm.datasets.mixture`).

The choice is made here, from the folder's manifest, so that the mixture (which builds on the
one-folder loader) and the loader do not import each other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from shortcutlm.artifacts.manifest import read_manifest
from shortcutlm.artifacts.remote import shard_folder
from shortcutlm.datasets.loader import EvalBatches, TrainBatches
from shortcutlm.datasets.mixture import MixtureEvalBatches, MixtureTrainBatches

__all__ = ["train_batches", "eval_batches"]


def _is_mixture(shard_dir: str | Path) -> bool:
    return bool(read_manifest(shard_folder(shard_dir)).get("mixture"))


def train_batches(shard_dir: str | Path, block_size: int, batch_size: int, seed: int, rank: int = 0,
                  world_size: int = 1, num_workers: int = 0, state: dict[str, Any] | None = None,
                  split: str = "train", shuffle_shards: int = 4, pin_memory: bool = False) -> TrainBatches:
    """Infinite shuffled batches ``[B, (K,) block_size + 1]`` for one rank; see
    :class:`~shortcutlm.datasets.loader.TrainBatches` (a mixture folder's:
    :class:`~shortcutlm.datasets.mixture.MixtureTrainBatches`)."""
    kind = MixtureTrainBatches if _is_mixture(shard_dir) else TrainBatches
    return kind(shard_dir, block_size, batch_size, seed, rank, world_size, num_workers, state, split, shuffle_shards,
                pin_memory)


def eval_batches(shard_dir: str | Path, split: str, block_size: int, batch_size: int,
                 rank: int = 0, world_size: int = 1) -> EvalBatches:
    """Finite deterministic batches ``[B, (K,) block_size + 1]`` covering the split once; see
    :class:`~shortcutlm.datasets.loader.EvalBatches` (a mixture folder's:
    :class:`~shortcutlm.datasets.mixture.MixtureEvalBatches`)."""
    kind = MixtureEvalBatches if _is_mixture(shard_dir) else EvalBatches
    return kind(shard_dir, split, block_size, batch_size, rank, world_size)
