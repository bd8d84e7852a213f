"""The runs of the grid: planning them, where each lives, and what is cached in its folder.

Layout under ``--out``::

    <dataset>/data/                       shards shared by every run of the dataset
    <dataset>/<variant>-s<seed>/          checkpoint folder (``shortcutlm train``'s)
    <dataset>/<baseline>-x1.25-s<seed>/   the baseline at 1.25x the steps
    <run>/eval.json                       cached evaluation (refreshed when the weights change)
    <run>/eval_<split>.json               the same on another split (``valid``)
    <run>/ablation.json                   wall time and machine of the sitting that trained it
    <run>/error.json                      why the run failed (removed once it succeeds)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from shortcutlm.ablation.config import Ablation
from shortcutlm.artifacts.ablation import (ERROR_FILE, EVAL_FILE, RUN_FILE, evaluation_cache_path, read_cache,
                                           write_cache)
from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.run.recipe import Recipe

__all__ = ["EVAL_FILE", "RUN_FILE", "ERROR_FILE", "EVAL_VERSION", "Run", "shard_folder", "run_folder", "steps_for",
           "plan_runs", "run_recipe_for", "is_trained", "short_error", "check_settings", "weights_key",
           "evaluation_key", "cached_evaluation", "evaluate_run", "evaluate_rows", "validation_row"]

EVAL_VERSION = 1


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
    train: dict[str, Any] = field(default_factory=dict)
    """The variant's own training settings over the dataset's (``variants.<name>.train``)."""

    @property
    def name(self) -> str:
        return self.folder.name


def shard_folder(out: Path, dataset: str) -> Path:
    """The shard folder every run of ``dataset`` trains and is evaluated on."""
    return out / dataset / "data"


def run_folder(out: Path, dataset: str, variant: str, seed: int, multiple: float = 1.0) -> Path:
    name = f"{variant}-s{seed}" if multiple == 1.0 else f"{variant}-x{multiple:g}-s{seed}"
    return out / dataset / name


def steps_for(max_steps: int, multiple: float) -> int:
    return max(1, int(math.floor(max_steps * multiple + 0.5)))


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
                                run_folder(out, dataset, variant, seed), base_steps, cfg.train_overrides(variant)))
            for multiple in sorted(cfg.baseline_steps):
                if multiple == 1.0:
                    continue
                steps = steps_for(base_steps, multiple)
                runs.append(Run(dataset, cfg.baseline, seed, multiple, steps,
                                run_folder(out, dataset, cfg.baseline, seed, multiple), base_steps,
                                cfg.train_overrides(cfg.baseline)))
    return runs


def run_recipe_for(recipe: Recipe, run: Run) -> Recipe:
    """The dataset's recipe with this run's seed and step count (and its variant's own training settings)."""
    return replace(recipe, train=replace(recipe.train, **run.train, seed=run.seed, max_steps=run.steps))


def is_trained(run: Run) -> bool:
    """Training finished all of the run's steps and left its weights."""
    folder = CheckpointFolder(run.folder)
    return folder.is_finished(run.steps) and folder.has_weights


def short_error(exc: BaseException) -> str:
    """One line (at most 600 characters) saying why a run failed, for ``error.json`` and the page."""
    text = f"{type(exc).__name__}: {exc}"
    if "holds a run with other settings" in text:  # training's refusal; ablate has no --fresh
        text = (text.split("; use another output folder")[0] + " — the ablation's settings changed since this run "
                "was trained: use another --out, or delete that folder to retrain it")
    return text if len(text) <= 600 else text[:597] + "..."


def check_settings(run: Run, recipe: Recipe, data_dir: Path) -> None:
    """Raise (training's ValueError) when the run's checkpoint was trained with other model or training settings."""
    from shortcutlm.run.training import check_same_run

    manifest = ShardManifest.read_or_none(data_dir)
    if manifest is None or not CheckpointFolder(run.folder).has_model_config:
        return
    tok = manifest.tokenizer
    config = recipe.model_config(run.variant, tok.vocab_size, tok.n_streams)
    check_same_run(run.folder, config.to_dict(), recipe.train)


# ------------------------------------------------------------------------------------ evaluation cache

def weights_key(folder: Path) -> dict[str, Any]:
    """What identifies the checkpoint's weights: a cache made under another key is stale."""
    return CheckpointFolder(folder).weights_stamp()


def evaluation_key(folder: Path, recipe: Recipe, split: str | None = None) -> dict[str, Any]:
    e = recipe.evaluate
    return {"version": EVAL_VERSION, "weights": weights_key(folder), "split": split or e.split,
            "batch_size": e.batch_size, "max_batches": e.max_batches}


def _evaluation_file(run: Run, recipe: Recipe, split: str | None) -> Path:
    return evaluation_cache_path(run.folder, split, recipe.evaluate.split)


def cached_evaluation(run: Run, recipe: Recipe, split: str | None = None) -> dict[str, Any] | None:
    return read_cache(_evaluation_file(run, recipe, split), evaluation_key(run.folder, recipe, split), "row")


def evaluate_run(run: Run, recipe: Recipe, data_dir: Path, device: str, split: str | None = None) -> dict[str, Any]:
    """The run's evaluation row on ``split`` (default the recipe's), cached while its key
    (weights, split, batches) still holds."""
    row = cached_evaluation(run, recipe, split)
    if row is not None:
        return row
    from shortcutlm.run.evaluation import evaluate_checkpoints

    e = recipe.evaluate
    results = evaluate_checkpoints([run.folder], data_dir, split=split or e.split, batch_size=e.batch_size,
                                   max_batches=e.max_batches, device=device, progress=False)
    row = results.checkpoints[0].to_dict()  # the ablation's cache and page keep the row as written
    write_cache(_evaluation_file(run, recipe, split), evaluation_key(run.folder, recipe, split), "row", row)
    return row


def evaluate_rows(run: Run, recipe: Recipe, data_dir: Path, device: str) -> list[dict[str, Any]]:
    """Every evaluation row of the run on the recipe's split: one per domain for a joint checkpoint
    (each on its own test split), cached like :func:`evaluate_run`'s row (field ``rows``)."""
    path, key = _evaluation_file(run, recipe, None), evaluation_key(run.folder, recipe)
    rows = read_cache(path, key, "rows")
    if rows is not None:
        return rows
    from shortcutlm.run.evaluation import evaluate_checkpoints

    e = recipe.evaluate
    results = evaluate_checkpoints([run.folder], data_dir, split=e.split, batch_size=e.batch_size,
                                   max_batches=e.max_batches, device=device, progress=False)
    rows = [record.to_dict() for record in results.checkpoints]
    write_cache(path, key, "rows", rows)
    return rows


def validation_row(run: Run, recipe: Recipe, data_dir: Path, device: str) -> dict[str, Any] | None:
    """The loss on the ``valid`` split beside the recipe's own, when the data has one."""
    manifest = ShardManifest.read_or_none(data_dir)
    if recipe.evaluate.split == "valid" or manifest is None or not manifest.has_split("valid"):
        return None
    return evaluate_run(run, recipe, data_dir, device, split="valid")

