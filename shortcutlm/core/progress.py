"""How far a recipe's training is and how long it will take, said in plain lines.

``recipe`` trains its variants one after another. :class:`TrainingProgress` (a Lightning callback
given to each variant's ``train``) says which variant trains ("variant 2/4: shortcut_resformer"),
estimates from the first steps how long this variant and the whole run will take, and, when the
progress bars are off (batch jobs, ``--no-progress``), prints one plain line every few minutes
(step, loss, tokens/s, ETA) instead of silence. Lines go through ``tqdm.write`` so they never
tear a progress bar.
"""
from __future__ import annotations

import sys
import time
from typing import Any
from collections.abc import Callable

import lightning as L

from shortcutlm.core.heartbeat import duration

#: Steps timed before the first estimate (the very first steps also build caches and compile).
ESTIMATE_AFTER_STEPS = 10
#: ... or seconds, whichever comes first, so a slow model still gets an early estimate.
ESTIMATE_AFTER_S = 60.0
#: A plain line this often while the progress bars are off.
PLAIN_EVERY_S = 180.0


def _say(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


class TrainingProgress(L.Callback):
    """Names the variant, estimates its end and the run's from the first steps, and prints plain lines.

    ``index`` / ``count``: this variant's place among those the run trains (1-based); ``later``:
    optimiser steps the variants after this one will train (the run's estimate assumes they step
    as fast as this one, which holds for variants of one model size).
    """

    def __init__(self, variant: str, index: int, count: int, later_steps: int, plain: bool,
                 every_s: float | None = None, say: Callable[[str], None] = _say,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.variant, self.index, self.count = variant, index, count
        self.later_steps, self.plain = later_steps, plain
        self.every_s = PLAIN_EVERY_S if every_s is None else every_s
        self.say, self.clock = say, clock
        self.name = f"variant {index}/{count}: {variant}"
        self._start: tuple[float, int] | None = None
        self._estimated = False
        self._last_line = 0.0
        self.seconds_per_step: float | None = None

    def on_train_start(self, trainer: L.Trainer, lit: Any) -> None:
        if trainer.is_global_zero:
            resumed = f", resuming at step {trainer.global_step:,}" if trainer.global_step else ""
            self.say(f"{self.name} — {trainer.max_steps:,} steps{resumed}")
        self._start = (self.clock(), trainer.global_step)
        self._last_line = self._start[0]

    def on_train_batch_end(self, trainer: L.Trainer, lit: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._start is None or not trainer.is_global_zero:
            return
        now, t0 = self.clock(), self._start[0]
        step, done = trainer.global_step, trainer.global_step - self._start[1]
        if done <= 0:
            return
        self.seconds_per_step = (now - t0) / done
        left = max(0, trainer.max_steps - step) * self.seconds_per_step
        run_left = left + self.later_steps * self.seconds_per_step
        if not self._estimated and (done >= ESTIMATE_AFTER_STEPS or now - t0 >= ESTIMATE_AFTER_S):
            self._estimated = True
            whole = (f"; training all {self.count} variants ends in about {duration(run_left)}" if self.count > 1
                     else "")
            self.say(f"{self.name}: {self.seconds_per_step:.3g} s/step over the first {done} steps; this variant "
                     f"ends in about {duration(left)}{whole}")
        if self.plain and now - self._last_line >= self.every_s:
            self._last_line = now
            self.say(self.plain_line(trainer, left, run_left))

    def plain_line(self, trainer: L.Trainer, left: float, run_left: float) -> str:
        metrics = trainer.callback_metrics
        loss = metrics.get("train/loss")
        speed = metrics.get("train/tokens_per_s")
        parts = [f"{self.name}: step {trainer.global_step:,}/{trainer.max_steps:,}"]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if speed is not None:
            parts.append(f"{float(speed):,.0f} tokens/s")
        parts.append(f"ETA {duration(left)}" + (f" (run {duration(run_left)})" if self.later_steps else ""))
        return ", ".join(parts)

