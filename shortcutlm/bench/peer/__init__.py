"""``shortcutlm bench peer``: our decoder beside x-transformers' decoder of the same size.

x-transformers (Phil Wang's library, the ``bench`` extra) implements the ResFormer value
residual as ``add_value_residual``, so it is the natural peer. For the plain decoder and for
the value-residual one, in one process, this measures:

* train-step time (forward, backward, gradient clipping, AdamW), ours and theirs
  interleaved step by step on the same fixed batch (``bench.model.measure_training``);
* cached generation speed: batch 1, 16-token prompt, 256 new tokens, top-k 50,
  temperature 1, both with their own KV cache, interleaved and repeated, medians;
* peak memory: each model in a fresh subprocess (peak RSS growth on CPU, read from
  ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; ``max_memory_allocated``
  growth on GPU), once for training steps and once for a cached generation;
* validation loss after the same number of steps on the same bach_chorales shards: one
  loader per seed feeds the same batches to all four models, same AdamW settings and
  warmup + cosine schedule, then the exact validation pass (pad targets masked); mean ± std
  over seeds.

Before timing, an equivalence check copies our initial weights into the peer (rotary
pairing permuted, see ``copy_weights_``) and compares logits: the peer is configured to be
the same function, and the ``differences`` list in the JSON names what still differs.

The package, one job a module; this module is the command (``configure``, ``run``), and
``run`` is its phases in order, each saved for ``--resume`` when it finishes:

* ``config``  what is compared, the goals, the list of remaining differences;
* ``models``  both models built by one function, our weights copied into theirs, the logit check;
* ``timing``  interleaved generation timing (train steps: ``bench.model.measure_training``);
* ``memory``  peak memory, one fresh subprocess per model and phase;
* ``loss``    the multi-seed validation-loss phase on prepared shards;
* ``bounds``  the machine's floors and the ratios they make attainable;
* ``resume``  the finished phases, kept in ``FILE.partial``;
* ``report``  ratios and targets, the JSON result, the terminal summary.
"""
from __future__ import annotations

import argparse
import functools
import gc
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from shortcutlm.bench.common import write_json
from shortcutlm.bench.model import Trainee, default_config, measure_training
from shortcutlm.bench.peer.bounds import attainable, floors, weight_read_seconds
from shortcutlm.bench.peer.config import (GENERATION_RATIO_TARGET, IMPLEMENTATIONS, INITS, PARAM_TOLERANCE,
                                          PROMPT_TOKENS, STEP_RATIO_TARGET, TOP_K, VARIANTS, differences,
                                          peer_missing, peer_version, variant_names)
from shortcutlm.bench.peer.loss import (default_shards, loss_comparison, loss_seed, prepare_chorales,
                                        summarise_losses, train_step, validation_loss)
from shortcutlm.bench.peer.memory import measure_memory, memory_method, memory_probe, peak_memories
from shortcutlm.bench.peer.models import (PeerTrainee, copy_weights_, equivalence, gpt2_init_, make_trainee,
                                          num_params, peer_model, peer_param_groups, rotary_permutation)
from shortcutlm.bench.peer.report import compare, log, result, summary
from shortcutlm.bench.peer.resume import Progress
from shortcutlm.bench.peer.timing import generation_rate, measure_generations, measure_peer_generation, timing_rows
from shortcutlm.core.devices import default_device
from shortcutlm.models import GPTConfig, flops_per_token

