"""The self-describing checkpoint folder: everything ``generate`` and ``evaluate`` need.

Layout::

    CKPT/
      model.safetensors    GPT weights (safetensors; tied weights stored once, see artifacts.weights);
                           a folder saved before holds model.pt (a torch save), still read
      model_config.json    GPTConfig fields
      recipe.yaml          the resolved recipe (preset and overrides applied) and the variant
      hparams.json         training settings, step, parameter count, FLOPs per token, tokens seen
      tokenizer/           the tokenizer's own folder (tokenizer.json + model files)
      data.json            the shard folder, its manifest's tokenizer fingerprint, split sizes
      metrics.csv          training and validation curves (when trained by ``shortcutlm train``)
      trainer/last.ckpt    full Lightning state for exact resume
      logs/ tensorboard/   each sitting's raw logs (merged into metrics.csv at every save)

:class:`CheckpointFolder` names these files and reads them (typed, one-line errors);
:func:`save_folder` writes them, durably, since a resumed run trusts them; :func:`load_folder`
builds the model and tokenizer. Nothing outside the artifact layer opens them by name.
"""
from __future__ import annotations

import csv
import io
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Sequence

import torch
import yaml

from shortcutlm.artifacts.files import ArtifactError, read_json, write_json, write_text
from shortcutlm.artifacts.hparams import TrainingRecord
from shortcutlm.artifacts.lock import LOCK
from shortcutlm.artifacts.manifest import MANIFEST, ShardManifest
from shortcutlm.artifacts.remote import is_remote, remote_location, shard_folder
from shortcutlm.artifacts.weights import TORCH_LOAD_ERRORS, WEIGHTS_LOAD_ERRORS, read_weights, write_weights
from shortcutlm.models import GPT, GPTConfig
from shortcutlm.tokenizers import FingerprintMismatch, Tokenizer, load_tokenizer

WEIGHTS = "model.safetensors"
#: The weights file of folders saved before safetensors (a torch save); read, never written.
LEGACY_WEIGHTS = "model.pt"
MODEL_CONFIG = "model_config.json"
RECIPE = "recipe.yaml"
HPARAMS = "hparams.json"
TOKENIZER_DIR = "tokenizer"
DATA = "data.json"
METRICS = "metrics.csv"
TRAINER_STATE = Path("trainer") / "last.ckpt"
LOGS = "logs"
TENSORBOARD = "tensorboard"

#: What runs write into a checkpoint folder (training, and the ablation's caches beside it): all that
#: ``train --fresh`` may remove. Anything else in the folder is the user's, and ``--fresh`` refuses it.
RUN_WRITES = frozenset({WEIGHTS, LEGACY_WEIGHTS, MODEL_CONFIG, RECIPE, HPARAMS, DATA, METRICS, TOKENIZER_DIR,
                        TRAINER_STATE.parts[0], LOGS, TENSORBOARD, LOCK, "ablation.json", "error.json",
                        "step_timing.json", "ablation_cache.json"})
_RUN_WRITES_PATTERN = re.compile(r"^eval(_\w+)?\.json$")

RETRAIN = "re-train it (shortcutlm train ... --out {folder} --fresh) or restore the folder from a copy"


class CheckpointError(ArtifactError, ValueError):
    """A checkpoint folder is incomplete or unreadable; the message names the folder and file."""


class ShardFolderError(CheckpointError):
    """The shard folder a checkpoint names (or one given for it) is not there."""


# ------------------------------------------------------------------------------------ data.json

