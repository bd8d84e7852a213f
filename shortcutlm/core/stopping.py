"""Ctrl-C that stops a run where its state is whole.

A KeyboardInterrupt raised wherever the interpreter happens to be can land inside a step, in
the middle of gradient accumulation or of validation; state saved there does not resume to the
run that would have happened. So the first Ctrl-C (SIGINT, also what a terminal sends to every
DDP rank) only records the request; training saves and stops at the next optimiser-step
boundary. A second Ctrl-C stops at once, keeping the last saved state.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any


class Interrupted(KeyboardInterrupt):
    """Training stopped on request with its state saved at a step boundary; the same command resumes."""

    def __init__(self, out: Path, step: int, primary: bool = True) -> None:
        super().__init__(f"training of {out} stopped at step {step} with its state saved; "
                         "run the same command again to resume")
        self.out, self.step, self.primary = out, step, primary  # primary: the rank that reports


class StopRequest:
    """Context manager that turns the first SIGINT into a flag (``requested``)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if os.environ.get("LOCAL_RANK", "0") != "0":
            return  # every process of a terminal gets the signal; one of them answers
        print("\nCtrl-C: saving at the end of this step, then stopping "
              "(press Ctrl-C again to stop at once and keep the last saved state)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its default.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