# What this module offers: the command, and (for tests and older imports) the jobs' names.
__all__ = [
    "GENERATION_RATIO_TARGET", "IMPLEMENTATIONS", "INITS", "PARAM_TOLERANCE", "PROMPT_TOKENS", "STEP_RATIO_TARGET",
    "TOP_K", "VARIANTS", "PeerTrainee", "Progress", "attainable", "configure", "copy_weights_", "default_config",
    "default_shards", "differences", "equivalence", "floors", "flops_per_token", "generation_rate", "gpt2_init_",
    "loss_comparison", "loss_seed", "make_trainee", "measure_generations", "measure_memory",
    "measure_peer_generation", "measure_training", "memory_method", "memory_probe", "num_params", "peer_missing",
    "peer_model", "peer_param_groups", "peer_version", "prepare_chorales", "rotary_permutation", "run",
    "summarise_losses", "summary", "train_step", "validation_loss", "weight_read_seconds",
]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write the figures here as JSON")
    sizes = parser.add_argument_group("sizes (the model benchmark's defaults)")
    sizes.add_argument("--layers", type=int, default=6)
    sizes.add_argument("--width", type=int, default=384)
    sizes.add_argument("--heads", type=int, default=6)
    sizes.add_argument("--context", type=int, default=512)
    sizes.add_argument("--vocab", type=int, default=2048, help="vocabulary for the timing (the loss uses the shards')")
    sizes.add_argument("--batch", type=int, default=8)
    timing = parser.add_argument_group("timing")
    timing.add_argument("--steps", type=int, default=8, help="timed train steps per model (after warmup)")
    timing.add_argument("--warmup", type=int, default=3,
                        help="untimed steps per model first: x-transformers' first steps run ~25%% slow, which "
                             "one warm-up step does not absorb")
    timing.add_argument("--new-tokens", type=int, default=256)
    timing.add_argument("--generation-repeats", type=int, default=3)
    timing.add_argument("--compiled-decoding", action="store_true",
                        help="also time our generation through the compiled chunks of steps "
                             "(generate(compile=True); compiling takes tens of seconds per model)")
    timing.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    timing.add_argument("--device", default=default_device())
    timing.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ",".join(VARIANTS))
    timing.add_argument("--skip-memory", action="store_true", help="no peak-memory subprocesses")
    loss = parser.add_argument_group("validation loss")
    loss.add_argument("--loss-steps", type=int, default=200, help="training steps per model (0 skips the loss phase)")
    loss.add_argument("--seeds", type=int, default=2)
    loss.add_argument("--lr", type=float, default=1e-3)
    loss.add_argument("--min-lr", type=float, default=1e-4)
    loss.add_argument("--lr-warmup", type=int, default=20, help="linear warmup steps before the cosine decay")
    loss.add_argument("--weight-decay", type=float, default=0.1)
    loss.add_argument("--data", metavar="DIR", help="prepared shards to use (default: bach_chorales, prepared once "
                                                     "under $SHORTCUTLM_CACHE/peer/ and reused)")
    loss.add_argument("--chorales", type=int, default=None, help="how many chorales to prepare (default all)")
    loss.add_argument("--midi-vocab", type=int, default=1000, help="MIDI tokenizer vocabulary when preparing")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the phases and loss seeds a stopped run with the same settings saved in "
                             "FILE.partial")
    parser.add_argument("--peer-attention", choices=["flash", "einsum"], default="flash",
                        help="flash: theirs attends through scaled_dot_product_attention as ours (default); "
                             "einsum: x-transformers' default attention path (attn_flash=False)")
    parser.add_argument("--peer-init", choices=INITS, default="gpt2",
                        help="gpt2: our init scheme on theirs (default); copy: theirs starts from our weights; "
                             "theirs: x-transformers' own init")

# --------------------------------------------------------------------------------------------
# The phases (each returns its saved result when --resume finds one)
# --------------------------------------------------------------------------------------------
def equivalence_phase(progress: Progress, configs: dict[str, GPTConfig], device: str, flash: bool) -> dict[str, Any]:
    """Per variant: our fresh model against the peer with our weights (largest logit difference)."""
    return progress.once("equivalence", "equivalence check (peer with our weights)",
                         lambda: {v: equivalence(c, device, flash=flash) for v, c in configs.items()})