@dataclass(frozen=True)
class CheckpointData:
    """``data.json``: the shards a checkpoint was trained on and their tokenizer."""

    shard_dir: str | None
    fingerprint: str | None
    domain: str | None = None
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    vocab_size: int | None = None
    n_streams: int | None = None

    @classmethod
    def from_manifest(cls, manifest: ShardManifest) -> CheckpointData:
        tok = manifest.tokenizer
        location = remote_location(manifest.folder) or str(manifest.folder.resolve())  # a view records its URL
        return cls(location, tok.fingerprint, tok.domain, manifest.split_sizes(),
                   tok.vocab_size, tok.n_streams)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointData:
        return cls(data.get("shard_dir"), data.get("fingerprint"), data.get("domain"), dict(data.get("splits") or {}),
                   data.get("vocab_size"), data.get("n_streams"))

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"shard_dir": self.shard_dir, "fingerprint": self.fingerprint, "domain": self.domain,
                                "splits": self.splits}
        if self.vocab_size is not None:
            body["vocab_size"] = self.vocab_size
        if self.n_streams is not None:
            body["n_streams"] = self.n_streams
        return body

    def tokens_per_second(self, split: str = "train") -> float | None:
        """Tokens per second of the split's audio or music, as recorded at training time."""
        entry = self.splits.get(split) or {}
        tokens, seconds = entry.get("tokens"), entry.get("seconds")
        return float(tokens) / float(seconds) if tokens and seconds else None


def resolve_shard_folder(folder: Path, data: CheckpointData, override: str | Path | None = None,
                         check: bool = True) -> Path:
    """The shard folder of the checkpoint in ``folder``: ``override`` when given, else the one its
    ``data.json`` names (a relative path is tried against the working directory, then the
    checkpoint folder). ``check``: refuse shards made with another tokenizer
    (:class:`~shortcutlm.tokenizers.FingerprintMismatch` naming both fingerprints)."""
    if override is not None and is_remote(override):
        path = shard_folder(override)
    elif override is not None:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise ShardFolderError(f"shard folder {path} does not exist")
    elif data.shard_dir and is_remote(data.shard_dir):  # trained on shards served from elsewhere
        path = shard_folder(data.shard_dir)
    else:
        recorded = data.shard_dir
        if not recorded:
            raise ShardFolderError(f"checkpoint {folder}: {DATA} names no shard_dir; pass the shards with --data")
        named = Path(recorded).expanduser()
        found = [p for p in ([named] if named.is_absolute() else [named, folder / named]) if p.is_dir()]
        if not found:
            raise ShardFolderError(f"checkpoint {folder}: its {DATA} names shard folder {recorded}, which does not "
                                   "exist here; pass the shards with --data")
        path = found[0]
    if check:
        check_shards(folder, data, path)
    return path


def check_shards(folder: Path, data: CheckpointData, shard_dir: Path) -> ShardManifest:
    """The shards' manifest (complete or not), once its tokenizer fingerprint is the checkpoint's."""
    manifest = ShardManifest.read(shard_dir, require_complete=False)
    theirs = manifest.tokenizer
    if theirs.fingerprint != data.fingerprint:
        vocab = f", vocab {data.vocab_size}" if data.vocab_size else ""
        raise FingerprintMismatch(
            f"checkpoint {folder} uses tokenizer fingerprint {data.fingerprint} ({data.domain}{vocab}), but the "
            f"shards in {shard_dir} were made with tokenizer fingerprint {theirs.fingerprint} ({theirs.domain}, "
            f"vocab {theirs.vocab_size}) ({shard_dir / MANIFEST}): their ids mean different things. Use shards "
            f"prepared with this checkpoint's tokenizer (its {DATA} names {data.shard_dir}).")
    return manifest


# ------------------------------------------------------------------------------------ the folder

