"""``shortcutlm ablate``: every decoder variant × seed on each dataset, then ``docs/results.md``.

One command trains the grid that ``recipes/ablation.yaml`` describes, evaluates every run,
and writes a results page whose every figure it produced itself::

    shortcutlm ablate recipes/ablation.yaml                       # the CPU-sized grid (a few hours, 2 cores)
    shortcutlm ablate recipes/ablation.yaml --preset gpu          # the same grid, scaled up for one GPU
    shortcutlm ablate recipes/ablation.yaml --datasets shakespeare --set seeds=[0]
    shortcutlm ablate recipes/ablation.yaml --plan                # what is done, what is left, no training
    shortcutlm ablate recipes/ablation.yaml --report-only         # re-render the page from finished runs

What it runs, per dataset: each variant at each seed for ``train.max_steps`` steps (equal steps
and tokens for all variants), and the baseline again at each multiple of ``baseline_steps``
(ResFormer's matched-loss view: how many more tokens does the baseline need to reach a
variant's loss?). The seed is the recipe's ``train.seed``: the model's initialisation and the
order of the training data both follow it, so seed s of every variant sees the same batches.

Layout under ``--out`` (default ``runs/ablation``, ``runs/ablation-<preset>`` with a preset)::

    <dataset>/data/                       shards shared by every run of the dataset
    <dataset>/<variant>-s<seed>/          checkpoint folder (``shortcutlm train``'s)
    <dataset>/<baseline>-x1.25-s<seed>/   the baseline at 1.25x the steps
    <run>/eval.json                       cached evaluation (refreshed when the weights change)
    <run>/ablation.json                   wall time and machine of the sitting that trained it
    <run>/error.json                      why the run failed (removed once it succeeds)
    <dataset>/diagnostics/                compare_checkpoints output (seed-0 checkpoints)

Re-running keeps finished trainings and cached evaluations and trains only what is missing,
so the grid can be spread over several sittings (runs are ordered seed by seed, so a partial
grid is balanced). A run that fails is recorded with its error and the others go on. The page
(``<docs>/results.md`` + ``results.json``, plots under ``<docs>/results/<dataset>/``) renders
whatever is finished and marks the rest pending.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable


from shortcutlm.config_schema import ConfigError, deep_merge, from_dict, load_config
from shortcutlm.recipe import Recipe, load_recipe

DEFAULT_RECIPE = "recipes/ablation.yaml"
EVAL_FILE = "eval.json"
RUN_FILE = "ablation.json"
ERROR_FILE = "error.json"
EVAL_VERSION = 1
STEP_TIMING_FILE = "step_timing.json"
STEP_TIMING_STEPS = 20
STEP_TIMING_WARMUP = 2
NEAR_UNIFORM = 0.05  # depth weights this close (relative) to 1/depths read as no preference


# ============================================================================ configuration

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
    """Name -> GPTConfig fields over ``model``."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baseline: str = "baseline"
    """The variant every other is compared with."""
    baseline_steps: list[float] = field(default_factory=lambda: [1.0, 1.25, 1.5])
    """Multiples of ``train.max_steps`` the baseline is also trained for (must include 1.0)."""
    diagnostics: DiagnosticsSettings = field(default_factory=DiagnosticsSettings)
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


@dataclass
class Run:
    """One training of the grid."""

    dataset: str
    variant: str
    seed: int
    multiple: float
    """Steps relative to ``train.max_steps`` (1.0 for every variant; more for the extra baselines)."""
    steps: int
    folder: Path
    base_steps: int = 0
    """``train.max_steps`` of the dataset (the variants' step count)."""

    @property
    def name(self) -> str:
        return self.folder.name


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
        base["variants"] = {k: dict(v or {}) for k, v in config.variants.items()}
        base["name"] = name
        base = deep_merge(base, entry.overrides or {})
        recipe = from_dict(Recipe, base)
        for variant in recipe.variants:
            recipe.model_config(variant, vocab_size=2, n_streams=1)  # validates the fields now, not hours later
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


def steps_for(max_steps: int, multiple: float) -> int:
    return max(1, int(math.floor(max_steps * multiple + 0.5)))


def _mult_label(multiple: float) -> str:
    return f"{multiple:g}"


def plan_runs(ablation: Ablation, out: Path, datasets: Iterable[str] | None = None) -> list[Run]:
    """Every run, seed by seed (so an interrupted grid is balanced), then dataset, variant, multiple."""
    cfg = ablation.config
    runs = []
    chosen = list(datasets) if datasets is not None else ablation.datasets
    for seed in cfg.seeds:
        for dataset in chosen:
            base_steps = ablation.recipes[dataset].train.max_steps
            for variant in cfg.variants:
                runs.append(Run(dataset, variant, seed, 1.0, base_steps,
                                out / dataset / f"{variant}-s{seed}", base_steps))
            for multiple in sorted(cfg.baseline_steps):
                if multiple == 1.0:
                    continue
                steps = steps_for(base_steps, multiple)
                runs.append(Run(dataset, cfg.baseline, seed, multiple, steps,
                                out / dataset / f"{cfg.baseline}-x{_mult_label(multiple)}-s{seed}", base_steps))
    return runs


def run_recipe_for(recipe: Recipe, run: Run) -> Recipe:
    """The dataset's recipe with this run's seed and step count."""
    return replace(recipe, train=replace(recipe.train, seed=run.seed, max_steps=run.steps))


# ============================================================================ statistics

def mean_std(values: list[float]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None below two values) and count."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None, 0
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


