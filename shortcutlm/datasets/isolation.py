"""Work on many files in worker processes, so that a file which crashes its reader costs that file only.

The readers behind the tokenizers are partly C/C++ (libsndfile, symusic, sentencepiece). A
malformed file can make them segfault or abort, which no ``try`` catches. So each file is
handled in a worker process; when a worker dies, the file it held is answered with a
:class:`Crashed` (its signal or exit code), a fresh worker takes its place, and the rest go on.

Why not the standard pools: ``multiprocessing.Pool`` waits forever for the result of a worker
that died, and ``concurrent.futures.ProcessPoolExecutor`` breaks as a whole (every pending task
fails with ``BrokenProcessPool``) without saying which task killed it. Here each worker holds
one task at a time, so the task a dead worker held is the one that killed it.

Why not pebble, whose ``ProcessPool`` also answers a crashed or timed-out task alone: measured
side by side here (2 spawned workers, 400 trivial tasks of which one aborts its worker, two other
jobs running on the 2 cores), both answered the 399 and reported the one crash; pebble 5.1.3 took
0.32–0.34 s, this pool 0.19 s, a difference that vanishes beside reading a file. What decides is
memory: pebble's ``map`` schedules every item at once (a future per file, each result held until
read), while :meth:`IsolatedPool.imap` keeps at most ``AHEAD_PER_WORKER`` tasks per worker ahead
of the oldest unfinished one, so a prepare over millions of files holds a bounded number of them.

Workers start with ``spawn`` (the parent may hold torch / OpenMP threads that ``fork`` would copy
mid-state) and run a set-up call first (e.g. loading the tokenizer); the set-up is replayed on
every replacement worker. ``workers=0`` runs everything in this process, unprotected (for
debugging with pdb or a profiler).
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any
from collections.abc import Callable, Generator, Iterator, Sequence

#: How many tasks may run ahead of the oldest unfinished one (bounds the results held for ordering).
AHEAD_PER_WORKER = 4
STOP_GRACE_S = 5.0


class WorkerError(RuntimeError):
    """A worker could not be set up (its set-up call failed or killed it): no file is to blame."""


@dataclass(frozen=True)
class Crashed:
    """The answer for a task whose worker died (``exitcode``: negative for a signal) or ran out of time."""

    exitcode: int | None
    timeout_s: float | None = None

    def reason(self) -> str:
        if self.timeout_s is not None:
            return f"parser did not finish within {self.timeout_s:g} s (its process was stopped)"
        if self.exitcode is not None and self.exitcode < 0:
            number = -self.exitcode
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = "unknown signal"
            return f"parser crashed (signal {number}, {name})"
        return f"parser crashed (its process exited with code {self.exitcode})"


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """Worker loop: run ``fn(*args)`` for each message, answer ``(ok, result or error text)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn, args = message
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except Exception as exc:  # reported to the parent, which decides what it means
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            payload = ForkingPickler.dumps(reply)
        except Exception as exc:
            payload = ForkingPickler.dumps((False, f"result could not be sent back ({type(exc).__name__}: {exc})"))
        conn.send_bytes(payload)


