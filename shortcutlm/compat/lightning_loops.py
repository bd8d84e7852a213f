"""Lightning's private loop state, which exact resume at a step boundary adjusts (tested: 2.6).

``training.FolderWriter`` saves at the start of a step's first micro-batch, after the loader fetched
that batch; Lightning expects saves at the end of a batch. Two counters need stating by hand:
the epoch loop's ``_batches_that_stepped`` (its logging cadence) and, in the saved checkpoint's
``loops`` state, the fit loop's total ``ready`` count (so the refetched batch is not counted twice).
"""
from __future__ import annotations

from typing import Any

from shortcutlm.compat import changed

PACKAGE, TESTED = "lightning", "2.6"


def set_batches_that_stepped(trainer: Any, steps: int) -> None:
    """Set the epoch loop's count of batches that stepped the optimiser (Lightning logs by it)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    if not isinstance(getattr(loop, "_batches_that_stepped", None), int):
        raise changed(PACKAGE, TESTED, "trainer.fit_loop.epoch_loop._batches_that_stepped")
    setattr(loop, "_batches_that_stepped", steps)  # noqa: B010 - a private attribute, checked just above


def forget_prefetched_batch(checkpoint: dict[str, Any]) -> None:
    """In a checkpoint Lightning is saving: count the fetched-but-not-run batch as not ready."""
    try:
        total = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
        ready_and_completed = isinstance(total["ready"], int) and isinstance(total["completed"], int)
    except (KeyError, TypeError):
        ready_and_completed = False
    if not ready_and_completed:
        raise changed(PACKAGE, TESTED, 'the checkpoint\'s loops["fit_loop"]["epoch_loop.batch_progress"]["total"]')
    total["ready"] = total["completed"]
