"""The matmul peak (FLOP/s) that MFU divides by: measured, cached per machine, and only ever raised.

How it is measured: square matrix products in the training dtype on the training device, one
untimed warm-up per size, then ``trials`` timed products (each a few back-to-back products on
a GPU, so launch overhead does not count) at each of a couple of sizes; the peak is the
*fastest* trial. Best rather than median because other load on the machine only ever slows a
product down: the fastest trial is the closest to what the hardware can do.

Why a cache: one measurement taken while other processes run reads low, and an MFU against a
low peak exceeds 1. So the best figure seen on this machine is kept in
``$XDG_CACHE_HOME/shortcutlm/peak_flops.json`` (``~/.cache`` by default; ``SHORTCUTLM_CACHE``
names another folder), keyed by device, dtype, torch version and CPU thread count. Every
measurement, and every training step whose achieved FLOP/s beats it, raises the cached
figure; it never goes down. So a logged MFU is at most 1 and the peak only grows toward
the truth.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from shortcutlm.artifacts.files import jsonable, write_with
from shortcutlm.core.cache_dir import cache_root

log = logging.getLogger(__name__)

CACHE_FILE = "peak_flops.json"
TRIALS = 5
TRIAL_SECONDS = 0.01  # a GPU trial repeats the product until it takes about this long


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so wall-clock time measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def precision_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a Lightning precision string (``bf16-mixed`` multiplies in bfloat16)."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32


def cache_path() -> Path:
    """``$SHORTCUTLM_CACHE/peak_flops.json``, else under ``$XDG_CACHE_HOME/shortcutlm`` (``~/.cache``)."""
    return cache_root() / CACHE_FILE


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_key(device: torch.device | str, dtype: torch.dtype) -> str:
    """What a peak is a peak of: device name, dtype, torch version and (on CPU) the thread count.

    A float32 product on a GPU also depends on ``torch.get_float32_matmul_precision()`` (TF32).
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        extra = f"fp32 matmul {torch.get_float32_matmul_precision()}" if dtype == torch.float32 else ""
    else:
        name = f"{device.type} {_cpu_name()}"
        extra = f"{torch.get_num_threads()} threads"
    parts = [name, str(dtype).removeprefix("torch."), f"torch {torch.__version__}", extra]
    return " | ".join(p for p in parts if p)


def read_cache(path: Path | None = None) -> dict[str, Any]:
    """The cached peaks by :func:`device_key`; an unreadable cache counts as empty (it is only a cache)."""
    path = path or cache_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable peak cache (%s); it will be rewritten", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def cached_peak(key: str, path: Path | None = None) -> float | None:
    """The best FLOP/s recorded for ``key``, if any."""
    entry = read_cache(path).get(key)
    return float(entry["flops"]) if isinstance(entry, dict) and "flops" in entry else None


def record_peak(key: str, flops: float, source: str, details: dict[str, Any] | None = None,
                path: Path | None = None) -> float:
    """Raise the cached peak for ``key`` to ``flops`` if that beats it; return the peak now held.

    The file is re-read just before writing and replaced atomically, so processes sharing the
    cache (DDP ranks, parallel runs) never see half a file.
    """
    path = path or cache_path()
    cache = read_cache(path)
    old = cache.get(key)
    best = float(old["flops"]) if isinstance(old, dict) and "flops" in old else 0.0
    if flops <= best:
        return best
    cache[key] = {"flops": float(flops), "source": source, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  **(details or {})}
    text = json.dumps(jsonable(cache), indent=2, sort_keys=True).encode("utf-8")
    try:  # ranks and parallel runs share the file: each writes a temporary file of its own
        write_with(path, lambda fh: fh.write(text), shared=True)
    except OSError as err:  # a read-only home must not stop training
        log.warning("%s: cannot write the peak cache (%s)", path, err)
    return float(flops)


def default_sizes(device: torch.device | str) -> tuple[int, ...]:
    """Sizes large enough to reach the device's peak, small enough to cost well under a second."""
    if torch.device(device).type == "cuda":
        return (4096, 8192)
    return (1024, 2048) if torch.get_num_threads() > 4 else (512, 1024)


def matmul_rates(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 sizes: tuple[int, ...] | None = None, trials: int = TRIALS) -> list[float]:
    """FLOP/s of each timed trial: ``trials`` per size, after one untimed warm-up per size."""
    rates = []
    seeded = torch.Generator(device=device).manual_seed(0)  # leaves the global RNG (and training's seed) alone
    for size in sizes or default_sizes(device):
        a = torch.randn(size, size, device=device, dtype=dtype, generator=seeded)
        b = torch.randn(size, size, device=device, dtype=dtype, generator=seeded)
        sync(device)
        start = time.perf_counter()
        a @ b  # warm-up (kernel selection, allocation); also sizes a GPU trial
        sync(device)
        once = time.perf_counter() - start
        repeat = 1 if torch.device(device).type != "cuda" else max(1, min(100, int(TRIAL_SECONDS / max(once, 1e-6))))
        for _ in range(trials):
            sync(device)
            start = time.perf_counter()
            for _ in range(repeat):
                a @ b
            sync(device)
            rates.append(2 * size ** 3 * repeat / (time.perf_counter() - start))
    return rates


def measure_peak_flops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       sizes: tuple[int, ...] | None = None, trials: int = TRIALS) -> float:
    """A fresh measurement: the best of :func:`matmul_rates` (no cache involved)."""
    return max(matmul_rates(device, dtype, sizes, trials))


def machine_peak_flops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       path: Path | None = None) -> float:
    """The MFU denominator: a fresh measurement, raised to this machine's cached best (and caching it)."""
    sizes = default_sizes(device)
    rates = matmul_rates(device, dtype, sizes)
    details = {"sizes": list(sizes), "trials": TRIALS, "rates": [round(r) for r in rates]}
    return record_peak(device_key(device, dtype), max(rates), "matmul", details, path)


def observe_step(flops_per_s: float, peak: float, device: torch.device | str, dtype: torch.dtype) -> float:
    """The peak to divide by after a training step that achieved ``flops_per_s`` per device.

    A step that beats the peak proves the peak low: it becomes the new peak (cached for this
    machine), so MFU = achieved / peak never exceeds 1, and nothing is clamped or hidden.
    """
    if flops_per_s <= peak:
        return peak
    log.info("a training step reached %.3g FLOP/s, above the peak %.3g: raising the peak", flops_per_s, peak)
    return record_peak(device_key(device, dtype), flops_per_s, "training step")
