"""Recipes: one YAML per dataset, validated into dataclasses (the runner of its stages is ``stages``).

A recipe names a source and tokenizer (for ``prepare``), a model (GPTConfig fields; the
vocabulary and stream count come from the tokenizer), the variants to train and compare,
and settings for training, evaluation and generation. ``presets`` (``tiny``, ``paper``, ...)
are partial recipes merged over the base; ``--set key.sub=value`` overrides come last.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shortcutlm.core.config_schema import ConfigError, closest, from_dict, load_config
from shortcutlm.models import GPTConfig
from shortcutlm.tokenizers import tokenizer_class



@dataclass
class TrainSettings:
    """How a model is trained. Step counts are optimiser steps."""

    max_steps: int = 1000
    """Length of the run (and of the cosine schedule)."""
    batch_size: int = 8
    """Sequences per device per micro-step."""
    accumulate: int = 1
    """Micro-steps per optimiser step (gradient accumulation)."""
    lr: float = 6e-4
    min_lr: float = 6e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    precision: str = "32-true"
    """Lightning precision: ``32-true``, ``bf16-mixed`` (autocast, CPU or GPU), ``16-mixed`` (GPU)."""
    compile: bool = False
    """Run the model through ``torch.compile``."""
    seed: int = 1337
    val_every: int = 100
    """Validate every this many optimiser steps (and at the end)."""
    val_batches: int = 20
    """Validation batches during training (``evaluate`` always does the full pass)."""
    log_every: int = 10
    ckpt_every: int = 0
    """Also save every this many optimiser steps (0: by time only)."""
    ckpt_minutes: float = 5.0
    """Save the checkpoint folder and trainer state at the first step boundary after this many
    minutes since the last save (0: off). A crash or ``kill -9`` loses at most this much training
    plus one step; Ctrl-C loses nothing (the run saves at the next step boundary)."""
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    """Lightning strategy: ``auto``, ``ddp``, ``ddp_spawn``, ``fsdp``."""
    target_only: bool = False
    """Paired data (``shortcutlm.pairs``): take the loss on each pair's target only, not its source."""
    num_workers: int = 0
    """Data-loading worker processes per device."""
    peak_flops: float | None = None
    """Peak FLOP/s for MFU; ``None`` measures a matrix product on the device at start."""
    freeze: list[str] = field(default_factory=list)
    """Parameters left as they are (fine-tuning): ``embeddings`` (token embeddings and a learned position
    table; tied output heads with them), ``heads``, ``ln_f``, ``shortcut``, ``blocks.N`` or ``blocks.A-B``
    (inclusive), e.g. ``[embeddings, blocks.0-3]``."""
    finetune_lr: float | None = None
    """Peak learning rate of a run that starts from a checkpoint's weights (``train --init-from``);
    ``None``: a tenth of ``lr`` (``min_lr`` scaled alike), so fine-tuning does not undo what was learned."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "accumulate", "val_every", "log_every", "devices", "num_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if min(self.warmup_steps, self.ckpt_every, self.ckpt_minutes, self.num_workers, self.val_batches) < 0:
            raise ConfigError("train.warmup_steps, ckpt_every, ckpt_minutes, num_workers and val_batches must be >= 0")
        if not 0 < self.min_lr <= self.lr:
            raise ConfigError(f"train: need 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if not isinstance(self.freeze, list) or not all(isinstance(x, str) for x in self.freeze):
            raise ConfigError("train.freeze: expected a list of names like [embeddings, blocks.0-3], "
                              f"got {self.freeze!r}")
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            raise ConfigError(f"train.finetune_lr must be > 0 (or null: a tenth of lr), got {self.finetune_lr}")
        if self.precision not in ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"):
            raise ConfigError(f"train.precision {self.precision!r}: use 32-true, bf16-mixed, 16-mixed or bf16-true")


@dataclass
class EvaluateSettings:
    """How checkpoints are scored: a recipe's ``evaluate`` stage and ``shortcutlm evaluate``'s options."""
    split: str = "test"
    """The split to evaluate."""
    batch_size: int = 8
    """Windows per batch."""
    max_batches: int | None = None
    """Stop after this many batches: a partial pass, whose per-byte figures are estimates (none: the
    exact full pass)."""


@dataclass
class GenerateSettings:
    """How samples are drawn: a recipe's ``generate`` stage, ``shortcutlm generate``'s options and
    :meth:`shortcutlm.api.Model.generate`'s defaults all read them from here."""
    prompt: str | None = None
    """A prompt file (.wav/.flac, .mid, .txt); ``None`` takes the first document of the test split."""
    prompt_tokens: int = 64
    """Tokens of the test document used as prompt when ``prompt`` is None (0: unconditional)."""
    max_new_tokens: int | None = 256
    """Positions to generate (time steps)."""
    seconds: float | None = None
    """Length in seconds instead of tokens (audio and MIDI)."""
    temperature: float = 1.0
    """Softmax temperature; 0 samples greedily."""
    top_k: int | None = 50
    """Sample among the k most likely ids (none: all)."""
    top_p: float | None = None
    """Sample among the most likely ids whose probabilities sum to p (none: all)."""
    seed: int = 0
    """Seed of the sampling; recorded in each sample's sidecar."""
    samples: int = 1
    """Samples to draw, as one batch."""