class _Worker:
    """One worker process, its pipe, and what it is doing (``"setup"``, a task index, or None)."""

    def __init__(self, ctx: Any, setup: tuple[Callable[..., Any], tuple] | None) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.job: str | int | None = None
        self.started = 0.0
        if setup is not None:
            self.send("setup", setup)

    def send(self, job: str | int, call: tuple[Callable[..., Any], tuple]) -> None:
        self.job, self.started = job, time.monotonic()
        self.conn.send(call)

    def stop(self, force: bool = False) -> None:
        if self.process.is_alive() and not force:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(STOP_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class IsolatedPool:
    """Worker processes that answer every task, even one that kills its worker.

    ``with IsolatedPool(2) as pool: pool.setup(load, folder); for item, result in pool.imap(fn, items): ...``
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(0, int(workers))
        self._ctx = multiprocessing.get_context("spawn")
        self._setup: tuple[Callable[..., Any], tuple] | None = None
        self._pool: list[_Worker] = []

    def __enter__(self) -> IsolatedPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker (killing those still busy)."""
        for worker in self._pool:
            worker.stop(force=worker.job is not None)
        self._pool = []

    def setup(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in every worker, now and in each worker started later (replaces any earlier set-up)."""
        self._setup = (fn, args)
        if self.workers == 0:
            fn(*args)
            return
        for worker in self._pool:
            worker.send("setup", self._setup)
        for worker in self._pool:
            self._finish_setup(worker)

    def imap(self, fn: Callable[[Any], Any], items: Sequence[Any],
             timeout_s: float | None = None) -> Generator[tuple[Any, Any], None, None]:
        """``(item, fn(item))`` in input order; ``fn(item)`` is a :class:`Crashed` when the worker died
        (or ran past ``timeout_s``) on that item. An exception in ``fn`` ends the run as a WorkerError,
        so ``fn`` should turn bad input into a value itself."""
        if self.workers == 0:
            for item in items:
                yield item, fn(item)
            return
        todo = deque(range(len(items)))
        done: dict[int, Any] = {}
        next_out = 0
        try:
            self._grow(min(self.workers, len(items)))
            while next_out < len(items):
                for worker in [w for w in self._pool if w.job is None]:
                    if not todo or todo[0] >= next_out + AHEAD_PER_WORKER * self.workers:
                        break
                    if not worker.process.is_alive():  # died between tasks: no file to blame
                        self._replace(worker)
                        continue
                    index = todo.popleft()
                    worker.send(index, (fn, (items[index],)))
                if not any(isinstance(w.job, int) for w in self._pool):
                    continue  # a dead idle worker was replaced: hand the new one a task first
                for index, answer in self._answers(timeout_s):
                    done[index] = answer
                while next_out in done:
                    yield items[next_out], done.pop(next_out)
                    next_out += 1
        finally:
            for worker in [w for w in self._pool if w.job is not None]:  # abandoned early: drop busy workers
                worker.stop(force=True)
                self._pool.remove(worker)

    # ------------------------------------------------------------------ internals
    def _grow(self, n: int) -> None:
        while len(self._pool) < n:
            worker = _Worker(self._ctx, self._setup)
            self._pool.append(worker)
            if worker.job == "setup":
                self._finish_setup(worker)

    def _finish_setup(self, worker: _Worker) -> None:
        """Wait for a worker's set-up; its failure or death is the run's, not a file's."""
        multiprocessing.connection.wait([worker.conn, worker.process.sentinel])
        try:
            ok, detail = worker.conn.recv()
        except (EOFError, OSError):
            worker.stop(force=True)
            self._pool.remove(worker)
            raise WorkerError("a worker process died while setting up "
                              f"({Crashed(worker.process.exitcode).reason()})") from None
        worker.job = None
        if not ok:
            raise WorkerError(f"worker set-up failed: {detail}")

    def _answers(self, timeout_s: float | None) -> Iterator[tuple[int, Any]]:
        """Wait until some busy worker answers, dies or runs out of time; yield ``(task index, answer)``."""
        busy = [w for w in self._pool if isinstance(w.job, int)]
        wait = None
        if timeout_s is not None:
            wait = max(0.0, min(w.started + timeout_s for w in busy) - time.monotonic())
        ready = multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy], wait)
        now = time.monotonic()
        for worker in busy:
            index = worker.job
            assert isinstance(index, int)
            if worker.conn in ready or worker.process.sentinel in ready:
                try:
                    ok, detail = worker.conn.recv()
                except (EOFError, OSError):
                    worker.process.join()
                    yield index, Crashed(worker.process.exitcode)
                    self._replace(worker)
                    continue
                worker.job = None
                if not ok:
                    raise WorkerError(f"task failed in a worker: {detail}")
                yield index, detail
            elif timeout_s is not None and now - worker.started >= timeout_s:
                yield index, Crashed(None, timeout_s)
                self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.stop(force=True)
        self._pool.remove(worker)
        self._grow(len(self._pool) + 1)
