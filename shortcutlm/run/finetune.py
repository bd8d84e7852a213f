"""``train --init-from CKPT``: a run that starts from a checkpoint's weights (not its optimiser or step).

Three things make the weights mean what they meant: the new shards were made with the checkpoint's
tokenizer (same fingerprint: ``prepare --tokenizer-from CKPT`` encodes new data with it), the model
has the checkpoint's shape, and the run records where it started (``hparams.json``'s ``init_from``)
so a resumed sitting starts from the same place and a reader knows the weights' history. Freezing
(``train.freeze``) and the lower fine-tuning learning rate (``train.finetune_lr``) live here too.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shortcutlm.artifacts.checkpoint import CheckpointError, CheckpointFolder
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.core.config_schema import ConfigError
from shortcutlm.models import GPTConfig
from shortcutlm.run.recipe import TrainSettings
from shortcutlm.tokenizers import FingerprintMismatch

#: ``hparams.json``'s record of the checkpoint a run started from.
ORIGIN_KEY = "init_from"
#: The fine-tuning learning rate when ``train.finetune_lr`` is not given: this share of ``train.lr``.
FINETUNE_LR_SCALE = 0.1
#: Model settings that change no weight's shape or meaning (a fine-tune may set its own).
FREE_MODEL_SETTINGS = frozenset({"dropout"})

_FREEZE = re.compile(r"^(embeddings|heads|ln_f|shortcut)$|^blocks\.(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class StartingPoint:
    """The checkpoint a run starts from, checked against the run's data and model."""

    folder: Path
    fingerprint: str
    step: int | None
    weights: dict[str, torch.Tensor]

    def record(self) -> dict[str, Any]:
        """What ``hparams.json`` keeps of it: the folder, its tokenizer fingerprint and its step."""
        return {"folder": str(self.folder), "fingerprint": self.fingerprint, "step": self.step}


def check_tokenizer(ckpt: str | Path, shards: ShardManifest) -> CheckpointFolder:
    """The checkpoint folder, once the shards were made with its tokenizer (one line saying how otherwise)."""
    folder = CheckpointFolder(Path(ckpt).expanduser())
    if not folder.exists or not folder.has_model_config:
        raise CheckpointError(f"--init-from {folder.path}: not a checkpoint folder (no model config there)")
    theirs = folder.data().fingerprint
    if theirs != shards.fingerprint:
        raise FingerprintMismatch(
            f"--init-from {folder.path} was trained with tokenizer fingerprint {theirs}, but --data {shards.folder} "
            f"was made with tokenizer fingerprint {shards.fingerprint}: its ids mean other things to the model. "
            f"Prepare the data with the checkpoint's tokenizer: shortcutlm prepare --source ... --path ... "
            f"--tokenizer-from {folder.path} --out NEW_DIR")
    return folder


def starting_point(folder: CheckpointFolder, config: GPTConfig) -> StartingPoint:
    """The checkpoint's weights, once its model has ``config``'s shape (refused in one line otherwise)."""
    saved = folder.model_config()
    wanted = config.to_dict()
    diffs = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in wanted.items()
             if key not in FREE_MODEL_SETTINGS and saved.get(key) != value]
    if diffs:
        raise ConfigError(f"--init-from {folder.path} holds a model of another shape than the recipe's variant "
                          f"({'; '.join(diffs)}): fine-tuning loads weights into the same shape; pick the variant "
                          f"and model settings it was trained with")
    data = folder.data()
    return StartingPoint(folder.path.resolve(), str(data.fingerprint), folder.step, folder.read_weights())


def finetune_settings(settings: TrainSettings) -> TrainSettings:
    """The settings of a run started from a checkpoint: peak ``finetune_lr`` (default a tenth of ``lr``),
    ``min_lr`` scaled by the same ratio."""
    lr = settings.finetune_lr if settings.finetune_lr is not None else settings.lr * FINETUNE_LR_SCALE
    return dataclasses.replace(settings, lr=lr, min_lr=min(lr, settings.min_lr * lr / settings.lr))


def check_origin(out: str | Path, start: StartingPoint | None, freeze: list[str]) -> None:
    """Refuse to resume a run that started elsewhere (another checkpoint, or none) or froze other parts."""
    hparams = CheckpointFolder(Path(out)).hparams_or_none()
    if hparams is None:
        return
    saved = (hparams.init_from or {}).get("folder")
    now = str(start.folder) if start else None
    if saved != now:
        was = f"started from {saved}" if saved else "started from fresh weights"
        given = f"--init-from {now}" if now else "no --init-from"
        hint = f"run again with --init-from {saved}, " if saved else ""
        raise ConfigError(f"{out} holds a run that {was}, and this one has {given}; {hint}use another output "
                          "folder, or --fresh to start over")
    saved_freeze = list(hparams.train.get("freeze") or [])
    if saved_freeze != list(freeze):
        raise ConfigError(f"{out} holds a run with train.freeze {saved_freeze}, and this one has {list(freeze)}; "
                          "use another output folder, or --fresh to start over")


def _frozen_prefixes(spec: str, n_layer: int) -> list[str]:
    match = _FREEZE.match(spec.strip())
    if not match:
        raise ConfigError(f"train.freeze: {spec!r} is not one of embeddings, heads, ln_f, shortcut, blocks.N, "
                          "blocks.A-B")
    if match.group(1):
        return {"embeddings": ["embeddings.", "position_embedding."]}.get(match.group(1), [match.group(1) + "."])
    first = int(match.group(2))
    last = int(match.group(3)) if match.group(3) is not None else first
    if first > last:
        raise ConfigError(f"train.freeze: {spec!r} is an empty range (write blocks.A-B with A <= B)")
    if last >= n_layer:
        raise ConfigError(f"train.freeze: {spec!r} is outside the model's blocks 0-{n_layer - 1}")
    return [f"blocks.{i}." for i in range(first, last + 1)]


def check_freeze(specs: list[str], n_layer: int) -> None:
    """Refuse a ``train.freeze`` entry that names nothing a model of ``n_layer`` blocks has, before a run starts."""
    for spec in specs:
        _frozen_prefixes(spec, n_layer)


def freeze(model: torch.nn.Module, specs: list[str], n_layer: int) -> list[str]:
    """Stop gradients to the parameters ``specs`` name (see ``TrainSettings.freeze``); returns their names.

    A tied tensor is one parameter, so freezing the embeddings freezes tied output heads (and the
    reverse). The optimiser skips parameters without gradients, weight decay included.
    """
    named = list(model.named_parameters(remove_duplicate=False))
    frozen: list[str] = []
    for spec in specs:
        prefixes = _frozen_prefixes(spec, n_layer)
        hits = [(name, p) for name, p in named if name.startswith(tuple(prefixes))]
        if not hits:
            raise ConfigError(f"train.freeze: {spec!r} names no parameter of this model")
        for name, parameter in hits:
            parameter.requires_grad_(False)
            frozen.append(name)
    if specs and not any(p.requires_grad for _, p in named):
        raise ConfigError(f"train.freeze {specs} freezes every parameter: nothing would train")
    return frozen
