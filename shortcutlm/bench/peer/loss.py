"""Validation loss after the same training: per seed, one loader feeds the same batches to every
model (ours and theirs, each variant), same AdamW and schedule, then the exact validation pass;
mean and sample std over seeds."""
from __future__ import annotations

import gc
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shortcutlm.bench.common import median, timed
from shortcutlm.bench.model import Trainee
from shortcutlm.bench.peer.config import IMPLEMENTATIONS, VARIANTS
from shortcutlm.bench.peer.models import make_trainee
from shortcutlm.models import GPTConfig


def default_shards(limit: int | None, vocab: int) -> Path:
    """Where the default bach_chorales shards live (prepared on first use, then reused)."""
    from shortcutlm.datasets.embedded import cache_root

    return cache_root() / "peer" / f"bach_chorales_{limit or 'all'}_midi{vocab}"


def prepare_chorales(out: Path, limit: int | None, vocab: int) -> Path:
    """bach_chorales as MIDI shards (music21's corpus, no download); resumes if already there."""
    from shortcutlm.datasets.prepare import prepare

    source: dict[str, Any] = {"name": "bach_chorales"}
    if limit:
        source["limit"] = limit
    prepare(source, {"domain": "midi", "vocab_size": vocab}, out, workers=2, progress=False)
    return out


@torch.no_grad()
def validation_loss(model: nn.Module, shard_dir: Path, block: int, batch: int, ignore: list[int],
                    device: str, dtype: torch.dtype) -> float:
    """Mean next-token loss over every valid target of the exact validation pass (the sum over
    their count, as ``shortcutlm evaluate`` computes it)."""
    from shortcutlm.datasets.batches import eval_batches
    from shortcutlm.models import token_losses

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for window in eval_batches(shard_dir, "valid", block, batch):
        window = window.to(device)
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(window[:, :-1])
        nats, valid = token_losses(logits, window[:, 1:], ignore)
        total += float(nats[valid].sum())
        count += int(valid.sum())
    model.train(was_training)
    if count == 0:
        raise ValueError(f"{shard_dir}: the validation split has no targets")
    return total / count


def train_step(trainee: Trainee, batch: Tensor, lr: float, ignore: list[int]) -> float:
    """One step as ``Trainee.step`` does it, on a data batch with masked targets and a set lr."""
    from shortcutlm.models import stream_losses

    for group in trainee.opt.param_groups:
        group["lr"] = lr
    trainee.opt.zero_grad(set_to_none=True)
    with torch.autocast(torch.device(trainee.device).type, dtype=trainee.dtype, enabled=trainee.dtype != torch.float32):
        loss = stream_losses(trainee.model(batch[:, :-1]), batch[:, 1:], ignore).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), 1.0)
    trainee.opt.step()
    return float(loss.detach())


def loss_seed(shard_dir: Path, base: GPTConfig, variants: list[str], steps: int, seed: int, batch: int, lr: float,
              min_lr: float, warmup: int, weight_decay: float, init: str, device: str, dtype: torch.dtype,
              log: Any = None, flash: bool = True) -> dict[str, dict[str, Any]]:
    """One seed: every model ("variant/impl") trained on the batches of one loader, then validated."""
    from shortcutlm.artifacts.manifest import ShardManifest
    from shortcutlm.datasets.batches import train_batches
    from shortcutlm.models.lightning import warmup_cosine

    manifest = ShardManifest.read(shard_dir)
    ignore = manifest.ignored_ids
    config = replace(base, vocab_size=manifest.vocab_size)
    trainees: dict[str, Trainee] = {}
    for variant in variants:
        for impl in IMPLEMENTATIONS:
            trainee = make_trainee(impl, replace(config, value_residual=VARIANTS[variant]), batch, device, dtype, seed,
                                   init, flash)
            for group in trainee.opt.param_groups:
                group["weight_decay"] = weight_decay if group["weight_decay"] else 0.0
            trainees[f"{variant}/{impl}"] = trainee
    loader = iter(train_batches(shard_dir, config.block_size, batch, seed))
    last: dict[str, float] = {}
    times: dict[str, list[float]] = {name: [] for name in trainees}
    for step in range(steps):
        window = next(loader).to(device)
        rate = warmup_cosine(step, warmup, steps, lr, min_lr)
        for name, trainee in trainees.items():  # interleaved: A, B, C, D on each batch
            times[name].append(timed(lambda: last.__setitem__(name, train_step(trainee, window, rate, ignore)), device))
        if log and (step + 1) % max(1, steps // 10) == 0:
            log(f"loss phase seed {seed} step {step + 1}/{steps}: " + ", ".join(f"{n} {last[n]:.3f}" for n in trainees))
    out = {name: {"val_loss": validation_loss(t.model, shard_dir, config.block_size, batch, ignore, device, dtype),
                  "final_train_loss": last.get(name, float("nan")), "step_seconds": times[name]}
           for name, t in trainees.items()}
    del trainees
    gc.collect()
    return out


def summarise_losses(shard_dir: Path, per_seed: list[dict[str, dict[str, Any]]], variants: list[str]) -> dict[str, Any]:
    """Per model: validation loss per seed, mean, sample std; training step-time median."""
    from shortcutlm.artifacts.manifest import ShardManifest

    manifest = ShardManifest.read(shard_dir)
    out: dict[str, Any] = {"vocab": manifest.vocab_size, "ignored_ids": manifest.ignored_ids,
                           "valid_tokens": manifest.split("valid").tokens,
                           "train_tokens": manifest.split("train").tokens, "models": {}}
    for variant in variants:
        for impl in IMPLEMENTATIONS:
            rows = [seed[f"{variant}/{impl}"] for seed in per_seed]
            losses = [r["val_loss"] for r in rows]
            out["models"].setdefault(variant, {})[impl] = {
                "val_loss_per_seed": losses,
                "val_loss_mean": statistics.fmean(losses),
                "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
                "final_train_loss_per_seed": [r["final_train_loss"] for r in rows],
                "step_seconds_median": median([t for r in rows for t in r["step_seconds"]]),
            }
    return out


def loss_comparison(shard_dir: Path, base: GPTConfig, variants: list[str], steps: int, seeds: int, batch: int,
                    lr: float, min_lr: float, warmup: int, weight_decay: float, init: str, device: str,
                    dtype: torch.dtype, log: Any = None, flash: bool = True) -> dict[str, Any]:
    """Train ours and theirs for each variant on the same batches (one loader per seed feeds all
    models), then the exact validation pass; per model: losses per seed, mean, std."""
    per_seed = [loss_seed(shard_dir, base, variants, steps, seed, batch, lr, min_lr, warmup, weight_decay, init,
                          device, dtype, log, flash) for seed in range(seeds)]
    return summarise_losses(shard_dir, per_seed, variants)