@dataclass
class Recipe:
    name: str
    source: dict[str, Any] = field(default_factory=dict)
    """Passed to ``prepare`` (``name``, ``path``, options)."""
    tokenizer: dict[str, Any] = field(default_factory=dict)
    """Passed to ``prepare`` (``domain`` plus the tokenizer's settings)."""
    mixture: dict[str, Any] = field(default_factory=dict)
    """Several prepared folders as one joint model's data, instead of ``source`` and ``tokenizer``:
    ``parts`` (name -> ``data`` folder, or ``source`` and ``tokenizer`` to prepare, and ``weight``)
    and ``temperature`` (see :mod:`shortcutlm.run.joint`)."""
    pairs: dict[str, Any] = field(default_factory=dict)
    """Paired documents across domains instead of ``source`` and ``tokenizer``: ``source`` (a pair source:
    chorales, librispeech or folder), ``tokenizers`` (each domain's settings), ``tasks``, ``alone``,
    ``per_task`` (pairs scored per task), ``max_tokens`` (longer pairs left over) and ``unpaired``
    (single-domain train sources); see :mod:`shortcutlm.pairs.run`."""
    description: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    """GPTConfig fields shared by all variants (vocab_size and n_streams come from the tokenizer)."""
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"baseline": {}})
    """Name -> GPTConfig fields over ``model``; each variant is trained and compared."""
    train: TrainSettings = field(default_factory=TrainSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    preset: str | None = None
    """The preset that was applied (recorded, not set by hand)."""

    def model_config(self, variant: str, vocab_size: int, n_streams: int) -> GPTConfig:
        if variant not in self.variants:
            raise ConfigError(f"recipe {self.name}: no variant {variant!r}{closest(variant, self.variants)} "
                              f"(variants: {', '.join(self.variants)})")
        fields = {**self.model, **(self.variants[variant] or {})}
        for key in ("vocab_size", "n_streams"):
            if key in fields:
                raise ConfigError(f"recipe {self.name}: model.{key} comes from the tokenizer; remove it")
        try:
            return GPTConfig.from_dict({**fields, "vocab_size": vocab_size, "n_streams": n_streams})
        except (ValueError, TypeError) as err:
            raise ConfigError(f"recipe {self.name}, variant {variant}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_tokenizer_domain(tokenizer: dict[str, Any]) -> None:
    """A recipe's ``tokenizer.domain`` must name a known tokenizer, or ``train`` would record a
    domain that nothing can load (``midiX``)."""
    domain = tokenizer.get("domain")
    if domain is None:
        raise ConfigError("tokenizer.domain is missing; give text, midi or acoustic")
    try:
        tokenizer_class(domain)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"tokenizer.domain: {err}") from err


PART_KEYS = {"data", "source", "tokenizer", "weight"}
MIXTURE_KEYS = {"parts", "temperature"}


def check_mixture_recipe(recipe: Recipe) -> None:
    """A mixture recipe's ``mixture`` is well formed (one line naming the key otherwise); it takes
    the place of ``source`` and ``tokenizer``, which become ``mixture`` and ``joint``."""
    mixture = recipe.mixture
    unknown = sorted(set(mixture) - MIXTURE_KEYS)
    if unknown:
        raise ConfigError(f"mixture: unknown key(s) {unknown} (known keys: {sorted(MIXTURE_KEYS)})")
    if recipe.source not in ({}, {"name": "mixture"}) or recipe.tokenizer not in ({}, {"domain": "joint"}):
        raise ConfigError("a recipe with a mixture names its data in mixture.parts; remove source and tokenizer")
    parts = mixture.get("parts")
    if not isinstance(parts, dict) or not parts:
        raise ConfigError("mixture.parts: give a mapping of part name -> {data: FOLDER} or {source, tokenizer}")
    temperature = mixture.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or temperature < 0):
        raise ConfigError(f"mixture.temperature {temperature!r}: give a number >= 0")
    for name, spec in parts.items():
        where = f"mixture.parts.{name}"
        if not str(name).replace("-", "_").isidentifier():
            raise ConfigError(f"{where}: use letters, digits, '-' and '_' in a part's name")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping, got {spec!r}")
        unknown = sorted(set(spec) - PART_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} (known keys: {sorted(PART_KEYS)})")
        if bool(spec.get("data")) == bool(spec.get("source")):
            raise ConfigError(f"{where}: give either data (a prepared folder) or source and tokenizer")
        if spec.get("source"):
            try:
                check_tokenizer_domain(spec.get("tokenizer") or {})
            except ConfigError as err:
                raise ConfigError(f"{where}.{err}") from err
        weight = spec.get("weight")
        if weight is not None:
            if temperature is not None:
                raise ConfigError(f"{where}.weight: give weights or mixture.temperature, not both")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(f"{where}.weight {weight!r}: give a number >= 0")
    recipe.source, recipe.tokenizer = {"name": "mixture"}, {"domain": "joint"}


