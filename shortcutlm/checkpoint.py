"""The checkpoint folder, as owned by the artifact layer (:mod:`shortcutlm.artifacts.checkpoint`).

Kept so ``from shortcutlm.checkpoint import load_folder`` goes on working; new code imports from
the artifact layer.
"""
from __future__ import annotations

from shortcutlm.artifacts.checkpoint import (DATA, HPARAMS, LEGACY_WEIGHTS, LOAD_ERRORS, METRICS, MODEL_CONFIG, RECIPE,
                                             TOKENIZER_DIR, TRAINER_STATE, WEIGHTS, Checkpoint, CheckpointData,
                                             CheckpointError, CheckpointFolder, ShardFolderError, check_trainer_state,
                                             load_folder, load_problem, resolve_shard_folder, save_folder)

__all__ = ["WEIGHTS", "LEGACY_WEIGHTS", "MODEL_CONFIG", "RECIPE", "HPARAMS", "TOKENIZER_DIR", "DATA", "METRICS",
           "TRAINER_STATE", "LOAD_ERRORS", "Checkpoint", "CheckpointData", "CheckpointError", "CheckpointFolder",
           "ShardFolderError", "check_trainer_state", "load_folder", "load_problem", "resolve_shard_folder",
           "save_folder"]
