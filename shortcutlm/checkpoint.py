"""The self-describing checkpoint folder: everything ``generate`` and ``evaluate`` need.

Layout::

    CKPT/
      model.pt             GPT weights (state dict; tied weights stored once by torch.save)
      model_config.json    GPTConfig fields
      recipe.yaml          the resolved recipe (preset and overrides applied) and the variant
      hparams.json         training settings, parameter count, FLOPs per token
      tokenizer/           the tokenizer's own folder (tokenizer.json + model files)
      data.json            the shard folder, its manifest's tokenizer fingerprint, split sizes
      metrics.csv          training and validation curves (when trained by ``shortcutlm train``)
      trainer/last.ckpt    full Lightning state for exact resume
"""
from __future__ import annotations

import json
import pickle
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from shortcutlm.errors import UserError
from shortcutlm.models import GPT, GPTConfig
from shortcutlm.tokenizers import Tokenizer, load_tokenizer

WEIGHTS = "model.pt"
MODEL_CONFIG = "model_config.json"
RECIPE = "recipe.yaml"
HPARAMS = "hparams.json"
TOKENIZER_DIR = "tokenizer"
DATA = "data.json"
METRICS = "metrics.csv"
TRAINER_STATE = Path("trainer") / "last.ckpt"


class CheckpointError(UserError, ValueError):
    """A checkpoint folder is incomplete or unreadable; the message names the folder and file."""


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def save_folder(folder: str | Path, model: GPT, recipe: dict[str, Any], hparams: dict[str, Any],
                tokenizer_dir: str | Path, data: dict[str, Any]) -> Path:
    """Write (or refresh) a checkpoint folder; every file is replaced atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(folder / WEIGHTS)
    write_json(folder / MODEL_CONFIG, model.config.to_dict())
    _write_text(folder / RECIPE, yaml.safe_dump(recipe, sort_keys=False))
    write_json(folder / HPARAMS, hparams)
    write_json(folder / DATA, data)
    target = folder / TOKENIZER_DIR
    if Path(tokenizer_dir).resolve() != target.resolve():
        staging = folder / (TOKENIZER_DIR + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(tokenizer_dir, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    return folder


@dataclass
class Checkpoint:
    """A loaded checkpoint folder."""

    folder: Path
    model: GPT
    tokenizer: Tokenizer
    recipe: dict[str, Any]
    hparams: dict[str, Any]
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.recipe.get("variant") or self.folder.name

    @property
    def fingerprint(self) -> str:
        return self.data["fingerprint"]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: not a checkpoint folder ({path.name} is missing)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err


# What torch.load raises on a file that is not a torch save of tensors: garbage or truncated
# bytes (zip errors are RuntimeError, a stray pickle gives KeyError or UnpicklingError), an empty
# file (EOFError), an unreadable one (OSError), pickled objects other than tensors (UnpicklingError).
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError,
               AttributeError, ImportError, IndexError, MemoryError, struct.error)


def load_problem(err: BaseException) -> str:
    """A short, safe reason for a failed load: first sentence only, and never torch's advice to
    retry with ``weights_only=False`` (that would run whatever code the file carries)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    unsafe = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    if unsafe and "Unsupported global" in unsafe.group(1):
        return "it holds objects other than tensors: " + unsafe.group(1).split(". ")[0].strip().rstrip(".")
    if unsafe or "mmap can only be used" in text or isinstance(err, (KeyError, EOFError, pickle.UnpicklingError)):
        return "not a torch zip archive, or cut short"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if first.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for GPT:" + the detail
        first = f"{first} {lines[1]}"
    first = first.split(". ")[0].rstrip(".")
    if not first or "weights_only" in first:
        return type(err).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def check_trainer_state(path: str | Path) -> None:
    """Refuse to resume from a ``trainer/last.ckpt`` that cannot be read, in one line.

    Lightning would otherwise fail inside ``fit`` with torch's multi-line advice to load the file
    unsafely. The file is memory-mapped, so checking a large state costs little; it must load
    with ``weights_only=True`` (the module saves its RNG state in plain types for that reason).
    """
    path = Path(path)
    fix = "run again with --fresh to start over, or delete it"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except LOAD_ERRORS as err:
        raise CheckpointError(f"{path}: unreadable trainer state ({load_problem(err)}); {fix}") from err
    if not isinstance(state, dict) or "state_dict" not in state or "global_step" not in state:
        raise CheckpointError(f"{path}: not a Lightning trainer checkpoint (no state_dict and global_step); {fix}")


def load_folder(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load model, tokenizer and the run's description from a checkpoint folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    config = GPTConfig.from_dict(_read_json(folder / MODEL_CONFIG))
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS} is missing (was training interrupted before the first save?)")
    model = GPT(config)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as err:
        raise CheckpointError(f"{weights}: not a shortcutlm weights file, or corrupt ({load_problem(err)}); "
                              f"re-train it (shortcutlm train ... --out {folder} --fresh) or restore the folder "
                              "from a copy") from err
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{weights}: the weights do not fit {MODEL_CONFIG} ({load_problem(err)}); "
                              f"re-train it (shortcutlm train ... --out {folder} --fresh) or restore the folder "
                              "from a copy") from err
    model.to(device).eval()
    tokenizer = load_tokenizer(folder / TOKENIZER_DIR)
    data = _read_json(folder / DATA)
    tokenizer.check_fingerprint(data["fingerprint"], f"checkpoint {folder}")
    recipe = yaml.safe_load((folder / RECIPE).read_text()) if (folder / RECIPE).is_file() else {}
    return Checkpoint(folder, model, tokenizer, recipe, _read_json(folder / HPARAMS), data)
