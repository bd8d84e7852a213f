"""The ablation YAML: its schema, :func:`load_ablation`, and the recipe each dataset's runs share.

``recipes/ablation.yaml`` names datasets (a recipe file + preset, or an inline source and
tokenizer), the model and training settings every run shares, the variants, the seeds and the
baseline's extra step multiples. Loading resolves each dataset to one :class:`Recipe` and checks
every variant's model fields at once, not hours into the grid.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shortcutlm.core.config_schema import ConfigError, deep_merge, from_dict, load_config
from shortcutlm.run.recipe import Recipe, TrainSettings, load_recipe

DEFAULT_RECIPE = "recipes/ablation.yaml"
#: Training settings every run of a dataset shares whatever its variant: a per-variant ``train``
#: may not set them (equal steps are the comparison; the seed comes from ``seeds``).
SHARED_TRAIN_KEYS = ("max_steps", "seed")


@dataclass
class DatasetEntry:
    """One dataset of the ablation: a recipe file (+ preset) or an inline source and tokenizer."""

    recipe: str | None = None
    """A recipe YAML (relative to the ablation file, else to the working directory)."""
    preset: str | None = None
    """A preset of that recipe, e.g. ``tiny``."""
    source: dict[str, Any] | None = None
    """Inline source spec; with ``recipe`` it is merged over the recipe's (replaced when it names another source)."""
    tokenizer: dict[str, Any] | None = None
    """Inline tokenizer spec; merged like ``source`` (replaced when it names a ``domain``)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Recipe keys merged last, e.g. ``{source: {limit: 100}}`` or ``{train: {lr: 1e-3}}``."""


@dataclass
class DiagnosticsSettings:
    seed: int = 0
    """Which seed's checkpoints are diagnosed."""
    variants: list[str] = field(default_factory=lambda: ["baseline", "resformer", "svformer", "shortcut_depth"])
    """Variants compared side by side (those absent from ``variants`` are skipped)."""
    enabled: bool = True


@dataclass
class Finding:
    """A claim from the papers that the page checks against the runs, one sentence per finding.

    The claim is typed by hand (it is what a paper says); its verdicts on each dataset come from the
    runs by the seed-paired rule, so the sentence says where the claim reproduces and where it does not.
    """

    variant: str
    claim: str
    """What the paper reports, in a phrase (shown as written)."""
    expect: str = "better"
    """The verdict the claim predicts for ``variant`` against ``against``: ``better`` or ``worse``."""
    against: str | None = None
    """The variant it is compared with (default the baseline), e.g. a baseline at the same learning rate."""
    beside: str | None = None
    """A variant whose difference from the baseline is shown beside this one's, e.g. ``svformer`` beside
    ``svformer_lr1e-3`` against ``baseline_lr1e-3``: does the verdict hold at the other setting?"""

    def __post_init__(self) -> None:
        if self.expect not in ("better", "worse"):
            raise ConfigError(f"findings: expect must be 'better' or 'worse', got {self.expect!r}")


