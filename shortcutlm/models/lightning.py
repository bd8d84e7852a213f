"""The LightningModule around the decoder: loss with masked targets, AdamW, warmup + cosine,
validation by summed token losses, and the state an exact resume needs (RNG, data position).

Knows ids only: the ids that carry no prediction (pad, the delay layout's empty) are given to it,
as the tokenizer protocol answers them (``shortcutlm.tokenizers.base.ignored_ids``, through the
shard manifest); the loss is :mod:`shortcutlm.models.losses`'.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from typing import TYPE_CHECKING, Any, cast
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from torch import Tensor

from shortcutlm.models.config import GPTConfig
from shortcutlm.models.gpt import GPT, flops_per_token
from shortcutlm.models.losses import stream_means, targets_only
from shortcutlm.models.optim import adamw
from shortcutlm.core.peak import observe_step, precision_dtype

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

# Lightning's own pytree helper trips torch 2.11's LeafSpec deprecation on every fit; it says
# nothing a user can act on, so keep it out of their terminal (pytest filters it the same way).
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

def warmup_cosine(step: int, warmup: int, total: int, lr: float, min_lr: float) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``total`` steps (flat after)."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def rng_state() -> dict[str, Any]:
    """Every generator's state in plain types, so checkpoints load with ``weights_only=True``."""
    # numpy's stubs type the no-argument call as the dict form; it returns the legacy tuple.
    legacy = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    name, keys, pos, has_gauss, gauss = legacy
    state = {"python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LitGPT(L.LightningModule):
    """Trains a GPT on packed windows ``[B, (K,) block + 1]``."""

    _resume_rng: dict[str, Any] | None  # set by on_load_checkpoint, consumed by on_train_start

    def __init__(self, config: GPTConfig, train: dict[str, Any], ignore_ids: list[int],
                 peak_flops: float | None = None, target_spans: tuple[list[int], list[int]] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"model": config.to_dict(), "train": train, "ignore_ids": ignore_ids})
        self.config, self.settings, self.ignore_ids = config, train, list(ignore_ids)
        #: paired documents with a loss on targets only: (ids opening a target, ids closing one)
        self.target_spans = target_spans
        self.model = GPT(config)
        self.forward_fn: Callable[..., Any] = self.model  # the compiled model once configure_model runs
        self.flops_per_token = flops_per_token(config, self.model.num_params())
        self.peak_flops = peak_flops
        self.data_batches_done = 0  # micro-batches consumed before this run (set on resume)
        self._val_sums: list[Tensor] = []
        self._tick: float | None = None

    def configure_model(self) -> None:
        if self.settings.get("compile") and self.forward_fn is self.model:
            self.forward_fn = torch.compile(self.model)

    def _losses(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """(per-stream summed NLL [K], per-stream valid-target counts [K])."""
        targets = batch[..., 1:] if self.target_spans is None else targets_only(batch, *self.target_spans)
        means, counts = stream_means(self.forward_fn(batch[..., :-1]), targets, self.ignore_ids)
        return means * counts, counts

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        sums, counts = self._losses(batch)
        loss = (sums / counts.clamp_min(1)).mean()  # mean over streams of each stream's mean
        # Averaged over ranks when there are several, so the curve is the global batch's loss.
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False,
                 sync_dist=self.trainer.world_size > 1)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        self.log("opt_step", float(self.trainer.global_step), on_step=True, on_epoch=False)
        if batch.is_cuda:  # time the work, not its queueing: an unsynced interval can undercut a step
            torch.cuda.synchronize(batch.device)
        now = time.perf_counter()
        if self._tick is not None:
            seconds = now - self._tick
            tokens = batch[..., 1:].shape[0] * batch.shape[-1] - batch.shape[0]
            tps = tokens * self.trainer.world_size / seconds
            self.log("train/tokens_per_s", tps, prog_bar=True, on_step=True, on_epoch=False)
            if self.peak_flops:
                # A step faster than the peak proves the peak low: it raises the peak (and this
                # machine's cached one), so MFU <= 1 by construction, without clamping.
                achieved = tps * self.flops_per_token / self.trainer.world_size  # per device
                self.peak_flops = observe_step(achieved, self.peak_flops, self.device,
                                               precision_dtype(self.settings["precision"]))
                self.log("train/mfu", achieved / self.peak_flops, on_step=True, on_epoch=False)
        self._tick = now
        return loss

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._val_sums.append(torch.stack(self._losses(batch)).double())

    def on_validation_epoch_start(self) -> None:
        self._val_sums = []

    def on_validation_epoch_end(self) -> None:
        if not self._val_sums:
            return
        total = torch.stack(self._val_sums).sum(0)  # [2, K]
        total = self.trainer.strategy.reduce(total, reduce_op="sum")
        per_stream = total[0] / total[1].clamp_min(1)
        self.log("val/loss", per_stream.mean().float(), prog_bar=True, sync_dist=False)
        self.log("opt_step", float(self.trainer.global_step), sync_dist=False)
        if per_stream.numel() > 1:
            for k, value in enumerate(per_stream):
                self.log(f"val/loss_stream{k}", value.float(), sync_dist=False)
        self._tick = None  # validation time is not training time

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        s = self.settings
        opt = adamw(self.model.param_groups(s["weight_decay"]), self.device, s["lr"], (s["beta1"], s["beta2"]))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, s["warmup_steps"], s["max_steps"], s["lr"], s["min_lr"]) / s["lr"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Every rank's generators: ranks can draw differently (dropout on different data shapes
        # near the end of a split, work done on one rank only), and only rank 0 writes the file.
        state = rng_state()
        world = self.trainer.world_size
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            states: list[Any] = [None] * world
            torch.distributed.all_gather_object(states, state)
            checkpoint["rng_per_rank"] = states
        checkpoint["rng"] = state
        checkpoint["data_batches"] = self.trainer.global_step * self.settings["accumulate"]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.data_batches_done = int(checkpoint.get("data_batches", 0))
        per_rank = checkpoint.get("rng_per_rank")
        same_world = per_rank is not None and len(per_rank) == self.trainer.world_size
        self._resume_rng = per_rank[self.trainer.global_rank] if per_rank is not None and same_world \
            else checkpoint.get("rng")

    def on_train_start(self) -> None:
        # Restored here, not at load time, so nothing Lightning does while setting up draws from it.
        resume = getattr(self, "_resume_rng", None)
        if resume is not None:
            set_rng_state(resume)
            self._resume_rng = None
