"""What the page shows of one finished run: its evaluation, parameters, tokens, speed and KV cache.

The speed is read from the run's own logged curve (the table prefers the side-by-side timing
of :mod:`shortcutlm.ablation.timing`, which a busy machine disturbs less); the KV cache is
measured from the cache tensors of a model built from the run's config.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from shortcutlm.ablation.runs import Run
from shortcutlm.artifacts.ablation import read_run_record
from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.artifacts.hparams import TrainingRecord
from shortcutlm.run.recipe import Recipe


def _logged_rates(folder: Path) -> list[float] | None:
    """The run's logged ``train/tokens_per_s`` values (None before it logged any curve)."""
    files = CheckpointFolder(folder)
    if not files.has_metrics:
        return None
    return [float(r["train/tokens_per_s"]) for r in files.metrics_rows() if r.get("train/tokens_per_s")]


def median_step_seconds(folder: Path) -> float | None:
    """Seconds per optimiser step: tokens per step over the median logged ``train/tokens_per_s``."""
    hparams = CheckpointFolder(folder).hparams_or_none()
    rates = _logged_rates(folder)
    if rates is None or hparams is None or not hparams.step or hparams.tokens_seen is None:
        return None
    rates = [r for r in rates if r > 0 and math.isfinite(r)]
    if not rates:
        return None
    tokens_per_step = hparams.tokens_seen / hparams.step
    return tokens_per_step / statistics.median(rates)


def step_time_spread(folder: Path) -> float | None:
    """Interquartile range of the logged tokens/s over their median: large on a busy, shared machine."""
    rates = sorted(_logged_rates(folder) or [])
    if len(rates) < 4:
        return None
    q1, _, q3 = statistics.quantiles(rates, n=4)
    return (q3 - q1) / statistics.median(rates)


_KV_CACHE: dict[str, tuple[int, int]] = {}


def kv_cache_bytes(folder: Path) -> tuple[int, int] | None:
    """``(attention K/V bytes, all cached bytes)`` of a batch-1 fp32 cache at full context, measured
    from the cache tensors of a model built from the checkpoint's config."""
    config = CheckpointFolder(folder).model_config_or_none()
    if config is None:
        return None
    text = json.dumps(config, sort_keys=True)
    if text not in _KV_CACHE:
        import torch

        from shortcutlm.models import GPT, GPTConfig

        model = GPT(GPTConfig.from_dict(config))
        cache = model.new_cache(1, device="cpu", dtype=torch.float32)
        _KV_CACHE[text] = (int(cache.attention_nbytes()), int(cache.nbytes()))
        del model, cache
    return _KV_CACHE[text]


def run_record(run: Run, recipe: Recipe, row: dict[str, Any] | None,
               valid: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the page shows of one run (also what ``results.json`` lists)."""
    hparams = CheckpointFolder(run.folder).hparams_or_none() or TrainingRecord()
    info = read_run_record(run.folder)
    record: dict[str, Any] = {
        "run": run.name, "variant": run.variant, "seed": run.seed, "multiple": run.multiple, "steps": run.steps,
        "actual_multiple": run.steps / run.base_steps, "folder": str(run.folder), "status": "done",
        "params": hparams.parameters, "tokens_seen": hparams.tokens_seen,
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
