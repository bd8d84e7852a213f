"""Shared pieces of the benchmarks: machine description, matmul peak, timing and JSON output.

The peak itself is measured by :mod:`shortcutlm.core.peak`, which training uses too.
"""
from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable

import torch

from shortcutlm.artifacts import files
from shortcutlm.core.peak import measure_peak_flops, sync


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                            "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def matmul_peak_flops(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048,
                      repeats: int = 5) -> float:
    """A fresh matmul peak (FLOP/s) at one size: the best of ``repeats`` timed products (no cache;
    see :func:`shortcutlm.core.peak.measure_peak_flops`)."""
    return measure_peak_flops(device, dtype, sizes=(size,), trials=repeats)


def timed(fn: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Seconds one call of ``fn`` takes, measured as elapsed wall time."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def target(value: float, bound: float, kind: str) -> dict[str, Any]:
    """A target line: ``kind`` is "<=" or ">=" (or "==", exact). A missed bound says by how much
    (``short_by``, in the value's own unit), so a JSON read alone tells a near miss from a far one."""
    ok = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[kind]
    line: dict[str, Any] = {"value": value, "target": f"{kind} {bound}", "pass": bool(ok)}
    if not ok and kind != "==":
        line["short_by"] = float(f"{abs(value - bound):.4g}")
    return line


def not_judged(line: dict[str, Any], why: str) -> dict[str, Any]:
    """A target line shown but not judged here (another size, a dry run), and why."""
    return {**{k: v for k, v in line.items() if k != "short_by"}, "pass": None, "note": why}


def run_context(result: dict[str, Any]) -> dict[str, Any]:
    """How the figures were made, written beside them: the command (when run from the command line;
    a benchmark's own ``command`` field wins) and the machine's load averages at the end of the run
    (1, 5 and 15 minutes), which say whether the cores were idle while it timed."""
    context: dict[str, Any] = {"load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]}
    if "command" not in result and sys.argv[1:2] == ["bench"]:
        context["command"] = shlex.join(["shortcutlm", *sys.argv[1:]])
    return context


def write_json(result: dict[str, Any], path: str | Path | None, summary: Iterable[str] = ()) -> None:
    """Print a benchmark's short summary and write its whole ``result`` to ``path`` as JSON.

    The terminal gets ``summary`` (the benchmark's own few lines), then one line per entry of
    ``result["targets"]``, then where the figures went. The JSON itself is never printed: it
    runs to hundreds of lines, so it goes to ``path`` (written atomically) when one is given.
    """
    for line in summary:
        print(line)
    targets = result.get("targets") or {}
    if targets:
        print("targets:")
        width = max(len(name) for name in targets)
        notes: list[str] = []  # a note shared by several targets is printed once, below them
        for name, t in targets.items():
            verdict = {True: "pass", False: "FAIL", None: "not judged"}[t.get("pass")]
            if t.get("pass") is False and "short_by" in t:
                verdict += f" by {t['short_by']:g}"
            why = t.get("note") or t.get("error")
            if why and why not in notes:
                notes.append(why)
            shown = f"{t['value']:.4g}" if isinstance(t.get("value"), float) else t.get("value", "-")
            bound = t.get("target", "-") + (f", attainable {t['attainable']}" if "attainable" in t else "")
            print(f"  {name:<{width}}  {shown} (target {bound})  {verdict}"
                  + (f" [{notes.index(why) + 1}]" if why else ""))
        for i, why in enumerate(notes, 1):
            print(f"  [{i}] {why}")
    if path:
        path = files.write_json(path, {**result, "run": run_context(result)}, sort_keys=False)
        print(f"all figures: {path}")
    else:
        print("all figures: give --json FILE to keep them")