@dataclass(frozen=True)
class CheckpointFolder:
    """A checkpoint folder on disk: where each file is, and typed reads of them (nothing loaded)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # where things are
    @property
    def weights_path(self) -> Path:
        """The weights file: ``model.safetensors``, or the ``model.pt`` of a folder saved before it."""
        legacy = self.path / LEGACY_WEIGHTS
        return legacy if legacy.is_file() and not (self.path / WEIGHTS).is_file() else self.path / WEIGHTS

    @property
    def model_config_path(self) -> Path:
        return self.path / MODEL_CONFIG

    @property
    def recipe_path(self) -> Path:
        return self.path / RECIPE

    @property
    def hparams_path(self) -> Path:
        return self.path / HPARAMS

    @property
    def data_path(self) -> Path:
        return self.path / DATA

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def trainer_state_path(self) -> Path:
        return self.path / TRAINER_STATE

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER_DIR

    @property
    def logs_dir(self) -> Path:
        """Where each sitting's CSV log goes (``version_<n>/`` per sitting)."""
        return self.path / LOGS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    # what is there
    @property
    def exists(self) -> bool:
        return self.path.is_dir()

    @property
    def has_weights(self) -> bool:
        return self.weights_path.is_file()

    @property
    def has_model_config(self) -> bool:
        return self.model_config_path.is_file()

    @property
    def has_hparams(self) -> bool:
        return self.hparams_path.is_file()

    @property
    def has_trainer_state(self) -> bool:
        return self.trainer_state_path.is_file()

    @property
    def has_metrics(self) -> bool:
        return self.metrics_path.is_file()

    # reads
    def _json(self, name: str, what: str) -> Any:
        path = self.path / name
        if not path.is_file():
            raise CheckpointError(f"{self.path}: not a checkpoint folder ({name} is missing)")
        try:
            body = read_json(path, what, RETRAIN.format(folder=self.path))
        except ArtifactError as err:
            raise CheckpointError(str(err)) from err
        if not isinstance(body, dict):
            raise CheckpointError(f"{path}: not a {what} (a JSON object was expected); "
                                  f"{RETRAIN.format(folder=self.path)}")
        return body

    def hparams(self) -> TrainingRecord:
        """``hparams.json`` (:class:`~shortcutlm.artifacts.hparams.TrainingRecord`)."""
        try:
            return TrainingRecord.from_dict(self._json(HPARAMS, "training record"), str(self.hparams_path))
        except CheckpointError:
            raise
        except ArtifactError as err:  # a malformed field: the same error as an unreadable file
            raise CheckpointError(f"{err}; {RETRAIN.format(folder=self.path)}") from err

    def hparams_or_none(self) -> TrainingRecord | None:
        """``hparams.json``, or None when it is missing or unreadable (no finished save to trust)."""
        try:
            return self.hparams()
        except CheckpointError:
            return None

    def train_settings(self) -> dict[str, Any]:
        """The training settings the run was saved with (``hparams.json``'s ``train``)."""
        return dict(self.hparams().train)

    def model_config(self) -> dict[str, Any]:
        """``model_config.json``: the GPTConfig fields."""
        return self._json(MODEL_CONFIG, "model config")

    def model_config_or_none(self) -> dict[str, Any] | None:
        try:
            return self.model_config()
        except CheckpointError:
            return None

    def gpt_config(self) -> GPTConfig:
        return GPTConfig.from_dict(self.model_config())

    def recipe(self) -> dict[str, Any]:
        """The resolved recipe and its ``variant`` (``{}`` for a folder saved without one)."""
        if not self.recipe_path.is_file():
            return {}
        try:
            body = yaml.safe_load(self.recipe_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise CheckpointError(f"{self.recipe_path}: unreadable recipe ({type(err).__name__}); "
                                  f"{RETRAIN.format(folder=self.path)}") from err
        return body if isinstance(body, dict) else {}

    def data(self) -> CheckpointData:
        """``data.json``: the shard folder and tokenizer fingerprint the run trained on."""
        return CheckpointData.from_dict(self._json(DATA, "data record"))

    @property
    def step(self) -> int | None:
        """The optimiser step of the last save (None before the first)."""
        hparams = self.hparams_or_none()
        return None if hparams is None else hparams.step

    def is_finished(self, max_steps: int) -> bool:
        """The last save is the end of a run of at least ``max_steps`` steps."""
        hparams = self.hparams_or_none()
        return hparams is not None and hparams.finished and (hparams.step or 0) >= max_steps

    def read_weights(self) -> dict[str, torch.Tensor]:
        """The saved state dict (CPU tensors, tied names restored), either format; one-line errors."""
        weights = self.weights_path
        if not weights.is_file():
            raise CheckpointError(f"{self.path}: {WEIGHTS} is missing "
                                  "(was training interrupted before the first save?)")
        try:
            return read_weights(weights)
        except WEIGHTS_LOAD_ERRORS as err:
            raise CheckpointError(f"{weights}: not a shortcutlm weights file, or corrupt ({load_problem(err)}); "
                                  f"{RETRAIN.format(folder=self.path)}") from err

    def weights_stamp(self) -> dict[str, Any]:
        """What identifies the weights now there (a cache made under another stamp is stale)."""
        stat = self.weights_path.stat()
        return {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size, "step": self.step}

    def metrics_rows(self) -> list[dict[str, str]]:
        """The rows of ``metrics.csv`` (``[]`` when the run logged none yet)."""
        if not self.has_metrics:
            return []
        with self.metrics_path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    @property
    def sittings(self) -> int:
        """How many sittings have logged into the folder (the next one logs as ``version_<sittings>``)."""
        return len(list(self.logs_dir.glob("version_*")))

    def sitting_logs(self) -> list[Path]:
        """Each sitting's CSV log, oldest first (what :meth:`write_metrics`' rows are merged from)."""
        parts = self.logs_dir.glob(f"version_*/{METRICS}")
        return sorted(parts, key=lambda p: int(p.parent.name.split("_")[-1]))

    def run_traces(self) -> list[Path]:
        """What a run leaves before its first full save: logs and weights (trainer state aside)."""
        return [p for p in (self.logs_dir, self.tensorboard_dir, self.path / WEIGHTS, self.path / LEGACY_WEIGHTS)
                if p.exists()]

    def shard_folder(self, override: str | Path | None = None, check: bool = True) -> Path:
        """See :func:`resolve_shard_folder`."""
        return resolve_shard_folder(self.path, self.data(), override, check)

    def entries(self) -> tuple[list[Path], list[Path]]:
        """``(written by runs, anything else)``: the folder's top-level entries, split by :data:`RUN_WRITES`
        (an interrupted atomic write's ``.tmp`` counts as its file's)."""
        ours: list[Path] = []
        theirs: list[Path] = []
        for entry in sorted(self.path.iterdir()) if self.exists else []:
            name = entry.name[:-len(".tmp")] if entry.name.endswith(".tmp") else entry.name
            mine = name in RUN_WRITES or _RUN_WRITES_PATTERN.match(name) and entry.is_file()
            (ours if mine and not entry.is_symlink() else theirs).append(entry)
        return ours, theirs

    def clear_run(self) -> list[Path]:
        """Remove what runs wrote here (``train --fresh``), and nothing else: a folder that also holds
        other files is refused in one line listing a few of them. Returns what was removed."""
        ours, theirs = self.entries()
        if theirs:
            shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in theirs[:5])
            more = f" and {len(theirs) - 5} more" if len(theirs) > 5 else ""
            raise CheckpointError(f"{self.path} holds files no shortcutlm run wrote ({shown}{more}); --fresh removes "
                                  "only a run's own files, so it refuses this folder: move them, or use another --out")
        for path in ours:
            if path.name == LOCK:
                continue  # the lock of the run that clears the folder
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return [p for p in ours if p.name != LOCK]

    # writes
    def write_metrics(self, columns: list[str], rows: Iterable[dict[str, Any]]) -> Path:
        """Replace ``metrics.csv`` (durably: it is the run's only merged curve)."""
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return write_text(self.metrics_path, buffer.getvalue(), durable=True)


