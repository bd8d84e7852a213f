"""The optimiser during real training: the learning rate it steps with (warmup, then cosine to
``min_lr``) across gradient accumulation and a resume, gradient clipping, and accumulation equal
to one larger batch. Read from the optimiser itself, step by step, by a callback."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from shortcutlm.run.recipe import Recipe, from_dict
from shortcutlm.run.training import train
from tests.conftest import tiny_recipe_dict

pytestmark = pytest.mark.usefixtures("one_thread")

LR, MIN_LR, WARMUP, STEPS = 3e-3, 3e-4, 3, 9


def expected_lr(step: int) -> float:
    """The documented schedule, written from its description: over the first ``WARMUP`` steps the
    rate rises linearly to ``LR`` (step n uses LR·(n+1)/WARMUP), then a half cosine from ``LR`` at
    the end of warmup to ``MIN_LR`` at ``STEPS``."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    done = (step - WARMUP) / (STEPS - WARMUP)
    return MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * done)) / 2


class OptimiserWatch(L.Callback):
    """Records what the optimiser sees: the rate at every micro-batch and at every step, the
    gradient norm before clipping (Lightning clips after ``on_before_optimizer_step``) and the norm
    the update used (a step post-hook), the gradients and each step's loss."""

    def __init__(self, keep_grads: bool = False) -> None:
        self.micro: list[tuple[int, list[float]]] = []
        self.steps: list[tuple[int, list[float]]] = []
        self.norm_before: list[float] = []
        self.norm_at_step: list[float] = []
        self.grads: list[dict[str, torch.Tensor]] = []
        self.step_loss: dict[int, float] = {}
        self.keep_grads = keep_grads

    @staticmethod
    def _norm(module: torch.nn.Module) -> float:
        return float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.grad) for p in module.parameters() if p.grad is not None])))

    def on_train_start(self, trainer, lit) -> None:
        # Lightning runs the closure (forward, backward, clipping) inside ``optimizer.step``; the
        # gradients the update used are still there when the step returns.
        trainer.optimizers[0].register_step_post_hook(lambda opt, args, kwargs: self.norm_at_step.append(
            self._norm(lit.model)))

    def on_train_batch_start(self, trainer, lit, batch, batch_idx) -> None:
        self.micro.append((trainer.global_step, [g["lr"] for g in trainer.optimizers[0].param_groups]))

    def on_train_batch_end(self, trainer, lit, outputs, batch, batch_idx) -> None:
        # Lightning hands back the loss divided by the accumulation factor, the share of this
        # micro-batch in the step's loss; the step is counted once its optimiser step is done.
        step = trainer.global_step - (0 if (batch_idx + 1) % trainer.accumulate_grad_batches else 1)
        self.step_loss[step] = self.step_loss.get(step, 0.0) + float(outputs["loss"])

    def on_before_optimizer_step(self, trainer, lit, optimizer) -> None:
        self.steps.append((trainer.global_step, [g["lr"] for g in optimizer.param_groups]))
        self.norm_before.append(self._norm(lit.model))
        if self.keep_grads:
            self.grads.append({n: p.grad.detach().clone() for n, p in lit.model.named_parameters()
                               if p.grad is not None})


def recipe(**train_settings) -> Recipe:
    settings = dict(max_steps=STEPS, warmup_steps=WARMUP, lr=LR, min_lr=MIN_LR, log_every=1, val_every=STEPS,
                    ckpt_minutes=0)
    settings.update(train_settings)
    return from_dict(Recipe, tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, **settings))


def logged_lr(folder: Path) -> dict[int, float]:
    with (folder / "metrics.csv").open() as fh:
        return {int(float(r["opt_step"])): float(r["train/lr"]) for r in csv.DictReader(fh) if r.get("train/lr")}


def assert_schedule(watch: OptimiserWatch, steps: range, accumulate: int) -> None:
    assert [s for s, _ in watch.steps] == list(steps)
    for step, rates in watch.steps:
        assert rates == [pytest.approx(expected_lr(step), rel=1e-12, abs=0)] * 2, step  # both AdamW groups
    # Every micro-batch of a step runs at that step's rate: the schedule moves per optimiser step.
    assert [s for s, _ in watch.micro] == [s for s in steps for _ in range(accumulate)]
    for step, rates in watch.micro:
        assert rates == [pytest.approx(expected_lr(step), rel=1e-12, abs=0)] * 2, step


