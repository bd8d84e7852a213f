"""``shortcutlm bench mfu``: training speed against the machine's own matrix-product peak.

MFU = tokens/s × FLOPs per token ÷ peak FLOP/s, with FLOPs per token = 6N + 12·L·d·T
(nanoGPT's estimate: forward + backward of the weights, plus attention scores and values;
``shortcutlm.models.flops_per_token``) and the peak measured here as the best large
matrix product in the same dtype. fp32 and bf16 autocast run interleaved in one process.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

from shortcutlm.bench.common import machine, matmul_peak_flops, median, target, timed, write_json
from shortcutlm.bench.model import Trainee, add_size_arguments, count, default_config, table
from shortcutlm.models import flops_per_token

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def configure(parser: argparse.ArgumentParser) -> None:
    add_size_arguments(parser, steps=5, warmup=2)
    parser.add_argument("--peak-size", type=int, default=4096, help="square matmul size for the peak")


def summary(result: dict[str, Any]) -> list[str]:
    """The terminal's view: the setup in one line, one row per dtype."""
    s = result["setup"]
    rows = [[name, f"{r['train_step_seconds_median'] * 1000:.1f}", count(r["tokens_per_second"]),
             count(r["achieved_flops"]), count(r["matmul_peak_flops"]), f"{r['mfu']:.1%}"]
            for name, r in result["results"].items()]
    return [f"bench mfu: {s['layers']} layers x {s['width']} ({s['heads']} heads), context {s['context']}, "
            f"vocab {s['vocab']}, batch {s['batch']}, {count(s['parameters'])} parameters",
            *table(["dtype", "step ms", "tokens/s", "FLOP/s", "peak FLOP/s", "MFU"], rows),
            f"bf16 over fp32: {result['bf16_speedup_tokens_per_second']:.2f}x tokens/s"]


def run(args: argparse.Namespace) -> int:
    config = default_config(args)
    trainees = {name: Trainee(config, args.batch, args.device, dtype) for name, dtype in DTYPES.items()}
    for _ in range(args.warmup):
        for t in trainees.values():
            t.step()
    times: dict[str, list[float]] = {name: [] for name in trainees}
    for _ in range(args.steps):
        for name, t in trainees.items():
            times[name].append(timed(t.step, args.device))
    n_params = trainees["fp32"].model.num_params()
    fpt = flops_per_token(config, n_params)
    tokens = args.batch * config.block_size
    out: dict[str, Any] = {}
    for name, dtype in DTYPES.items():
        peak = matmul_peak_flops(args.device, dtype, size=args.peak_size)
        tps = tokens / median(times[name])
        out[name] = {"matmul_peak_flops": peak, "train_step_seconds_median": median(times[name]),
                     "train_step_seconds_all": times[name], "tokens_per_second": tps,
                     "achieved_flops": tps * fpt, "mfu": tps * fpt / peak}
    speedup = out["bf16"]["tokens_per_second"] / out["fp32"]["tokens_per_second"]
    result = {
        "benchmark": "mfu",
        "machine": machine(),
        "setup": {"layers": config.n_layer, "width": config.n_embd, "heads": config.n_head,
                  "context": config.block_size, "vocab": config.vocab_size, "batch": args.batch,
                  "parameters": n_params, "flops_per_token": fpt,
                  "flops_formula": "6N + 12·L·d·T (N = all parameters, embeddings included)",
                  "bf16": "torch.autocast(bfloat16) around forward and loss; fp32 weights and AdamW"},
        "results": out,
        "bf16_speedup_tokens_per_second": speedup,
        "targets": {"fp32_mfu": target(round(out["fp32"]["mfu"], 4), 0.55, ">="),
                    "bf16_over_fp32_tokens_per_second": target(round(speedup, 3), 1.7, ">=")},
    }
    write_json(result, args.json, summary(result))
    return 0