def save_folder(folder: str | Path, model: GPT, recipe: dict[str, Any], hparams: TrainingRecord,
                tokenizer_dir: str | Path, data: CheckpointData | dict[str, Any]) -> Path:
    """Write (or refresh) a checkpoint folder; every file is replaced atomically and durably.

    The weights go to ``model.safetensors``; a ``model.pt`` an earlier save left (a run begun before
    safetensors, resumed now) is removed once the new file is in place, so the folder holds one set."""
    files = CheckpointFolder(Path(folder))
    files.path.mkdir(parents=True, exist_ok=True)
    write_weights(files.path / WEIGHTS, model.state_dict(), durable=True)
    (files.path / LEGACY_WEIGHTS).unlink(missing_ok=True)
    write_json(files.model_config_path, model.config.to_dict(), durable=True)
    write_text(files.recipe_path, yaml.safe_dump(recipe, sort_keys=False), durable=True)
    write_json(files.hparams_path, hparams.to_dict(), durable=True)
    write_json(files.data_path, data.to_dict() if isinstance(data, CheckpointData) else data, durable=True)
    target = files.tokenizer_dir
    if Path(tokenizer_dir).resolve() != target.resolve():
        staging = files.path / (TOKENIZER_DIR + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(tokenizer_dir, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    return files.path


# ------------------------------------------------------------------------------------ loading

@dataclass
class Checkpoint:
    """A loaded checkpoint folder."""

    folder: Path
    model: GPT
    tokenizer: Tokenizer
    recipe: dict[str, Any]
    hparams: TrainingRecord
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.recipe.get("variant") or self.folder.name

    @property
    def fingerprint(self) -> str:
        return self.data["fingerprint"]

    @property
    def files(self) -> CheckpointFolder:
        return CheckpointFolder(self.folder)

    @property
    def trained_on(self) -> CheckpointData:
        """The typed ``data.json``."""
        return CheckpointData.from_dict(self.data)

    def shard_folder(self, override: str | Path | None = None, check: bool = True) -> Path:
        """The shards to read with this checkpoint (see :func:`resolve_shard_folder`)."""
        return resolve_shard_folder(self.folder, self.trained_on, override, check)


#: What torch.load raises on a file that is not a torch save of tensors (see :mod:`.weights`).
LOAD_ERRORS = TORCH_LOAD_ERRORS


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
    files = CheckpointFolder(Path(folder))
    folder = files.path
    if not files.exists:
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    config = files.gpt_config()
    weights = files.weights_path
    state = files.read_weights()
    model = GPT(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{weights}: the weights do not fit {MODEL_CONFIG} ({load_problem(err)}); "
                              f"{RETRAIN.format(folder=folder)}") from err
    model.to(device).eval()
    tokenizer = load_tokenizer(files.tokenizer_dir)
    data = files._json(DATA, "data record")
    tokenizer.check_fingerprint(data.get("fingerprint"), f"checkpoint {folder}")
    return Checkpoint(folder, model, tokenizer, files.recipe(), files.hparams(), data)


def checkpoint_labels(names: Sequence[str], folders: Sequence[str | Path]) -> list[str]:
    """How every table and plot (evaluation, diagnostics) names checkpoints.

    A checkpoint goes by its name (``Checkpoint.name``: its recipe variant, else its folder's
    name). Checkpoints that share a name are told apart by their folder's name,
    ``baseline (run_a)``; by their whole folder path where folder names repeat too; and by a
    number where one folder is given twice.
    """
    names = [str(n) for n in names]
    paths = [Path(f) for f in folders]
    labels = [f"{n} ({f.name})" if names.count(n) > 1 else n for n, f in zip(names, paths)]
    labels = [f"{n} ({f})" if labels.count(label) > 1 else label for n, f, label in zip(names, paths, labels)]
    seen: dict[str, int] = {}
    numbered = []
    for label in labels:
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            label = f"{label} #{seen[label]}"
        numbered.append(label)
    return numbered