@pytest.mark.parametrize("accumulate", [1, 3])
def test_the_optimiser_steps_with_warmup_then_cosine_to_min_lr(tmp_path, text8_shards, accumulate):
    watch = OptimiserWatch()
    out = train(recipe(accumulate=accumulate), "shortcut_resformer", text8_shards, tmp_path / "run", progress=False,
                callbacks=[watch])
    assert_schedule(watch, range(STEPS), accumulate)
    assert watch.steps[WARMUP - 1][1][0] == pytest.approx(LR, rel=1e-12)  # the peak, at the end of warmup
    assert logged_lr(out) == pytest.approx({s: expected_lr(s) for s in range(STEPS)}, rel=1e-6)  # the curve says so


def test_a_resumed_run_goes_on_along_the_schedule(tmp_path, text8_shards):
    first, second = OptimiserWatch(), OptimiserWatch()
    out = tmp_path / "run"
    stop = WARMUP + 2  # a resume inside the cosine
    train(recipe(accumulate=2), "shortcut_resformer", text8_shards, out, progress=False, stop_after=stop,
          callbacks=[first])
    train(recipe(accumulate=2), "shortcut_resformer", text8_shards, out, progress=False, callbacks=[second])
    assert_schedule(first, range(stop), 2)
    assert_schedule(second, range(stop, STEPS), 2)
    assert logged_lr(out) == pytest.approx({s: expected_lr(s) for s in range(STEPS)}, rel=1e-6)


def test_a_resume_at_the_end_of_warmup_starts_the_cosine(tmp_path, text8_shards):
    out = tmp_path / "run"
    train(recipe(), "baseline", text8_shards, out, progress=False, stop_after=WARMUP - 1)
    watch = OptimiserWatch()
    train(recipe(), "baseline", text8_shards, out, progress=False, callbacks=[watch])
    assert_schedule(watch, range(WARMUP - 1, STEPS), 1)


def test_gradient_clipping_bounds_the_norm_the_optimiser_receives(tmp_path, text8_shards):
    clip = 0.4
    watch = OptimiserWatch()
    train(recipe(grad_clip=clip, max_steps=4), "shortcut_resformer", text8_shards, tmp_path / "run", progress=False,
          callbacks=[watch])
    assert len(watch.norm_before) == len(watch.norm_at_step) == 4
    assert any(before > 1.5 * clip for before in watch.norm_before)  # the clip has work to do
    for before, at_step in zip(watch.norm_before, watch.norm_at_step, strict=True):
        assert at_step == pytest.approx(min(before, clip), rel=1e-4)

    unclipped = OptimiserWatch()
    train(recipe(grad_clip=0, max_steps=2), "shortcut_resformer", text8_shards, tmp_path / "off", progress=False,
          callbacks=[unclipped])
    assert unclipped.norm_at_step == unclipped.norm_before  # 0 disables clipping
    assert unclipped.norm_before[0] == pytest.approx(watch.norm_before[0], rel=1e-6)  # the same first gradient


def test_accumulating_micro_batches_equals_one_larger_batch(tmp_path, text8_shards):
    """The train split is one stream read in order, so 2 micro-batches of 4 windows are the windows
    of one batch of 8: each step's loss and gradients agree, up to float rounding."""
    runs = {}
    for accumulate, batch in ((1, 8), (2, 4)):
        watch = OptimiserWatch(keep_grads=True)
        train(recipe(accumulate=accumulate, batch_size=batch, max_steps=3), "shortcut_resformer", text8_shards,
              tmp_path / f"acc{accumulate}", progress=False, callbacks=[watch])
        runs[accumulate] = watch
    one, two = runs[1], runs[2]
    assert sorted(one.step_loss) == sorted(two.step_loss) == [0, 1, 2]
    for step in range(3):
        assert two.step_loss[step] == pytest.approx(one.step_loss[step], rel=1e-5)
    assert len(one.grads) == len(two.grads) == 3
    for step, (g1, g2) in enumerate(zip(one.grads, two.grads, strict=True)):
        assert g1.keys() == g2.keys()
        for name in g1:
            scale = float(g1[name].abs().max()) or 1.0
            torch.testing.assert_close(g2[name], g1[name], atol=2e-5 * scale, rtol=1e-4, msg=f"step {step}: {name}")
