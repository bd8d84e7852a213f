"""Collecting the results: every run folder of the grid read into a record (finished runs evaluated,
the rest pending or failed), then one section per dataset with its summary, training curves,
step timing and diagnostics. What ``results.json`` holds and the page renders."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from collections.abc import Callable

from shortcutlm.ablation.commands import narrowed_command
from shortcutlm.ablation.config import Ablation
from shortcutlm.ablation.curves import relative_training_loss, validation_curves
from shortcutlm.ablation.gap import validation_gap
from shortcutlm.ablation.depth import depth_series
from shortcutlm.ablation.diagnose import run_diagnostics
from shortcutlm.ablation.records import run_record
from shortcutlm.ablation.runs import (check_settings, evaluate_run, is_trained, plan_runs, run_recipe_for,
                                      shard_folder, short_error, validation_row)
from shortcutlm.ablation.stats import VERDICT_RULE
from shortcutlm.ablation.summary import summarize
from shortcutlm.ablation.timing import apply_step_timing, side_by_side_timing
from shortcutlm.artifacts.ablation import read_run_error
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.core.devices import accelerator_device
from shortcutlm.run.recipe import Recipe
from shortcutlm.tokenizers.base import read_config


def device(recipe: Recipe) -> str:
    """Where the ablation evaluates: where the recipe trains."""
    return accelerator_device(recipe.train.accelerator)


def collect_results(ablation: Ablation, out: Path, command: str, failures: dict[str, str] | None = None,
                    diagnostics: bool = True, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Everything the page shows, from the run folders (finished runs only; the rest pending)."""
    from shortcutlm.bench.common import machine

    echo = echo or (lambda text: None)
    failures = dict(failures or {})
    cfg = ablation.config
    results: dict[str, Any] = {
        "name": cfg.name, "description": cfg.description,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z").strip(), "command": command,
        "ablation": str(ablation.path), "preset": cfg.preset, "overrides": ablation.overrides,
        "machine": machine(), "seeds": cfg.seeds, "baseline": cfg.baseline, "baseline_steps": cfg.baseline_steps,
        "variants": cfg.variants, "verdict_rule": VERDICT_RULE, "datasets": {},
        "claims": [asdict(f) for f in cfg.findings], "see_also": list(cfg.see_also),
    }
    for dataset in ablation.datasets:
        recipe = ablation.recipes[dataset]
        data_dir = shard_folder(out, dataset)
        runs = plan_runs(ablation, out, [dataset])
        records = []
        for run in runs:
            error = failures.get(str(run.folder))
            if error is None and not is_trained(run):
                error = read_run_error(run.folder)
            if not is_trained(run):
                records.append({"run": run.name, "variant": run.variant, "seed": run.seed, "multiple": run.multiple,
                                "steps": run.steps, "status": "failed" if error else "pending",
                                **({"error": error} if error else {})})
                continue
            run_recipe = run_recipe_for(recipe, run)
            try:
                check_settings(run, run_recipe, data_dir)
                row = evaluate_run(run, run_recipe, data_dir, device(run_recipe))
                valid = validation_row(run, run_recipe, data_dir, device(run_recipe))
                record = run_record(run, run_recipe, row, valid)
            except Exception as exc:  # noqa: BLE001
                record = {"run": run.name, "variant": run.variant, "seed": run.seed, "multiple": run.multiple,
                          "steps": run.steps, "status": "failed", "error": failures.get(str(run.folder))
                          or short_error(exc)}
            records.append(record)
        section = summarize(dataset, recipe, records, cfg)
        section["data"] = _data_summary(data_dir)
        section["command"] = narrowed_command(command, dataset)
        section["relative_loss"] = relative_training_loss(runs, cfg)
        section["validation_curves"] = validation_curves(runs, cfg)
        if cfg.gap_over_training:
            section["validation_gap"] = validation_gap(runs, cfg)
        by_depth = depth_series(cfg.variants, cfg.baseline, section["model"], section["variants"])
        if by_depth is not None:
            section["by_depth"] = by_depth
        apply_step_timing(section, side_by_side_timing(ablation, out, dataset, echo) if diagnostics else None)
        if not cfg.diagnostics.enabled:
            section["diagnostics"] = {"status": "disabled"}
        elif diagnostics:
            section["diagnostics"] = run_diagnostics(ablation, out, dataset, echo)
        results["datasets"][dataset] = section
    return results


def _data_summary(data_dir: Path) -> dict[str, Any] | None:
    manifest = ShardManifest.read_or_none(data_dir)
    if manifest is None:
        return None
    tok = manifest.tokenizer
    summary = {"source": manifest.raw.get("source"), "domain": tok.domain, "vocab_size": tok.vocab_size,
               "n_streams": tok.n_streams, "fingerprint": tok.fingerprint, "splits": manifest.split_sizes()}
    try:  # what made the codes (acoustic tokenizers name their codec), so the page can say which
        codec = read_config(manifest.tokenizer_dir).get("codec")
    except (OSError, ValueError):
        codec = None
    if codec:
        summary["codec"] = codec
    return summary