def compare(variant: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """Variant minus baseline loss: paired by seed when two or more seeds are shared, else unpaired.

    Paired: the mean of the per-seed differences ± their sample std. Unpaired: the difference
    of the means ± the combined std sqrt(s_v² + s_b²). ``spread`` is None when neither exists.
    """
    shared = sorted(set(variant) & set(baseline))
    if len(shared) >= 2:
        diffs = [variant[s] - baseline[s] for s in shared]
        return {"delta": statistics.fmean(diffs), "spread": statistics.stdev(diffs), "n": len(shared),
                "method": "paired", "seeds": shared}
    mv, sv, nv = mean_std(list(variant.values()))
    mb, sb, nb = mean_std(list(baseline.values()))
    if mv is None or mb is None:
        return {"delta": None, "spread": None, "n": 0, "method": None, "seeds": []}
    spread = math.sqrt(sv ** 2 + sb ** 2) if sv is not None and sb is not None else None
    return {"delta": mv - mb, "spread": spread, "n": min(nv, nb),
            "method": "unpaired" if spread is not None else "single",
            "seeds": shared}


def verdict(delta: float | None, spread: float | None) -> str:
    """``better`` / ``worse`` when the difference exceeds its spread, else ``within spread``.

    Lower loss is better. Without a spread (one seed) the sign decides, and the verdict says so.
    """
    if delta is None:
        return "pending"
    if spread is None or not math.isfinite(spread):
        return ("better" if delta < 0 else "worse" if delta > 0 else "equal") + " (one seed, no spread)"
    if delta < -spread:
        return "better"
    if delta > spread:
        return "worse"
    return "within spread"


def matched_multiple(loss: float | None, curve: list[tuple[float, float]]) -> tuple[float | None, str]:
    """How many times the 1× baseline's tokens the baseline needs to reach ``loss``.

    ``curve`` is ``[(multiple, baseline loss), ...]``. Linear interpolation between the
    multiples where the baseline's loss first falls to ``loss``. Returns ``(value, label)``;
    the value is None with label ``< 1×`` when the variant is worse than the 1× baseline and
    ``> 1.5×`` (the largest multiple) when it is better than the baseline ever gets.
    """
    points = sorted((m, l) for m, l in curve if l is not None and math.isfinite(l))
    if loss is None or not math.isfinite(loss) or len(points) < 2:
        return None, "pending"
    first_m, first_l = points[0]
    if loss > first_l:
        return None, f"< {first_m:g}×"
    if loss == first_l:
        return first_m, f"{first_m:.2f}×"
    for (m0, l0), (m1, l1) in zip(points, points[1:]):
        if l0 > loss >= l1:
            value = m0 + (l0 - loss) / (l0 - l1) * (m1 - m0)
            return value, f"{value:.2f}×"
    return None, f"> {points[-1][0]:g}×"


# ============================================================================ one run

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    try:
        import numpy as np
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def is_trained(run: Run) -> bool:
    hparams = _read_json(run.folder / "hparams.json")
    return bool(hparams and hparams.get("finished") and hparams.get("step", 0) >= run.steps
                and (run.folder / "model.pt").is_file())


def check_settings(run: Run, recipe: Recipe, data_dir: Path) -> None:
    """Raise (training's ValueError) when the run's checkpoint was trained with other model or training settings."""
    from shortcutlm.training import check_same_run

    manifest = _read_json(data_dir / "manifest.json")
    if not manifest or not (run.folder / "model_config.json").is_file():
        return
    tok = manifest["tokenizer"]
    config = recipe.model_config(run.variant, tok["vocab_size"], tok["n_streams"])
    check_same_run(run.folder, config.to_dict(), recipe.train)


def _weights_key(folder: Path) -> dict[str, Any]:
    stat = (folder / "model.pt").stat()
    hparams = _read_json(folder / "hparams.json") or {}
    return {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size, "step": hparams.get("step")}


def evaluation_key(folder: Path, recipe: Recipe, split: str | None = None) -> dict[str, Any]:
    e = recipe.evaluate
    return {"version": EVAL_VERSION, "weights": _weights_key(folder), "split": split or e.split,
            "batch_size": e.batch_size, "max_batches": e.max_batches}


def _evaluation_file(run: Run, recipe: Recipe, split: str | None) -> Path:
    """``eval.json`` for the recipe's split (the table's loss), ``eval_<split>.json`` for another."""
    return run.folder / (EVAL_FILE if split in (None, recipe.evaluate.split) else f"eval_{split}.json")


def cached_evaluation(run: Run, recipe: Recipe, split: str | None = None) -> dict[str, Any] | None:
    data = _read_json(_evaluation_file(run, recipe, split))
    if data and data.get("key") == _jsonable(evaluation_key(run.folder, recipe, split)):
        return data["row"]
    return None


def evaluate_run(run: Run, recipe: Recipe, data_dir: Path, device: str, split: str | None = None) -> dict[str, Any]:
    """The run's evaluation row on ``split`` (default the recipe's), cached while its key
    (weights, split, batches) still holds."""
    row = cached_evaluation(run, recipe, split)
    if row is not None:
        return row
    from shortcutlm.evaluation import evaluate_checkpoints

    e = recipe.evaluate
    results = evaluate_checkpoints([run.folder], data_dir, split=split or e.split, batch_size=e.batch_size,
                                   max_batches=e.max_batches, device=device, progress=False)
    row = results["checkpoints"][0]
    _write_json(_evaluation_file(run, recipe, split), {"key": evaluation_key(run.folder, recipe, split), "row": row})
    return row


def validation_row(run: Run, recipe: Recipe, data_dir: Path, device: str) -> dict[str, Any] | None:
    """The loss on the ``valid`` split beside the recipe's own, when the data has one."""
    splits = (_read_json(data_dir / "manifest.json") or {}).get("splits", {})
    if recipe.evaluate.split == "valid" or not splits.get("valid", {}).get("tokens"):
        return None
    return evaluate_run(run, recipe, data_dir, device, split="valid")


def median_step_seconds(folder: Path) -> float | None:
    """Seconds per optimiser step: tokens per step over the median logged ``train/tokens_per_s``."""
    import csv

    hparams = _read_json(folder / "hparams.json") or {}
    metrics = folder / "metrics.csv"
    if not metrics.is_file() or not hparams.get("step"):
        return None
    with metrics.open(newline="") as fh:
        rates = [float(r["train/tokens_per_s"]) for r in csv.DictReader(fh) if r.get("train/tokens_per_s")]
    rates = [r for r in rates if r > 0 and math.isfinite(r)]
    if not rates:
        return None
    tokens_per_step = hparams["tokens_seen"] / hparams["step"]
    return tokens_per_step / statistics.median(rates)


def step_time_spread(folder: Path) -> float | None:
    """Interquartile range of the logged tokens/s over their median: large on a busy, shared machine."""
    import csv

    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        return None
    with metrics.open(newline="") as fh:
        rates = sorted(float(r["train/tokens_per_s"]) for r in csv.DictReader(fh) if r.get("train/tokens_per_s"))
    if len(rates) < 4:
        return None
    q1, _, q3 = statistics.quantiles(rates, n=4)
    return (q3 - q1) / statistics.median(rates)


_KV_CACHE: dict[str, tuple[int, int]] = {}


def kv_cache_bytes(folder: Path) -> tuple[int, int] | None:
    """``(attention K/V bytes, all cached bytes)`` of a batch-1 fp32 cache at full context, measured
    from the cache tensors of a model built from the checkpoint's config."""
    text = (folder / "model_config.json").read_text() if (folder / "model_config.json").is_file() else None
    if text is None:
        return None
    if text not in _KV_CACHE:
        import torch

        from shortcutlm.models import GPT, GPTConfig

        model = GPT(GPTConfig.from_dict(json.loads(text)))
        cache = model.new_cache(1, device="cpu", dtype=torch.float32)
        _KV_CACHE[text] = (int(cache.attention_nbytes()), int(cache.nbytes()))
        del model, cache
    return _KV_CACHE[text]


def run_record(run: Run, recipe: Recipe, row: dict[str, Any] | None,
               valid: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the page shows of one run (also what ``results.json`` lists)."""
    hparams = _read_json(run.folder / "hparams.json") or {}
    info = _read_json(run.folder / RUN_FILE) or {}
    record: dict[str, Any] = {
        "run": run.name, "variant": run.variant, "seed": run.seed, "multiple": run.multiple, "steps": run.steps,
        "actual_multiple": run.steps / run.base_steps, "folder": str(run.folder), "status": "done",
        "params": hparams.get("parameters"), "tokens_seen": hparams.get("tokens_seen"),
        "sec_per_step": median_step_seconds(run.folder), "step_time_iqr": step_time_spread(run.folder),
        "train_wall_s": info.get("wall_s"), "machine": info.get("machine"), "trained_at": info.get("trained"),
    }
    kv = kv_cache_bytes(run.folder)
    if kv:
        record["kv_attention_bytes"], record["kv_total_bytes"] = kv
    if row is not None:
        record["loss"] = row.get("loss", row.get("loss_nats"))
        for key in ("bits_per_byte", "bits_per_second", "perplexity", "tokens", "complete", "split"):
            if key in row:
                record[key] = row[key]
        for key in ("per_codebook", "per_family"):
            if key in row:
                record[key] = {name: s.get("loss_nats") for name, s in row[key].items() if s.get("tokens")}
    if valid is not None:
        record["valid_loss"] = valid.get("loss", valid.get("loss_nats"))
    return record


# ============================================================================ the grid

class Progress:
    """``[k/n] dataset run: what`` lines with elapsed time and an ETA from this sitting's pace."""

    def __init__(self, runs: list[Run], pending: set[str], echo: Callable[[str], None]) -> None:
        self.total = len(runs)
        self.start = time.monotonic()
        self.echo = echo
        self.pending_steps = {str(r.folder): r.steps for r in runs if str(r.folder) in pending}
        self.steps_done, self.seconds_spent = 0, 0.0

    def trained(self, run: Run, seconds: float) -> None:
        self.pending_steps.pop(str(run.folder), None)
        self.steps_done += run.steps
        self.seconds_spent += seconds

    def skipped(self, run: Run) -> None:
        self.pending_steps.pop(str(run.folder), None)

    def eta(self) -> str:
        left = sum(self.pending_steps.values())
        if not left:
            return "0:00:00"
        if not self.steps_done:
            return "after the first run"
        return _clock(left * self.seconds_spent / self.steps_done)

    def line(self, index: int, run: Run, what: str) -> None:
        elapsed = _clock(time.monotonic() - self.start)
        self.echo(f"[{index}/{self.total}] {run.dataset} {run.name} ({run.steps} steps): {what} "
                  f"— elapsed {elapsed}, ETA {self.eta()}")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _device(recipe: Recipe) -> str:
    import torch

    if recipe.train.accelerator == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return "cuda"


def prepare_dataset(recipe: Recipe, data_dir: Path, progress: bool) -> None:
    """Prepare the dataset's shards unless a complete manifest made from the same specs is there."""
    manifest = _read_json(data_dir / "manifest.json")
    canon = lambda x: json.dumps(x, sort_keys=True, default=str)  # noqa: E731
    tok_settings = {"domain": recipe.tokenizer.get("domain"),
                    **{k: v for k, v in recipe.tokenizer.items() if k != "domain"}}
    if (manifest and manifest.get("complete") and canon(manifest.get("source")) == canon(recipe.source)
            and canon(manifest.get("tokenizer_settings")) == canon(tok_settings)):
        return
    from shortcutlm.datasets.prepare import prepare

    prepare(recipe.source, recipe.tokenizer, data_dir, workers=2, progress=progress)


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "holds a run with other settings" in text:  # training's refusal; ablate has no --fresh
        text = (text.split("; use another output folder")[0] + " — the ablation's settings changed since this run "
                "was trained: use another --out, or delete that folder to retrain it")
    return text if len(text) <= 600 else text[:597] + "..."


def _quiet_lightning() -> None:
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_ablation(ablation: Ablation, out: str | Path, docs: str | Path | None = "docs",
                 datasets: list[str] | None = None, progress: bool = True, report_only: bool = False,
                 command: str | None = None, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and evaluate what is missing of the grid, then write ``<docs>/results.md`` and ``results.json``.

    ``datasets`` limits the training to those; the page covers every dataset of the ablation
    (what exists of the others is reported as it stands). ``report_only`` trains and prepares
    nothing (it still evaluates finished checkpoints that lack a cached evaluation).
    Returns the results dictionary written to ``results.json``.
    """
    from shortcutlm import training

    echo = echo or (lambda text: print(text, flush=True))
    out = Path(out)
    command = command or command_line(ablation)
    to_train = [d for d in ablation.datasets if datasets is None or d in datasets]
    runs = plan_runs(ablation, out, to_train)
    pending = {str(r.folder) for r in runs if not is_trained(r)}
    failures: dict[str, str] = {}
    if not report_only:
        _quiet_lightning()
        done_runs = len(runs) - len(pending)
        echo(f"ablation {ablation.config.name}: {len(runs)} runs over {', '.join(to_train)}; "
             f"{done_runs} already trained, {len(pending)} to train (out: {out})")
        prep_errors: dict[str, str] = {}
        for dataset in to_train:
            data_dir = out / dataset / "data"
            try:
                echo(f"prepare {dataset} -> {data_dir}")
                prepare_dataset(ablation.recipes[dataset], data_dir, progress)
            except Exception as exc:  # noqa: BLE001 - recorded, the other datasets go on
                prep_errors[dataset] = f"prepare failed: {_short_error(exc)}"
                echo(f"prepare {dataset} FAILED: {_short_error(exc)}")
        bar = Progress(runs, pending, echo)
        try:
            for index, run in enumerate(runs, 1):
                recipe = run_recipe_for(ablation.recipes[run.dataset], run)
                data_dir = out / run.dataset / "data"
                if run.dataset in prep_errors:
                    failures[str(run.folder)] = prep_errors[run.dataset]
                    bar.skipped(run)
                    continue
                try:
                    check_settings(run, recipe, data_dir)
                    if str(run.folder) in pending:
                        bar.line(index, run, "training")
                        clock = time.monotonic()
                        training.train(recipe, run.variant, data_dir, run.folder, progress=progress)
                        seconds = time.monotonic() - clock
                        if not is_trained(run):
                            raise RuntimeError(f"training stopped at step "
                                               f"{(_read_json(run.folder / 'hparams.json') or {}).get('step')} "
                                               f"of {run.steps}")
                        from shortcutlm.bench.common import machine

                        _write_json(run.folder / RUN_FILE, {"wall_s": seconds, "machine": machine(),
                                                            "trained": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                            "steps": run.steps, "seed": run.seed})
                        bar.trained(run, seconds)
                    else:
                        bar.skipped(run)
                    if cached_evaluation(run, recipe) is None:
                        bar.line(index, run, "evaluating")
                    evaluate_run(run, recipe, data_dir, _device(recipe))
                    (run.folder / ERROR_FILE).unlink(missing_ok=True)
                except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the grid goes on
                    failures[str(run.folder)] = _short_error(exc)
                    bar.skipped(run)
                    echo(f"[{index}/{len(runs)}] {run.dataset} {run.name}: FAILED — {_short_error(exc)}")
                    try:
                        _write_json(run.folder / ERROR_FILE, {"error": _short_error(exc),
                                                              "traceback": traceback.format_exc(limit=8),
                                                              "when": time.strftime("%Y-%m-%dT%H:%M:%S")})
                    except OSError:
                        pass
        except BaseException:  # Ctrl-C / SystemExit: write what is there, then stop
            echo("interrupted: writing the page from the finished runs; run the same command again to go on")
            if docs is not None:
                try:
                    write_results(collect_results(ablation, out, command, failures, diagnostics=False), Path(docs), out)
                except Exception as exc:  # noqa: BLE001 - the interruption matters more
                    echo(f"could not write the page: {_short_error(exc)}")
            raise
    results = collect_results(ablation, out, command, failures, diagnostics=docs is not None, echo=echo)
    if docs is not None:
        md, js = write_results(results, Path(docs), out)
        echo(f"wrote {md} and {js}")
    return results


# ============================================================================ collecting

def collect_results(ablation: Ablation, out: Path, command: str, failures: dict[str, str] | None = None,
                    diagnostics: bool = True, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Everything the page shows, from the run folders (finished runs only; the rest pending)."""
    from shortcutlm.bench.common import machine

    echo = echo or (lambda text: None)
    failures = dict(failures or {})
    cfg = ablation.config
    results: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z").strip(), "command": command,
        "ablation": str(ablation.path), "preset": cfg.preset, "overrides": ablation.overrides,
        "machine": machine(), "seeds": cfg.seeds, "baseline": cfg.baseline, "baseline_steps": cfg.baseline_steps,
        "variants": cfg.variants, "verdict_rule": VERDICT_RULE, "datasets": {},
    }
    for dataset in ablation.datasets:
        recipe = ablation.recipes[dataset]
        runs = plan_runs(ablation, out, [dataset])
        records = []
        for run in runs:
            error = failures.get(str(run.folder))
            if error is None and not is_trained(run):
                saved = _read_json(run.folder / ERROR_FILE)
                error = saved.get("error") if saved else None
            if not is_trained(run):
                records.append({"run": run.name, "variant": run.variant, "seed": run.seed, "multiple": run.multiple,
                                "steps": run.steps, "status": "failed" if error else "pending",
                                **({"error": error} if error else {})})
                continue
            run_recipe = run_recipe_for(recipe, run)
            try:
                check_settings(run, run_recipe, out / dataset / "data")
                row = evaluate_run(run, run_recipe, out / dataset / "data", _device(run_recipe))
                valid = validation_row(run, run_recipe, out / dataset / "data", _device(run_recipe))
                record = run_record(run, run_recipe, row, valid)
            except Exception as exc:  # noqa: BLE001
                record = {"run": run.name, "variant": run.variant, "seed": run.seed, "multiple": run.multiple,
                          "steps": run.steps, "status": "failed", "error": failures.get(str(run.folder))
                          or _short_error(exc)}
            records.append(record)
        section = summarize(dataset, recipe, records, cfg)
        section["data"] = _data_summary(out / dataset / "data")
        section["command"] = narrowed_command(command, dataset)
        section["relative_loss"] = relative_training_loss(runs, cfg)
        apply_step_timing(section, side_by_side_timing(ablation, out, dataset, echo) if diagnostics else None)
        if not cfg.diagnostics.enabled:
            section["diagnostics"] = {"status": "disabled"}
        elif diagnostics:
            section["diagnostics"] = run_diagnostics(ablation, out, dataset, echo)
        results["datasets"][dataset] = section
    return results


def _data_summary(data_dir: Path) -> dict[str, Any] | None:
    manifest = _read_json(data_dir / "manifest.json")
    if not manifest:
        return None
    tok = manifest.get("tokenizer", {})
    return {"source": manifest.get("source"), "domain": tok.get("domain"), "vocab_size": tok.get("vocab_size"),
            "n_streams": tok.get("n_streams"), "fingerprint": tok.get("fingerprint"),
            "splits": {k: {m: v for m, v in s.items() if m != "shards"} for k, s in manifest.get("splits", {}).items()}}


def summarize(dataset: str, recipe: Recipe, records: list[dict[str, Any]], cfg: AblationConfig) -> dict[str, Any]:
    """Per variant: loss mean ± std, difference from the baseline, verdict, costs, matched-loss multiple."""
    base = cfg.baseline
    main = [r for r in records if r["multiple"] == 1.0]
    done = [r for r in main if r["status"] == "done"]
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for r in done:
        by_variant.setdefault(r["variant"], {})[r["seed"]] = r
    base_losses = {s: r["loss"] for s, r in by_variant.get(base, {}).items() if r.get("loss") is not None}

    # The baseline at each multiple of the steps (seed means), for the matched-loss view.
    curve_rows = []
    for multiple in sorted(cfg.baseline_steps):
        rows = [r for r in records if r["variant"] == base and r["multiple"] == multiple and r["status"] == "done"]
        m, s, n = mean_std([r.get("loss") for r in rows])
        steps = steps_for(recipe.train.max_steps, multiple)
        curve_rows.append({"multiple": multiple, "steps": steps, "actual_multiple": steps / recipe.train.max_steps,
                           "tokens": rows[0].get("tokens_seen") if rows else None,
                           "loss_mean": m, "loss_std": s, "n": n, "of": len(cfg.seeds)})
    curve = [(c["actual_multiple"], c["loss_mean"]) for c in curve_rows if c["loss_mean"] is not None]
    complete_curve = all(c["n"] == len(cfg.seeds) for c in curve_rows)

    def median_of(rows: Iterable[dict[str, Any]], key: str) -> float | None:
        values = [r.get(key) for r in rows if r.get(key) is not None]
        return statistics.median(values) if values else None

    base_rows = list(by_variant.get(base, {}).values())
    base_step = median_of(base_rows, "sec_per_step")
    base_kv = median_of(base_rows, "kv_attention_bytes")
    base_params = median_of(base_rows, "params")
    variants = {}
    for variant in cfg.variants:
        rows = list(by_variant.get(variant, {}).values())
        failed = [r for r in main if r["variant"] == variant and r["status"] == "failed"]
        losses = {r["seed"]: r["loss"] for r in rows if r.get("loss") is not None}
        m, s, n = mean_std(list(losses.values()))
        entry: dict[str, Any] = {
            "n": n, "of": len(cfg.seeds), "loss_mean": m, "loss_std": s,
            "losses": {str(k): v for k, v in sorted(losses.items())},
            "failed": [{"run": r["run"], "error": r.get("error")} for r in failed],
            "params": median_of(rows, "params"), "sec_per_step": median_of(rows, "sec_per_step"),
            "kv_attention_bytes": median_of(rows, "kv_attention_bytes"),
            "kv_total_bytes": median_of(rows, "kv_total_bytes"),
        }
        for key in ("valid_loss", "bits_per_byte", "bits_per_second"):
            bm, bs, bn = mean_std([r.get(key) for r in rows])
            if bn:
                entry[key] = {"mean": bm, "std": bs, "n": bn}
        for key in ("per_codebook", "per_family"):
            names = sorted({name for r in rows for name in r.get(key, {})}, key=_natural)
            if names:
                entry[key] = {}
                for name in names:
                    gm, gs, gn = mean_std([r.get(key, {}).get(name) for r in rows])
                    entry[key][name] = {"mean": gm, "std": gs, "n": gn}
        entry["step_time_ratio"] = _ratio(entry["sec_per_step"], base_step)
        entry["kv_ratio"] = _ratio(entry["kv_attention_bytes"], base_kv)
        entry["params_ratio"] = _ratio(entry["params"], base_params)
        if variant != base:
            cmp_ = compare(losses, base_losses)
            entry.update({"delta": cmp_["delta"], "delta_spread": cmp_["spread"], "delta_n": cmp_["n"],
                          "delta_method": cmp_["method"], "verdict": verdict(cmp_["delta"], cmp_["spread"])})
            value, label = matched_multiple(m, curve)
            if len(cfg.baseline_steps) < 2:
                label = "not run (one baseline multiple)"
            entry["baseline_tokens_to_match"] = {"multiple": value, "label": label, "complete": complete_curve}
        else:
            entry.update({"verdict": "reference", "baseline_tokens_to_match": {"multiple": 1.0, "label": "1×",
                                                                                "complete": complete_curve}})
        variants[variant] = entry
    train = recipe.train
    block = recipe.model.get("block_size")
    return {
        "domain": (recipe.tokenizer or {}).get("domain"),
        "model": recipe.model, "train": {k: getattr(train, k) for k in (
            "max_steps", "batch_size", "accumulate", "lr", "min_lr", "warmup_steps", "weight_decay", "precision",
            "accelerator")},
        "tokens_per_run": train.max_steps * train.batch_size * train.accumulate * (block or 0),
        "evaluate": {"split": recipe.evaluate.split, "batch_size": recipe.evaluate.batch_size,
                     "max_batches": recipe.evaluate.max_batches},
        "variants": variants, "baseline_curve": curve_rows, "runs": records,
        "machines": sorted({_machine_label(r["machine"]) for r in records if r.get("machine")}),
        "trained_between": [min(dates), max(dates)] if (dates := [r["trained_at"] for r in records
                                                                 if r.get("trained_at")]) else None,
    }


def _natural(name: str) -> tuple:
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _ratio(value: float | None, ref: float | None) -> float | None:
    if value is None or not ref:
        return None
    return value / ref


def _machine_label(info: dict[str, Any]) -> str:
    if not isinstance(info, dict):
        return str(info)
    where = info.get("gpu") or f"{info.get('processor')} CPU, {info.get('threads')} threads"
    return f"{where} (torch {info.get('torch')})"


# ============================================================================ training curves

def relative_training_loss(runs: list[Run], cfg: AblationConfig) -> dict[str, Any] | None:
    """ResFormer's relative training loss: each variant's smoothed train loss minus the baseline's,
    averaged over the seeds both have finished, on the baseline's logged steps."""
    import numpy as np

    from shortcutlm.plots import read_curves, smooth

    curves: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for run in runs:
        if run.multiple != 1.0 or not is_trained(run) or not (run.folder / "metrics.csv").is_file():
            continue
        c = read_curves(run.folder / "metrics.csv").get("train/loss")
        if c is not None and len(c[0]) >= 2:
            curves.setdefault(run.variant, {})[run.seed] = (c[0], smooth(c[1]))
    base = curves.get(cfg.baseline)
    if not base:
        return None
    out: dict[str, Any] = {}
    for variant, seeds in curves.items():
        if variant == cfg.baseline:
            continue
        shared = sorted(set(seeds) & set(base))
        if not shared:
            continue
        diffs = []
        for s in shared:
            bx, by = base[s]
            vx, vy = seeds[s]
            diffs.append(np.interp(bx, vx, vy) - by)
        steps = base[shared[0]][0]
        mean = np.mean(diffs, axis=0)
        out[variant] = {"steps": steps.tolist(), "delta": mean.tolist(), "seeds": shared,
                        "final": float(mean[-1])}
    return out or None


def plot_relative_loss(rel: dict[str, Any], path: Path, title: str) -> Path:
    from shortcutlm.plots import plt, variant_colours

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = variant_colours(rel)  # each variant in its colour of every plot
    for variant, c in rel.items():
        n = len(c["seeds"])
        ax.plot(c["steps"], c["delta"], color=colours[variant], label=f"{variant} (mean of {n} seed{'s' * (n > 1)})")
    ax.axhline(0.0, color="0.3", linewidth=1, linestyle=":")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("train loss − baseline's (nats, smoothed)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ============================================================================ step time

def side_by_side_timing(ablation: Ablation, out: Path, dataset: str,
                        echo: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Each variant's train-step time at this dataset's model and batch, all timed in one process.

    The runs' own logged speed is kept too, but a run trained while the machine was busy is
    several times slower than one trained on idle cores, so the table's step-time ratios come
    from here. Cached in ``<dataset>/step_timing.json`` and measured again when the configs change.
    """
    from shortcutlm.bench.common import machine, median
    from shortcutlm.bench.model import interleaved_step_seconds
    from shortcutlm.models import GPTConfig

    cfg = ablation.config
    configs: dict[str, dict[str, Any]] = {}
    for variant in cfg.variants:
        for seed in cfg.seeds:
            saved = _read_json(out / dataset / f"{variant}-s{seed}" / "model_config.json")
            if saved:
                configs[variant] = saved
                break
    if cfg.baseline not in configs or len(configs) < 2:
        return None
    batch = ablation.recipes[dataset].train.batch_size
    info = machine()
    key = _jsonable({"configs": configs, "batch": batch, "steps": STEP_TIMING_STEPS, "warmup": STEP_TIMING_WARMUP,
                     "machine": {k: info.get(k) for k in ("processor", "threads", "torch")}})
    path = out / dataset / STEP_TIMING_FILE
    cached = _read_json(path)
    if cached and cached.get("key") == key:
        return cached["timing"]
    if echo:
        echo(f"{dataset}: timing {len(configs)} variants side by side ({STEP_TIMING_STEPS} interleaved steps each)")
    times = interleaved_step_seconds({v: GPTConfig.from_dict(c) for v, c in configs.items()}, batch,
                                     STEP_TIMING_STEPS, STEP_TIMING_WARMUP)
    seconds = {v: median(t) for v, t in times.items()}
    timing = {"method": f"forward, backward and AdamW on one fixed batch of {batch}, every variant in one process "
                        f"with steps interleaved; median of {STEP_TIMING_STEPS} steps after {STEP_TIMING_WARMUP} warm-up steps",
              "machine": info, "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": seconds,
              "all_seconds": times, "ratio": {v: seconds[v] / seconds[cfg.baseline] for v in seconds}}
    _write_json(path, {"key": key, "timing": timing})
    return timing


def apply_step_timing(section: dict[str, Any], timing: dict[str, Any] | None) -> None:
    """Put the side-by-side step times into the table's columns; keep the runs' own as ``sec_per_step_runs``."""
    section["step_timing"] = timing
    for variant, entry in section["variants"].items():
        entry["sec_per_step_runs"] = entry["sec_per_step"]
        if timing and variant in timing["seconds"]:
            entry["sec_per_step"] = timing["seconds"][variant]
            entry["step_time_ratio"] = timing["ratio"][variant]


# ============================================================================ diagnostics

def run_diagnostics(ablation: Ablation, out: Path, dataset: str,
                    echo: Callable[[str], None]) -> dict[str, Any]:
    """``diagnostics.compare_checkpoints`` on the diagnosed seed's checkpoints (cached by their weights)."""
    from shortcutlm import diagnostics as diag

    cfg = ablation.config
    wanted = [v for v in cfg.diagnostics.variants if v in cfg.variants]
    if not hasattr(diag, "compare_checkpoints"):
        return {"status": "unavailable",
                "note": "this version of shortcutlm.diagnostics has no compare_checkpoints; section skipped"}
    if cfg.baseline not in wanted or len(wanted) < 2:
        return {"status": "disabled", "note": f"`diagnostics.variants` names {wanted or 'no variant'} of this "
                                              "ablation; it needs the baseline and another"}
    folders, labels, missing = [], [], []
    for variant in wanted:
        folder = out / dataset / f"{variant}-s{cfg.diagnostics.seed}"
        steps = ablation.recipes[dataset].train.max_steps
        run = Run(dataset, variant, cfg.diagnostics.seed, 1.0, steps, folder, steps)
        if is_trained(run):
            folders.append(folder)
            labels.append(variant)
        else:
            missing.append(variant)
    if cfg.baseline not in labels or len(labels) < 2:
        return {"status": "pending", "missing": missing, "seed": cfg.diagnostics.seed}
    target = out / dataset / "diagnostics"
    key = _jsonable({"folders": [str(f) for f in folders], "labels": labels,
                     "weights": [_weights_key(f) for f in folders]})
    cache = _read_json(target / "ablation_cache.json")
    if cache and cache.get("key") == key and all(Path(p).is_file() for p in cache["value"]["plots"].values()):
        value = cache["value"]
    else:
        echo(f"diagnostics {dataset}: comparing {', '.join(labels)} (seed {cfg.diagnostics.seed})")
        try:
            got = diag.compare_checkpoints(folders, target, data_dir=out / dataset / "data", labels=labels)
        except Exception as exc:  # noqa: BLE001 - the page says so and the rest renders
            return {"status": "failed", "error": _short_error(exc), "labels": labels}
        value = _jsonable({"json": got.get("json"), "plots": got.get("plots") or {}, "results": got.get("results")})
        _write_json(target / "ablation_cache.json", {"key": key, "value": value})
    value = dict(value)
    value.update({"status": "done", "labels": labels, "missing": missing, "seed": cfg.diagnostics.seed,
                  "folder": str(target)})
    value["sentences"] = diagnostic_sentences(value.pop("results", None), labels, cfg.baseline)
    return value


def _mean(values: Any) -> float | None:
    """Mean of the finite numbers in a list (None, NaN and the like skipped); None when there are none."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)):
        return None
    found = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return statistics.fmean(found) if found else None


def _against(results: dict[str, Any], labels: list[str], baseline: str, pick: Callable[[dict[str, Any]], Any],
             higher: str, lower: str, unit: str = "") -> str | None:
    """``baseline X; a's is D higher (meaning), b's ...`` for one number per label (None when absent)."""
    base = _mean(pick(results[baseline])) if baseline in results else None
    if base is None:
        return None
    parts = []
    for label in labels:
        if label == baseline or label not in results:
            continue
        value = _mean(pick(results[label]))
        if value is None:
            continue
        diff = value - base
        if abs(diff) <= 1e-3 * max(1e-6, abs(base)):
            parts.append(f"{label} {_num(value)} (about the same)")
        else:
            parts.append(f"{label} {_num(value)} ({'+' if diff > 0 else '−'}{_num(abs(diff))}: "
                         f"{higher if diff > 0 else lower})")
    if not parts:
        return None
    return f"baseline {_num(base)}{unit}; " + "; ".join(parts)


def _get(key: str, slice_: slice | None = None) -> Callable[[dict[str, Any]], Any]:
    def pick(r: dict[str, Any]) -> Any:
        value = r.get(key)
        return value[slice_] if slice_ is not None and isinstance(value, list) else value
    return pick


def diagnostic_sentences(results: dict[str, Any] | None, labels: list[str], baseline: str) -> dict[str, str]:
    """One sentence per diagnostics plot, generated from ``compare_checkpoints``' numbers.

    Keys are the plot names of :func:`shortcutlm.diagnostics.write_plots` (``entropy``,
    ``first_token_value_norm``, ``first_token_attention``, ``hidden_norm``, ``token_similarity``,
    ``depth_weights``, ``depth_map_<label>``); a number the diagnostics lack gives no sentence.
    """
    if not results or baseline not in results:
        return {}
    r = {label: results[label] for label in labels if isinstance(results.get(label), dict)}
    out: dict[str, str] = {}
    text = _against(r, labels, baseline, _get("entropy"), "less concentrated", "more concentrated", " nats")
    if text:
        norm = _mean(r[baseline].get("entropy_normalised"))
        out["entropy"] = (f"Token-importance entropy, mean over layers (lower = attention concentrated on fewer "
                          f"tokens): {text}" + (f"; the baseline is at {norm:.2f}× the entropy of uniform causal "
                                               "attention" if norm is not None else "") + ".")
    text = _against(r, labels, baseline, _get("first_token_value_ratio"), "the first token's values stand out more",
                    "the first token's values stand out less")
    if text:
        out["first_token_value_norm"] = ("First-token value norm over the other tokens' mean, averaged over layers "
                                         f"(ResFormer's value-state drain; 1 = no drain): {text}.")
    text = _against(r, labels, baseline, _get("first_token_attention"), "more of an attention sink",
                    "less of an attention sink")
    if text:
        ref = _mean(r[baseline].get("first_token_attention_uniform_causal"))
        out["first_token_attention"] = ("Attention the first token receives, mean over layers: " + text
                                        + (f"; uniform causal attention would give {_num(ref)}" if ref is not None
                                           else "") + ".")
    text = _against(r, labels, baseline, lambda x: (x.get("hidden_norm") or [None])[-1], "larger", "smaller")
    if text:
        out["hidden_norm"] = f"Hidden-state norm at the last block's output (before the final norm): {text}."
    text = _against(r, labels, baseline, _get("token_similarity", slice(1, None)),
                    "hidden states more alike (over-smoothing)", "hidden states more distinct")
    if text:
        out["token_similarity"] = f"Token similarity (mean off-diagonal cosine), mean over the block outputs: {text}."
    for label in labels:
        sc = r.get(label, {}).get("shortcut")
        if not isinstance(sc, dict):
            continue
        names = sc.get("depth_labels") or [str(d) for d in sc.get("depths", [])]
        weights = sc.get("depth_weights")
        if isinstance(weights, list) and len(weights) == len(names) and names:
            top = max(range(len(weights)), key=lambda i: weights[i])
            shares = ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights))
            out.setdefault("depth_weights", "")
            uniform = 1 / len(weights)
            lean = (f"most on {names[top]}" if max(abs(w - uniform) for w in weights) > NEAR_UNIFORM * uniform
                    else f"all within {NEAR_UNIFORM:.0%} of uniform ({uniform:.2f}): no depth is preferred")
            out["depth_weights"] += (f"{label}'s shortcut spreads its attention over depth as {shares} (mean over "
                                     f"tokens), {lean}. ")
        depth_map = sc.get("depth_map")
        if isinstance(depth_map, list) and depth_map and isinstance(depth_map[0], list) and names:
            tops = [max(range(len(row)), key=lambda i: row[i]) for row in depth_map if row]
            counts = {names[i]: tops.count(i) for i in sorted(set(tops)) if i < len(names)}
            shares = ", ".join(f"{n} for {c / len(tops):.0%}" for n, c in
                               sorted(counts.items(), key=lambda kv: -kv[1]))
            kind = "varies with the token" if len(counts) > 1 else "is the same for every token"
            out[f"depth_map_{label}"] = (f"On the first window, the depth that {label}'s shortcut attends to most "
                                         f"{kind}: "
                                         f"{shares} of the {len(tops)} tokens.")
    if "depth_weights" in out:
        out["depth_weights"] = out["depth_weights"].strip()
    return out


def _num(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 1e-3:
        return f"{value:.3g}"
    return f"{value:.3f}" if magnitude < 10 else f"{value:.2f}"


# ============================================================================ the page

VERDICT_RULE = ("better / worse: the mean difference from the baseline is larger than its spread "
                "(the sample std of the per-seed differences; seeds pair runs that saw the same batches); "
                "within spread otherwise. Lower loss is better.")


def command_line(ablation: Ablation, datasets: list[str] | None = None, out: str | None = None,
                 docs: str | None = None) -> str:
    """The ``shortcutlm ablate`` command that reproduces (or continues) this ablation."""
    parts = ["shortcutlm", "ablate", _display_path(ablation.path)]
    if ablation.config.preset:
        parts += ["--preset", ablation.config.preset]
    if datasets:
        parts += ["--datasets", ",".join(datasets)]
    for item in ablation.overrides:
        parts += ["--set", item]
    if out:
        parts += ["--out", out]
    if docs:
        parts += ["--docs", docs]
    return " ".join(shlex.quote(p) for p in parts)


def narrowed_command(command: str, dataset: str) -> str:
    """``command`` limited to one dataset (``--datasets``), i.e. what reproduces that dataset's tables."""
    try:
        parts = shlex.split(command)
    except ValueError:
        return command
    kept: list[str] = []
    skip = False
    for part in parts:
        if skip:
            skip = False
            continue
        if part == "--datasets":
            skip = True
            continue
        if part.startswith("--datasets="):
            continue
        kept.append(part)
    return " ".join(shlex.quote(p) for p in kept + ["--datasets", dataset])


def _display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_pm(mean: float | None, std: float | None, digits: int = 4, signed: bool = False) -> str:
    if mean is None:
        return "–"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def _params(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.3f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _ratio_text(ratio: float | None, higher: str, lower: str, tolerance: float = 0.05) -> str:
    if ratio is None:
        return ""
    word = higher if ratio > 1 + tolerance else lower if ratio < 1 - tolerance else ""
    return f" ({ratio:.2f}×{', ' + word if word else ''})"


def _bold_verdict(text: str) -> str:
    word, _, rest = text.partition(" ")
    return f"**{word}**" + (f" {rest}" if rest else "") if word in ("better", "worse") else text


def _count(entry: dict[str, Any]) -> str:
    return f"n={entry['n']}" if entry["n"] == entry["of"] else f"n={entry['n']}/{entry['of']}"


def _domain_cell(entry: dict[str, Any], domain: str | None) -> str:
    if domain == "text" and "bits_per_byte" in entry:
        b = entry["bits_per_byte"]
        return _fmt_pm(b["mean"], b["std"], 3)
    if domain == "acoustic" and "per_codebook" in entry:
        return " · ".join(f"{name.replace('codebook_', 'cb')} {_fmt(s['mean'], 3)}"
                          for name, s in entry["per_codebook"].items())
    if domain == "midi" and "bits_per_second" in entry:
        b = entry["bits_per_second"]
        return _fmt_pm(b["mean"], b["std"], 1)
    return "–"


NOISY_IQR = 0.3

DOMAIN_COLUMN = {"text": "bits/byte", "acoustic": "loss per codebook (nats)", "midi": "bits/second"}


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align or "---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def render_dataset(name: str, section: dict[str, Any], cfg_baseline: str, docs: Path, out: Path) -> list[str]:
    variants = section["variants"]
    domain = section["domain"]
    base = variants.get(cfg_baseline, {})
    model = section["model"]
    train = section["train"]
    lines = [f"## {name}", ""]
    data = section.get("data")
    if data:
        splits = data["splits"]
        counts = ", ".join(f"{k} {v.get('tokens', 0):,} tokens / {v.get('documents', 0):,} docs"
                           for k, v in splits.items())
        lines += [f"Data: source `{(data.get('source') or {}).get('name')}`, {domain} tokens "
                  f"(vocabulary {data.get('vocab_size')}, {data.get('n_streams')} stream(s)); {counts}.", ""]
    lines += [f"Model: {model.get('n_layer')} layers, width {model.get('n_embd')}, {model.get('n_head')} heads, "
              f"context {model.get('block_size')}; {train['max_steps']} steps × batch {train['batch_size']}"
              f"{' × ' + str(train['accumulate']) if train['accumulate'] > 1 else ''} = "
              f"{section['tokens_per_run']:,} tokens per run; lr {train['lr']:g} → {train['min_lr']:g}, "
              f"{train['precision']}. Loss: nats per token on the `{section['evaluate']['split']}` split"
              + (f" (first {section['evaluate']['max_batches']} batches)" if section['evaluate']['max_batches'] else
                 " (one exact pass)") + "; the verdicts and the matched-loss view use it"
              + (", and `valid loss` is the same measure on the `valid` split" if any(
                  "valid_loss" in e for e in variants.values()) else "") + ".", ""]
    if section.get("machines"):
        when = section.get("trained_between")
        lines += [f"Trained on: {'; '.join(section['machines'])}"
                  + (f", runs finished {when[0].replace('T', ' ')} – {when[1].replace('T', ' ')}" if when else "")
                  + ".", ""]
    lines += [f"Produced by: `{section['command']}`", ""]
    split = section["evaluate"]["split"]
    with_valid = any("valid_loss" in e for e in variants.values())
    header = ["variant", "params", f"{split} loss", "Δ vs baseline", "verdict"] + (["valid loss"] if with_valid else []) \
        + [DOMAIN_COLUMN.get(domain, "domain metric"), "step time", "KV cache", "baseline tokens to match"]
    rows = []
    for variant, e in variants.items():
        if e["n"] == 0:
            status = "failed" if e["failed"] else "pending"
            rows.append([variant, _params(e["params"]), f"{status} ({_count(e)})"] + ["–"] * (len(header) - 3))
            continue
        loss = f"{_fmt_pm(e['loss_mean'], e['loss_std'])} ({_count(e)})"
        if variant == cfg_baseline:
            delta, verdict_text = "reference", "—"
        else:
            delta = _fmt_pm(e.get("delta"), e.get("delta_spread"), 4, signed=True)
            if e.get("delta_method") == "unpaired":
                delta += " (unpaired)"
            verdict_text = _bold_verdict(e["verdict"])
        params = _params(e["params"]) + (_ratio_text(e["params_ratio"], "more", "fewer", 0.0005)
                                         if variant != cfg_baseline else "")
        step = (f"{e['sec_per_step'] * 1000:.0f} ms" if e["sec_per_step"] is not None else "–")
        if variant != cfg_baseline:
            step += _ratio_text(e["step_time_ratio"], "slower", "faster")
        kv = _bytes(e["kv_attention_bytes"])
        if variant != cfg_baseline:
            kv += _ratio_text(e["kv_ratio"], "larger", "smaller", 0.001)
        if e.get("kv_total_bytes") and e.get("kv_attention_bytes") and e["kv_total_bytes"] > e["kv_attention_bytes"]:
            kv += f" + {_bytes(e['kv_total_bytes'] - e['kv_attention_bytes'])} shortcut features"
        match = e["baseline_tokens_to_match"]
        match_text = match["label"] + ("" if match["complete"] or match["label"] == "pending" else " (partial)")
        valid_cell = [_fmt_pm(e["valid_loss"]["mean"], e["valid_loss"]["std"]) if "valid_loss" in e else "–"]
        rows.append([variant, params, loss, delta, verdict_text] + (valid_cell if with_valid else [])
                    + [_domain_cell(e, domain), step, kv, match_text])
    lines += _table(header, rows)
    lines += [""]
    notes = []
    failed = [f for e in variants.values() for f in e["failed"]]
    extra_failed = [r for r in section["runs"] if r["multiple"] != 1.0 and r["status"] == "failed"]
    for f in failed + [{"run": r["run"], "error": r.get("error")} for r in extra_failed]:
        notes.append(f"failed: `{f['run']}` — {f['error']}")
    pending = [r["run"] for r in section["runs"] if r["status"] == "pending"]
    if pending:
        notes.append(f"pending ({len(pending)} of {len(section['runs'])} runs): "
                     + ", ".join(f"`{p}`" for p in pending[:12]) + (" …" if len(pending) > 12 else "")
                     + ". Run the command again to train them.")
    losers = [v for v, e in variants.items() if e.get("verdict") == "worse"]
    if losers:
        notes.append("worse than the baseline here: " + ", ".join(f"**{v}**" for v in losers) + ".")
    timing = section.get("step_timing")
    noisy = [r["run"] for r in section["runs"] if (r.get("step_time_iqr") or 0) > NOISY_IQR]
    if timing:
        runs_speed = [e["sec_per_step_runs"] for e in variants.values() if e.get("sec_per_step_runs")]
        spread = (f"; the runs' own logged speed varied {max(runs_speed) / min(runs_speed):.1f}× between variants "
                  "as the machine's load changed") if len(runs_speed) > 1 else ""
        notes.append(f"step time: {timing['method']}, measured {timing['measured'].replace('T', ' ')} "
                     f"(`results.json` keeps each run's logged speed as `sec_per_step_runs`{spread}).")
    elif noisy:
        notes.append(f"step times are noisy: in {len(noisy)} of {len(section['runs'])} runs the logged tokens/s vary "
                     f"by more than {NOISY_IQR:.0%} (interquartile range over median), as on a machine busy with "
                     "other work; read the step-time ratios with care.")
    slower = [v for v, e in variants.items() if (e.get("step_time_ratio") or 1) > 1.05 and v != cfg_baseline]
    if slower:
        notes.append("slower per step than the baseline: " + ", ".join(
            f"{v} ({variants[v]['step_time_ratio']:.2f}×)" for v in slower) + ".")
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])

    curve = section["baseline_curve"]
    lines += [f"### {name}: the baseline at more steps (matched loss)", "",
              f"Produced by: `{section['command']}` (the `{cfg_baseline}-x…` runs).", ""]
    rows = [[f"{c['actual_multiple']:.4g}×", str(c["steps"]), f"{c['tokens']:,}" if c.get("tokens") else "–",
             f"{_fmt_pm(c['loss_mean'], c['loss_std'])} (n={c['n']}/{c['of']})" if c["n"]
             else f"pending (n=0/{c['of']})"]
            for c in curve]
    lines += _table(["steps (× the variants')", "steps", "tokens", "test loss"], rows)
    lines += ["", "\"Baseline tokens to match\" interpolates the baseline's seed-mean loss linearly between these "
              "step multiples: the tokens the baseline needs to reach a variant's mean loss, as a multiple of the "
              "tokens every variant was trained on (`< 1×`: the variant is worse than the baseline at equal tokens; "
              f"`> {max(c['actual_multiple'] for c in curve):.4g}×`: better than the baseline gets here).", ""]
    if base.get("n", 0) and not all(c["n"] for c in curve):
        lines += ["- the matched-loss view is partial until every baseline multiple has finished.", ""]

    rel = section.get("relative_loss")
    assets = docs / "results" / name
    if rel:
        png = plot_relative_loss(rel, assets / "relative_train_loss.png",
                                 f"{name}: training loss relative to the baseline")
        lines += [f"### {name}: training loss relative to the baseline", "",
                  f"Produced by: `{section['command']}` (from each run's `metrics.csv`).", "",
                  f"![relative training loss]({png.relative_to(docs).as_posix()})", ""]
        finals = sorted(rel.items(), key=lambda kv: kv[1]["final"])
        lines += ["At the last logged step the smoothed training loss is "
                  + "; ".join(f"{v} {abs(c['final']):.3f} {'below' if c['final'] < 0 else 'above'} the baseline's"
                              for v, c in finals) + " (seed means, paired by seed).", ""]
    lines += render_diagnostics(name, section.get("diagnostics"), section["command"], docs, assets)
    return lines


def render_diagnostics(name: str, diag: dict[str, Any] | None, command: str, docs: Path,
                       assets: Path) -> list[str]:
    lines = [f"### {name}: attention concentration and shortcut depth (diagnostics)", ""]
    if diag is None:
        return lines + ["Not computed in this sitting (interrupted); run the command again.", ""]
    status = diag.get("status")
    if status == "disabled":
        note = diag.get("note") or "disabled in the ablation file (`diagnostics.enabled: false`)"
        return lines + [f"Not run: {note}.", ""]
    if status == "unavailable":
        return lines + [f"Skipped: {diag['note']}.", ""]
    if status == "pending":
        return lines + [f"Pending: needs the seed-{diag['seed']} checkpoints of the baseline and at least one other "
                        f"variant (missing: {', '.join(diag.get('missing', [])) or '–'}).", ""]
    if status == "failed":
        return lines + [f"Failed: {diag['error']}", ""]
    lines += [f"Produced by: `{command}` — `shortcutlm.diagnostics.compare_checkpoints` on the seed-{diag['seed']} "
              f"checkpoints of {', '.join(diag['labels'])}"
              + (f" (not yet trained: {', '.join(diag['missing'])})" if diag.get("missing") else "") + ".", ""]
    sentences = dict(diag.get("sentences") or {})
    for plot_name, src in (diag.get("plots") or {}).items():
        src = Path(src)
        if not src.is_file():
            continue
        dest = assets / f"diag_{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        lines += [f"![{plot_name}]({dest.relative_to(docs).as_posix()})", ""]
        if plot_name in sentences:
            lines += [sentences.pop(plot_name), ""]
    lines += [text for text in sentences.values()] + ([""] if sentences else [])
    if diag.get("json"):
        lines += [f"Numbers: `{_display_path(Path(diag['json']))}`.", ""]
    return lines


def render_markdown(results: dict[str, Any], docs: Path, out: Path) -> str:
    machine_info = results["machine"]
    lines = ["# Ablation results", "",
             "Every number and figure on this page was produced by `shortcutlm ablate`; nothing is typed in by hand. "
             "Re-running the command keeps finished runs and cached evaluations, trains what is missing and "
             "rewrites this page.", "",
             f"- command: `{results['command']}`",
             f"- written: {results['created']} on {_machine_label(machine_info)}",
             f"- seeds: {', '.join(str(s) for s in results['seeds'])} (the seed sets the model's initialisation "
             "and the order of the training batches; seed s of every variant sees the same batches)",
             "- variants: " + "; ".join(f"`{k}` {_variant_text(v)}" for k, v in results["variants"].items()),
             f"- verdict: {results['verdict_rule']}",
             "- step time: every variant's forward, backward and AdamW step at the dataset's model and batch, "
             "timed side by side in one process after training (steps interleaved, median), with its ratio to "
             "the baseline's; where that timing is missing, the runs' logged tokens/s (median over seeds). "
             "KV cache: the attention keys and values "
             "of a batch-1 fp32 cache at full context, measured from the cache tensors, with the ratio to the "
             "baseline's (the `full` shortcut also caches its per-depth features, listed beside it).",
             f"- raw numbers: `results.json` beside this page; runs under `{_display_path(out)}`.", ""]
    lines += render_summary(results)
    for name, section in results["datasets"].items():
        lines += render_dataset(name, section, results["baseline"], docs, out)
    return "\n".join(lines).rstrip() + "\n"


def render_summary(results: dict[str, Any]) -> list[str]:
    """Variants × datasets: the difference from the baseline, its verdict and the matched-loss multiple."""
    datasets = results["datasets"]
    if not datasets:
        return []
    base = results["baseline"]
    lines = ["## Summary", "",
             f"Test loss of each variant minus the baseline's (nats per token, mean ± spread over seeds; negative is "
             f"better), the verdict, and the tokens the baseline needs to match it. Produced by: "
             f"`{results['command']}`; the sections below give every number behind it.", ""]
    rows = []
    for variant in results["variants"]:
        if variant == base:
            continue
        row = [variant]
        for section in datasets.values():
            e = section["variants"].get(variant)
            if not e or e["n"] == 0:
                row.append("failed" if e and e["failed"] else "pending")
                continue
            match = e["baseline_tokens_to_match"]["label"]
            partial = "" if e["n"] == e["of"] else f" (n={e['n']}/{e['of']})"
            row.append(f"{_fmt_pm(e.get('delta'), e.get('delta_spread'), 3, signed=True)} {_bold_verdict(e['verdict'])}"
                       + (f" · {match} tokens" if match.endswith("×") else "") + partial)
        rows.append(row)
    return lines + _table(["variant"] + list(datasets), rows) + [""]


def _variant_text(fields: dict[str, Any]) -> str:
    if not fields:
        return "(plain GPT)"
    return "(" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"


def write_results(results: dict[str, Any], docs: Path, out: Path) -> tuple[Path, Path]:
    """``<docs>/results.md`` (plots copied under ``<docs>/results/``) and ``<docs>/results.json``."""
    docs.mkdir(parents=True, exist_ok=True)
    text = render_markdown(results, docs, out)
    md, js = docs / "results.md", docs / "results.json"
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(md)
    _write_json(js, results)
    return md, js


# ============================================================================ CLI

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", default=DEFAULT_RECIPE, help=f"ablation YAML (default {DEFAULT_RECIPE})")
    parser.add_argument("--preset", help="a preset of the ablation, e.g. gpu")
    parser.add_argument("--datasets", help="comma-separated datasets to train (default: all); the page covers all")
    parser.add_argument("--out", help="run folder (default runs/ablation, or runs/ablation-<preset>)")
    parser.add_argument("--docs", help="folder for results.md / results.json (default docs, or docs/<preset>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an ablation value, e.g. --set train.max_steps=20 or --set seeds=[0] "
                             "(repeatable)")
    parser.add_argument("--plan", action="store_true",
                        help="list the runs, what is finished and what is left; train nothing")
    parser.add_argument("--report-only", action="store_true", help="train nothing; rewrite the page from finished runs")
    parser.add_argument("--no-progress", action="store_true", help="no per-run progress bars")


def run(args: argparse.Namespace) -> int:
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    try:
        ablation = load_ablation(args.recipe, args.preset, args.overrides)
        if datasets:
            unknown = [d for d in datasets if d not in ablation.recipes]
            if unknown:
                raise ConfigError(f"no dataset(s) {unknown}; datasets: {ablation.datasets}")
    except ConfigError as err:
        print(f"shortcutlm ablate: error: {err}", file=sys.stderr)
        return 2
    suffix = f"-{args.preset}" if args.preset else ""
    out = Path(args.out or f"runs/ablation{suffix}")
    docs = Path(args.docs or ("docs" if not args.preset else f"docs/{args.preset}"))
    if args.plan:
        print_plan(ablation, out, datasets)
        return 0
    command = command_line(ablation, out=args.out, docs=args.docs)
    results = run_ablation(ablation, out, docs, datasets=datasets, progress=not args.no_progress,
                           report_only=args.report_only, command=command)
    failed = sum(1 for s in results["datasets"].values() for r in s["runs"] if r["status"] == "failed")
    return 1 if failed else 0


def print_plan(ablation: Ablation, out: Path, datasets: list[str] | None = None) -> None:
    runs = plan_runs(ablation, out, datasets or ablation.datasets)
    done = [r for r in runs if is_trained(r)]
    for r in runs:
        state = "done" if r in done else ("failed" if (r.folder / ERROR_FILE).is_file() else "to train")
        print(f"{r.dataset:16s} {r.name:36s} {r.steps:6d} steps  {state}")
    total = sum(r.steps for r in runs)
    left = sum(r.steps for r in runs if r not in done)
    print(f"{len(runs)} runs ({len(done)} done); {left:,} of {total:,} optimiser steps left")
    timed = [(r.steps, (_read_json(r.folder / RUN_FILE) or {}).get("wall_s")) for r in done]
    timed = [(s, w) for s, w in timed if w]
    if timed and left:
        rate = sum(w for _, w in timed) / sum(s for s, _ in timed)
        print(f"estimated time left at the pace of the finished runs: {_clock(left * rate)}")
