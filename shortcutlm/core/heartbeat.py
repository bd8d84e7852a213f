"""Saying that long, silent work goes on: :func:`duration` for people, :class:`Heartbeat` for a fit that
prints nothing for minutes. Light on imports, so ``prepare``'s worker processes stay quick to start."""
from __future__ import annotations

import sys
import time
from typing import Any
from collections.abc import Callable


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 05 min``: as precise as a person planning around it needs."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, rest = divmod(int(round(seconds / 60)), 60)
    return f"{hours} h {rest:02d} min"


class Heartbeat:
    """``with Heartbeat("training the text tokenizer"):`` says every ``every_s`` seconds that the work
    goes on (a SentencePiece or BPE fit is silent for minutes on a large train split), and at the end
    how long it took (``closing_line``). Lines go to stderr from a daemon thread; nothing is said for
    work shorter than one interval but the closing line."""

    def __init__(self, what: str, every_s: float = 60.0, say: Callable[[str], None] | None = None,
                 closing_line: bool = True) -> None:
        import threading

        self.what, self.every_s, self.closing_line = what, every_s, closing_line
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._start = 0.0

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            self.say(f"{self.what}: still working ({duration(time.perf_counter() - self._start)} so far)")

    def __enter__(self) -> Heartbeat:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None and self.closing_line:
            self.say(f"{self.what}: done in {duration(time.perf_counter() - self._start)}")


class PlainCounter:
    """A progress bar's plain cousin for batch logs: ``update()`` per item, and every ``every_s``
    seconds one line ``what: done/total items, rate/s, ETA``. Silent for work shorter than that."""

    def __init__(self, what: str, total: int, unit: str = "documents", every_s: float = 180.0,
                 say: Callable[[str], None] | None = None) -> None:
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.done = 0
        self._start = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last < self.every_s:
            return
        self._last = now
        rate = self.done / max(now - self._start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        self.say(f"{self.what}: {self.done:,}/{self.total:,} {self.unit}, {rate:,.1f}/s, ETA {duration(left)}")