PAIRS_KEYS = {"source", "tokenizers", "tasks", "alone", "per_task", "max_tokens", "unpaired"}


def check_pairs_recipe(recipe: Recipe) -> None:
    """A paired recipe's ``pairs`` is well formed (one line naming the key otherwise); it takes the place
    of ``source`` and ``tokenizer``, which become ``pairs`` and ``joint``."""
    pairs = recipe.pairs
    unknown = sorted(set(pairs) - PAIRS_KEYS)
    if unknown:
        raise ConfigError(f"pairs: unknown key(s) {unknown} (known keys: {sorted(PAIRS_KEYS)})")
    named_data = recipe.source not in ({}, {"name": "pairs"}) or recipe.tokenizer not in ({}, {"domain": "joint"})
    if recipe.mixture or named_data:
        raise ConfigError("a recipe with pairs names its data in pairs.source; remove source, tokenizer and mixture")
    if not isinstance(pairs.get("source"), dict) or not pairs["source"].get("name"):
        raise ConfigError("pairs.source: give a pair source, e.g. {name: chorales} (chorales, librispeech or folder)")
    tokenizers = pairs.get("tokenizers")
    if not isinstance(tokenizers, dict) or not all(isinstance(v, dict) for v in tokenizers.values()):
        raise ConfigError("pairs.tokenizers: give each domain's tokenizer settings, e.g. "
                          "{midi: {...}, acoustic: {...}}")
    for name, settings in tokenizers.items():
        check_tokenizer_domain({"domain": name, **settings})
    tasks = pairs.get("tasks")
    if tasks is not None and (not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks)):
        raise ConfigError("pairs.tasks: give a list of task names")
    recipe.source, recipe.tokenizer = {"name": "pairs"}, {"domain": "joint"}


def _build_recipe(raw: dict[str, Any]) -> Recipe:
    recipe = from_dict(Recipe, raw)
    for name in recipe.variants:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ConfigError(f"variant name {name!r}: use letters, digits, '-' and '_' only")
        recipe.model_config(name, vocab_size=2, n_streams=1)  # validates fields early
    if recipe.pairs:
        check_pairs_recipe(recipe)
        return recipe
    if recipe.mixture:
        check_mixture_recipe(recipe)
        return recipe
    if not recipe.source:
        raise ConfigError("source is missing; name the data to prepare (or give a mixture)")
    check_tokenizer_domain(recipe.tokenizer)
    return recipe


def load_recipe(path: str | Path, preset: str | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read, merge the preset and overrides, and validate a recipe YAML (errors name the file or the --set)."""
    return load_config(path, preset, overrides, "recipe file", _build_recipe)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """A recipe as recorded in a checkpoint (already resolved)."""
    data = {k: v for k, v in data.items() if k != "variant"}
    return from_dict(Recipe, data)
