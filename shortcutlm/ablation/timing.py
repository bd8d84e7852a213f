"""Side-by-side step timing: every variant's train step at one dataset's model and batch, timed in
one process with the steps interleaved, so the table's speed ratios do not depend on how busy the
machine was while each run trained. Cached in ``<out>/<dataset>/step_timing.json``."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

from shortcutlm.ablation.config import Ablation
from shortcutlm.ablation.runs import run_folder
from shortcutlm.artifacts.ablation import STEP_TIMING_FILE, read_cache, step_timing_path, write_cache
from shortcutlm.artifacts.checkpoint import CheckpointFolder

__all__ = ["STEP_TIMING_FILE", "STEP_TIMING_STEPS", "STEP_TIMING_WARMUP", "side_by_side_timing", "apply_step_timing"]

STEP_TIMING_STEPS = 20
STEP_TIMING_WARMUP = 2


def side_by_side_timing(ablation: Ablation, out: Path, dataset: str,
                        echo: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Each variant's train-step time at this dataset's model and batch, all timed in one process.

    The runs' own logged speed is kept too, but a run trained while the machine was busy is
    several times slower than one trained on idle cores, so the table's step-time ratios come
    from here. Cached in ``<dataset>/step_timing.json`` and measured again when the configs change.
    """
    import torch

    from shortcutlm.bench.common import machine, median
    from shortcutlm.bench.model import interleaved_step_seconds
    from shortcutlm.models import GPTConfig
    from shortcutlm.core.peak import precision_dtype

    cfg = ablation.config
    configs: dict[str, dict[str, Any]] = {}
    for variant in cfg.variants:
        for seed in cfg.seeds:
            saved = CheckpointFolder(run_folder(out, dataset, variant, seed)).model_config_or_none()
            if saved:
                configs[variant] = saved
                break
    if cfg.baseline not in configs or len(configs) < 2:
        return None
    batch = ablation.recipes[dataset].train.batch_size
    precision = ablation.recipes[dataset].train.precision
    info = machine()
    key = {"configs": configs, "batch": batch, "steps": STEP_TIMING_STEPS, "warmup": STEP_TIMING_WARMUP,
           "machine": {k: info.get(k) for k in ("processor", "threads", "torch")},
           # fp32 is what the timing always ran in before it followed the grid: its caches stay valid
           **({"precision": precision} if precision_dtype(precision) != torch.float32 else {})}
    path = step_timing_path(out / dataset)
    cached = read_cache(path, key, "timing")
    if cached is not None:
        return cached
    if echo:
        echo(f"{dataset}: timing {len(configs)} variants side by side ({STEP_TIMING_STEPS} interleaved steps each)")
    times = interleaved_step_seconds({v: GPTConfig.from_dict(c) for v, c in configs.items()}, batch,
                                     STEP_TIMING_STEPS, STEP_TIMING_WARMUP, dtype=precision_dtype(precision))
    seconds = {v: median(t) for v, t in times.items()}
    timing = {"method": f"forward, backward and AdamW on one fixed batch of {batch} ({precision}), every variant "
                        f"in one process with steps interleaved; median of {STEP_TIMING_STEPS} steps after "
                        f"{STEP_TIMING_WARMUP} warm-up steps",
              "machine": info, "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": seconds,
              "all_seconds": times, "ratio": {v: seconds[v] / seconds[cfg.baseline] for v in seconds}}
    write_cache(path, key, "timing", timing)
    return timing


def apply_step_timing(section: dict[str, Any], timing: dict[str, Any] | None) -> None:
    """Put the side-by-side step times into the table's columns; keep the runs' own as ``sec_per_step_runs``."""
    section["step_timing"] = timing
    for variant, entry in section["variants"].items():
        entry["sec_per_step_runs"] = entry["sec_per_step"]
        if timing and variant in timing["seconds"]:
            entry["sec_per_step"] = timing["seconds"][variant]
            entry["step_time_ratio"] = timing["ratio"][variant]
