"""What a run says: progress lines on stderr, the ratios and targets, the JSON result and the
terminal's summary."""
from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from shortcutlm.bench.common import machine, target
from shortcutlm.core.formatting import count
from shortcutlm.core.formatting import text_table as table
from shortcutlm.bench.peer.bounds import MEANING as FLOORS_MEANING, attainable
from shortcutlm.bench.peer.config import (GENERATION_RATIO_TARGET, PROMPT_TOKENS, STEP_RATIO_TARGET, TOP_K,
                                          differences, peer_version)
from shortcutlm.bench.peer.memory import memory_method
from shortcutlm.models import GPTConfig


#: The decoding targets: ours (eager or compiled, whichever is faster) over theirs, by
#: (layers, width); elsewhere GENERATION_CEILING_SHARE of the ceiling the floors give.
DECODE_RATIO_TARGETS = {(6, 384): 2.3, (4, 256): 5.0}
GENERATION_CEILING_SHARE = 0.85
DECODE_SHARE_TARGET = 0.85


def base_size(row: dict[str, Any]) -> tuple[int, int]:
    return row.get("layers", 0), row.get("width", 0)


def log(message: str) -> None:
    print(f"[bench peer] {message}", file=sys.stderr, flush=True)


def compare(names: list[str], models: dict[str, dict[str, Any]], equal: dict[str, Any], floor: dict[str, Any],
            loss: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per variant: ours over theirs (and the attainable ratios), the targets judged on them; also
    files each variant's equivalence check under ``models[variant]``."""
    ratios: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    for v in names:
        ours, theirs = models[v]["ours"], models[v]["theirs"]
        r: dict[str, Any] = {
            "parameters_relative_difference": abs(ours["parameters"] - theirs["parameters"]) / theirs["parameters"],
            "step_time_ours_over_theirs": ours["train_step_seconds_median"] / theirs["train_step_seconds_median"],
            "generation_ours_over_theirs": (ours["generate_tokens_per_second_cached"]
                                            / theirs["generate_tokens_per_second_cached"]),
        }
        if "peak_memory_bytes" in ours:
            r["peak_memory_ours_over_theirs"] = {p: ours["peak_memory_bytes"][p]
                                                    / max(1, theirs["peak_memory_bytes"][p])
                                                 for p in ("train", "generate")}
        r.update(attainable(ours, theirs, floor))
        if "generate_tokens_per_second_cached_compiled" in ours:
            fast = ours["generate_tokens_per_second_cached_compiled"]
            r["generation_compiled_ours_over_theirs"] = fast / theirs["generate_tokens_per_second_cached"]
            r["our_decode_share_reading_weights_compiled"] = floor["decode_weight_read_seconds"] * fast
            best = max(r["generation_ours_over_theirs"], r["generation_compiled_ours_over_theirs"])
            targets[f"{v}_best_generation_ratio"] = {
                **target(round(best, 3), round(DECODE_RATIO_TARGETS.get(base_size(ours), GENERATION_CEILING_SHARE
                                                                        * r["generation_ratio_ceiling"]), 3), ">="),
                "attainable": round(r["generation_ratio_ceiling"], 3)}
            targets[f"{v}_best_generation_share_of_ceiling"] = target(
                round(best / r["generation_ratio_ceiling"], 3), GENERATION_CEILING_SHARE, ">=")
            targets[f"{v}_best_decode_share_reading_weights"] = target(
                round(max(r["our_decode_share_reading_weights"], r["our_decode_share_reading_weights_compiled"]), 3),
                DECODE_SHARE_TARGET, ">=")
        targets[f"{v}_step_time_ratio"] = {
            **target(round(r["step_time_ours_over_theirs"], 4), STEP_RATIO_TARGET, "<="),
            "attainable": round(r["step_time_ratio_floor"], 4)}
        targets[f"{v}_generation_ratio"] = {
            **target(round(r["generation_ours_over_theirs"], 3), GENERATION_RATIO_TARGET, ">="),
            "attainable": round(r["generation_ratio_ceiling"], 3)}
        if loss is not None:
            lo, lt = ours["val_loss"], theirs["val_loss"]
            spread = max(lo["val_loss_std"], lt["val_loss_std"])
            r["loss_phase_step_time_ours_over_theirs"] = lo["step_seconds_median"] / lt["step_seconds_median"]
            r["val_loss_ours_minus_theirs"] = lo["val_loss_mean"] - lt["val_loss_mean"]
            r["val_loss_seed_spread"] = spread
            targets[f"{v}_val_loss_no_worse"] = target(round(r["val_loss_ours_minus_theirs"], 4),
                                                       round(spread, 4), "<=")
        models[v]["equivalence"] = equal[v]
        ratios[v] = r
    return ratios, targets


def result(args: argparse.Namespace, base: GPTConfig, flash: bool, models: dict[str, Any], floor: dict[str, Any],
           loss: dict[str, Any] | None, ratios: dict[str, Any], targets: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: machine, peer, setup, floors, differences, per-model figures, ratios, targets."""
    return {
        "benchmark": "peer",
        "machine": machine(),
        "peer": {"package": "x-transformers", "version": peer_version(),
                 "build": "TransformerWrapper(Decoder(...)), AutoregressiveWrapper for generation"},
        "setup": {"layers": base.n_layer, "width": base.n_embd, "heads": base.n_head, "head_dim": base.head_dim,
                  "context": base.block_size, "vocab": base.vocab_size, "batch": args.batch, "dtype": args.dtype,
                  "device": args.device, "timed_steps": args.steps, "warmup_steps": args.warmup,
                  "timing": "ours and theirs interleaved step by step on one fixed random batch; medians",
                  "train_step": "forward, our cross-entropy, backward, clip 1.0, AdamW (lr 3e-4, β 0.9/0.95, wd 0.1)",
                  "generation": {"batch": 1, "prompt_tokens": PROMPT_TOKENS, "new_tokens": args.new_tokens,
                                 "top_k": TOP_K, "temperature": 1.0, "kv_cache": True,
                                 "repeats": args.generation_repeats, "interleaved": True},
                  "memory_method": None if args.skip_memory else memory_method(args.device),
                  "peer_init": args.peer_init, "peer_attention": args.peer_attention,
                  "loss": None if loss is None else {
                      "steps": args.loss_steps, "seeds": args.seeds, "batch": args.batch, "context": base.block_size,
                      "vocab": loss["vocab"], "shards": loss["shards"], "train_tokens": loss["train_tokens"],
                      "valid_tokens": loss["valid_tokens"], "lr": args.lr, "min_lr": args.min_lr,
                      "lr_warmup": args.lr_warmup,
                      "schedule": "linear warmup then cosine (models.lightning.warmup_cosine)",
                      "weight_decay": args.weight_decay, "betas": [0.9, 0.95], "clip": 1.0,
                      "batches": "one train_batches loader per seed (seed = the seed) "
                                 "feeds the same batch to every model",
                      "validation": "exact pass over the valid split (eval_batches), pad targets masked, "
                                    "token-weighted mean",
                      "spread": "sample std over seeds; ours passes when mean(ours) - mean(theirs) <= the larger std"},
                  "torch_threads": torch.get_num_threads()},
        "floors": {**floor, "meaning": FLOORS_MEANING},
        "differences": differences(args.peer_init, flash),
        "models": models,
        "ratios": ratios,
        "targets": targets,
    }


def summary(result: dict[str, Any]) -> list[str]:
    """The terminal's view: the setup in one line, one row per variant (ours over theirs)."""
    s, peer = result["setup"], result["peer"]
    rows = []
    for v, r in result["ratios"].items():
        ours = result["models"][v]["ours"]
        rows.append([v, count(ours["parameters"]), f"{r['step_time_ours_over_theirs']:.3f}",
                     f"{r['generation_ours_over_theirs']:.3f}",
                     (f"{r['peak_memory_ours_over_theirs']['train']:.3f}" if "peak_memory_ours_over_theirs" in r
                      else "-"),
                     f"{r['val_loss_ours_minus_theirs']:+.4f}" if "val_loss_ours_minus_theirs" in r else "-"])
    return [f"bench peer: ours against {peer['package']} {peer['version']}, {s['layers']} layers x {s['width']} "
            f"({s['heads']} heads), context {s['context']}, vocab {s['vocab']}, batch {s['batch']}, "
            f"{s['dtype']} on {s['device']}",
            *table(["variant", "params", "step time ours/theirs", "generation ours/theirs", "train memory ours/theirs",
                    "val loss ours-theirs"], rows)]