@dataclass
class AblationConfig:
    """The grid: datasets × variants × seeds, plus the baseline at more steps."""

    datasets: dict[str, dict[str, Any]]
    """Name -> :class:`DatasetEntry` fields."""
    name: str = "ablation"
    description: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    """GPTConfig fields shared by every dataset and variant (the stated model size)."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainSettings fields shared by every run (``seed`` and ``max_steps`` are set per run)."""
    evaluate: dict[str, Any] = field(default_factory=dict)
    """EvaluateSettings fields (the split the table reports)."""
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"baseline": {}})
    """Name -> GPTConfig fields over ``model``, plus optionally ``train``: TrainSettings fields for
    this variant's runs only (e.g. ``{train: {lr: 1.0e-3}}`` for a learning-rate pair)."""
    out: str = "runs/ablation"
    """Default run folder (``--out`` overrides; a preset appends ``-<preset>``)."""
    docs: str = "docs"
    """Default folder of the page, ``results.md`` (``--docs`` overrides; a preset appends ``/<preset>``)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baseline: str = "baseline"
    """The variant every other is compared with."""
    baseline_steps: list[float] = field(default_factory=lambda: [1.0, 1.25, 1.5])
    """Multiples of ``train.max_steps`` the baseline is also trained for (must include 1.0)."""
    diagnostics: DiagnosticsSettings = field(default_factory=DiagnosticsSettings)
    findings: list[Finding] = field(default_factory=list)
    """Claims from the papers, each checked on every dataset (the page's "Findings")."""
    gap_over_training: bool = False
    """The page also shows each variant's seed-paired gap in validation loss at every validation step and
    whether it widens, holds or closes (:mod:`shortcutlm.ablation.gap`): for a grid that trains longer."""
    see_also: list[str] = field(default_factory=list)
    """Docs folders of other ablations (their ``results.json``) whose summary and findings this page
    shows in a section of its own, e.g. a deeper grid beside this one."""
    preset: str | None = None
    """The ablation preset that was applied (recorded, not set by hand)."""

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("datasets: name at least one dataset")
        if self.baseline not in self.variants:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the variants {sorted(self.variants)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be a non-empty list of distinct integers, got {self.seeds}")
        if any(m <= 0 for m in self.baseline_steps) or 1.0 not in self.baseline_steps:
            raise ConfigError(f"baseline_steps must be positive multiples including 1.0, got {self.baseline_steps}")
        if "seed" in self.train:
            raise ConfigError("train.seed is set per run from `seeds`; remove it")
        for finding in self.findings:
            for name in (finding.variant, finding.against or self.baseline, finding.beside or self.baseline):
                if name not in self.variants:
                    raise ConfigError(f"findings: {name!r} is not one of the variants {sorted(self.variants)}")
        for name, spec in self.variants.items():
            train = (spec or {}).get("train", {})
            if not isinstance(train, dict):
                raise ConfigError(f"variants.{name}.train: expected a mapping of training settings, got {train!r}")
            shared = sorted(set(train) & set(SHARED_TRAIN_KEYS))
            if shared:
                raise ConfigError(f"variants.{name}.train: {shared} are shared by every variant; remove them")

    def model_fields(self, variant: str) -> dict[str, Any]:
        """The variant's GPTConfig fields (its ``train`` key set aside)."""
        return {k: v for k, v in (self.variants[variant] or {}).items() if k != "train"}

    def train_overrides(self, variant: str) -> dict[str, Any]:
        """The variant's own training settings over the shared ones (usually none)."""
        return dict((self.variants[variant] or {}).get("train") or {})


@dataclass
class Ablation:
    config: AblationConfig
    path: Path
    recipes: dict[str, Recipe]
    """Per dataset: the resolved recipe all its runs share (variants = the ablation's)."""
    overrides: list[str] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        return list(self.recipes)


def _resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate
    for root in (base, Path.cwd()):
        if (root / candidate).is_file():
            return root / candidate
    return base / candidate


def _merge_spec(base: dict[str, Any] | None, update: dict[str, Any] | None, key: str) -> dict[str, Any]:
    if not update:
        return dict(base or {})
    if key in update and (base or {}).get(key) != update[key]:
        return dict(update)  # another source / domain: the recipe's options do not apply
    return deep_merge(base or {}, update)


def dataset_recipe(config: AblationConfig, name: str, base_dir: Path) -> Recipe:
    """The recipe every run of ``name`` shares: its recipe (+ preset), the shared model/train/evaluate,
    the ablation's variants, then the dataset's overrides."""
    try:
        entry = from_dict(DatasetEntry, config.datasets[name] or {}, f"datasets.{name}")
        if entry.recipe:
            base = load_recipe(_resolve(entry.recipe, base_dir), entry.preset).to_dict()
        else:
            if entry.preset:
                raise ConfigError(f"datasets.{name}: a preset needs a recipe file")
            if not entry.source or not entry.tokenizer:
                raise ConfigError(f"datasets.{name}: give a recipe file, or both source and tokenizer inline")
            base = {"name": name}
        base["source"] = _merge_spec(base.get("source"), entry.source, "name")
        base["tokenizer"] = _merge_spec(base.get("tokenizer"), entry.tokenizer, "domain")
        base = deep_merge(base, {"model": config.model, "train": config.train, "evaluate": config.evaluate})
        base["variants"] = {k: config.model_fields(k) for k in config.variants}
        base["name"] = name
        base = deep_merge(base, entry.overrides or {})
        recipe = from_dict(Recipe, base)
        for variant in recipe.variants:
            recipe.model_config(variant, vocab_size=2, n_streams=1)  # validates the fields now, not hours later
            overrides = config.train_overrides(variant)
            if overrides:
                from_dict(TrainSettings, {**asdict(recipe.train), **overrides}, f"variants.{variant}.train")
        return recipe
    except ConfigError as err:
        raise ConfigError(f"datasets.{name}: {err}") from err


def load_ablation(path: str | Path = DEFAULT_RECIPE, preset: str | None = None,
                  overrides: list[str] | None = None, datasets: list[str] | None = None) -> Ablation:
    """Read and validate the ablation YAML (preset, then ``--set`` overrides); resolves every dataset's recipe."""
    path = Path(path)
    config = load_config(path, preset, overrides, "ablation file", lambda raw: from_dict(AblationConfig, raw))
    names = list(config.datasets)
    if datasets:
        unknown = [d for d in datasets if d not in config.datasets]
        if unknown:
            raise ConfigError(f"{path}: no dataset(s) {unknown}; datasets: {names}")
        names = [d for d in names if d in datasets]
    recipes = {}
    for name in names:
        try:
            recipes[name] = dataset_recipe(config, name, path.parent)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
    return Ablation(config, path, recipes, list(overrides or []))


def context_length(recipe: Recipe, variant: str) -> int:
    """The block size ``variant`` trains at: the recipe's model fields resolved into a GPTConfig,
    so a recipe that leaves ``block_size`` to the model's default gets that default.
    The block size does not depend on the tokenizer, so a placeholder vocabulary serves."""
    return recipe.model_config(variant, vocab_size=2, n_streams=1).block_size