def timing_phase(progress: Progress, args: argparse.Namespace, configs: dict[str, GPTConfig], dtype: torch.dtype,
                 flash: bool) -> dict[str, dict[str, Any]]:
    """Train steps, then cached generation, ours and theirs interleaved: ``{variant: {impl: row}}``."""
    def measure() -> dict[str, dict[str, Any]]:
        trainees: dict[str, Trainee] = {f"{v}/{impl}": make_trainee(impl, config, args.batch, args.device, dtype, 0,
                                                                    args.peer_init, flash)
                                        for v, config in configs.items() for impl in IMPLEMENTATIONS}
        times = measure_training(trainees, args.steps, args.warmup)
        log(f"timing cached generation ({args.new_tokens} tokens, {args.generation_repeats} interleaved repeats)")
        for t in trainees.values():
            t.opt.zero_grad(set_to_none=True)
        rates = measure_generations({n: (n.split("/")[1], t.model) for n, t in trainees.items()}, args.new_tokens,
                                    args.generation_repeats, args.device, dtype, args.compiled_decoding)
        models = timing_rows(trainees, times, rates, args.batch)
        del trainees
        gc.collect()
        return models

    return progress.once("timing", f"timing {args.steps} interleaved train steps per model", measure)


def memory_phase(progress: Progress, args: argparse.Namespace, configs: dict[str, GPTConfig],
                 models: dict[str, dict[str, Any]], flash: bool) -> None:
    """Peak memory per model and phase, filed under each model as ``peak_memory_bytes``."""
    memory = progress.once("memory", "peak memory (a fresh subprocess per model and phase)",
                           lambda: peak_memories(configs, args.batch, args.device, args.dtype, args.new_tokens,
                                                 args.peer_init, flash))
    for v in configs:
        for impl in IMPLEMENTATIONS:
            models[v][impl]["peak_memory_bytes"] = memory[f"{v}/{impl}"]


def floors_phase(progress: Progress, args: argparse.Namespace, base: GPTConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The step at 100% of the measured matmul peak, and one weight-read pass per decoded token."""
    return progress.once("floors", "floors: the measured matmul peak and one weight-read pass",
                         lambda: floors(base, args.batch, args.device, dtype))


def loss_phase(progress: Progress, args: argparse.Namespace, base: GPTConfig, names: list[str],
               models: dict[str, dict[str, Any]], dtype: torch.dtype, flash: bool) -> dict[str, Any]:
    """Every seed (each saved when done), summarised; filed under each model as ``val_loss``."""
    shard_dir = Path(args.data) if args.data else default_shards(args.chorales, args.midi_vocab)
    if not args.data:
        log(f"preparing bach_chorales shards in {shard_dir} (reused when already there)")
        prepare_chorales(shard_dir, args.chorales, args.midi_vocab)

    def one_seed(seed: int) -> dict[str, dict[str, Any]]:
        return loss_seed(shard_dir, base, names, args.loss_steps, seed, args.batch, args.lr, args.min_lr,
                         args.lr_warmup, args.weight_decay, args.peer_init, args.device, dtype, log, flash)

    per_seed = [progress.once(f"loss_seed_{seed}",
                              f"loss phase seed {seed}: {args.loss_steps} steps × {2 * len(names)} models "
                              f"on {shard_dir}",
                              functools.partial(one_seed, seed))
                for seed in range(args.seeds)]
    loss = summarise_losses(shard_dir, per_seed, names)
    loss["shards"] = str(shard_dir)
    for v in names:
        for impl in IMPLEMENTATIONS:
            models[v][impl]["val_loss"] = loss["models"][v][impl]
    return loss


def run(args: argparse.Namespace) -> int:
    missing = peer_missing()
    if missing:
        raise SystemExit(missing)
    names = variant_names(args.variants)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    base = default_config(args)
    configs = {v: replace(base, value_residual=VARIANTS[v]) for v in names}
    progress = Progress(args)
    flash = args.peer_attention == "flash"

    equal = equivalence_phase(progress, configs, args.device, flash)
    models = timing_phase(progress, args, configs, dtype, flash)
    if not args.skip_memory:
        memory_phase(progress, args, configs, models, flash)
    floor = floors_phase(progress, args, base, dtype)
    loss = loss_phase(progress, args, base, names, models, dtype, flash) if args.loss_steps > 0 else None

    ratios, targets = compare(names, models, equal, floor, loss)
    out = result(args, base, flash, models, floor, loss, ratios, targets)
    write_json(out, args.json, summary(out))
    progress.done()
    return 0
