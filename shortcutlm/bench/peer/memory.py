"""Peak memory of each model, one fresh subprocess per model and phase (train, generate)."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from shortcutlm.bench.peer.config import IMPLEMENTATIONS
from shortcutlm.bench.peer.models import make_trainee
from shortcutlm.bench.peer.timing import generation_rate
from shortcutlm.models import GPTConfig

PHASES = ("train", "generate")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_method(device: str) -> str:
    if torch.device(device).type == "cuda":
        return ("torch.cuda.max_memory_allocated growth over the allocation before the phase, each model and phase "
                "in a fresh subprocess")
    return ("peak RSS growth (VmHWM after the phase minus VmRSS before it, VmHWM reset through /proc/self/clear_refs) "
            "in a fresh subprocess per model and phase; train = building the model and AdamW plus 2 steps; "
            "generate = one cached generation with the model already built (weights excluded)")


def memory_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of one phase of one model in this process (meant to run in a fresh one)."""
    device, cuda = spec["device"], torch.device(spec["device"]).type == "cuda"
    dtype = torch.bfloat16 if spec["dtype"] == "bf16" else torch.float32
    config = GPTConfig.from_dict(spec["config"])

    def start() -> int:
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        _reset_peak_rss()
        return _status_kib("VmRSS") * 1024

    def peak() -> int:
        if cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return _status_kib("VmHWM") * 1024

    if spec["phase"] == "train":
        base = start()
        trainee = make_trainee(spec["impl"], config, spec["batch"], device, dtype, 0, spec["init"],
                               spec.get("flash", True))
        for _ in range(2):
            trainee.step()
        return {"bytes": peak() - base}
    trainee = make_trainee(spec["impl"], config, 1, device, dtype, 0, spec["init"], spec.get("flash", True))
    model = trainee.model.eval()
    del trainee
    base = start()
    with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
        generation_rate(spec["impl"], model, spec["new_tokens"], device)
    return {"bytes": peak() - base}


def measure_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``memory_probe`` in a fresh interpreter; its last stdout line is the JSON answer."""
    code = ("import json, sys; from shortcutlm.bench.peer.memory import memory_probe; "
            "print(json.dumps(memory_probe(json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed for {spec['impl']} {spec['phase']}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_memories(configs: dict[str, GPTConfig], batch: int, device: str, dtype: str, new_tokens: int, init: str,
                  flash: bool) -> dict[str, dict[str, int]]:
    """``{"variant/impl": {phase: bytes}}``, each model and phase measured in a fresh subprocess."""
    memory: dict[str, dict[str, int]] = {}
    for v, config in configs.items():
        for impl in IMPLEMENTATIONS:
            spec = {"impl": impl, "config": config.to_dict(), "batch": batch, "device": device, "dtype": dtype,
                    "new_tokens": new_tokens, "init": init, "flash": flash}
            memory[f"{v}/{impl}"] = {phase: measure_memory({**spec, "phase": phase})["bytes"] for phase in PHASES}
    return memory
