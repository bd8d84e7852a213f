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


#: CPU features that change which kernels PyTorch runs (bf16 matrix units, wide vectors).
CPU_FLAGS_OF_NOTE = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def machine() -> dict[str, Any]:
    """What the figures were measured on: the same benchmark reads differently on two CPUs of one
    family (an L3 that holds the weights or not, bf16 matrix units or not), so the CPU is named."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                            "processor": platform.processor() or platform.machine(),
                            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    info.update(_linux_cpu())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _linux_cpu() -> dict[str, Any]:
    """The CPU's model name, flags of note and L3 size where Linux says them (nothing elsewhere)."""
    found: dict[str, Any] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and "cpu_model" not in found:
            found["cpu_model"] = value.strip()
        elif key.strip() == "flags" and "cpu_flags_of_note" not in found:
            flags = set(value.split())
            found["cpu_flags_of_note"] = [f for f in CPU_FLAGS_OF_NOTE if f in flags]
    try:
        found["l3_cache"] = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        pass
    return found


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
