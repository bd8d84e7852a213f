"""``shortcutlm bench model``: every decoder variant side by side at one stated config.

All variants live in one process and their steps are interleaved (variant A step, variant B
step, ...) so that drift in the machine's speed hits them all alike; figures are medians.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from typing import Any

import torch

from shortcutlm.bench.common import machine, matmul_peak_flops, median, not_judged, target, timed, write_json
from shortcutlm.compat.torch_memory import peak_step_bytes
from shortcutlm.core.allocator import keep_freed_memory
from shortcutlm.core.formatting import count, nbytes, param_count
from shortcutlm.core.formatting import text_table as table
from shortcutlm.core.devices import default_device
from shortcutlm.models import GPT, GPTConfig, SamplingSettings, flops_per_token, generate, stream_losses
from shortcutlm.models.optim import adamw
from shortcutlm.models.packed import packing_pays

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "resformer": {"value_residual": "resformer"},
    "learnable": {"value_residual": "learnable"},
    "svformer": {"value_residual": "svformer"},
    "shortcut_depth": {"shortcut": "depth"},
    "shortcut_full": {"shortcut": "full"},
    "shortcut_last_layer": {"shortcut": "last_layer"},
    "depth_resformer": {"shortcut": "depth", "value_residual": "resformer"},
}

#: The stated config: the sizes the targets were set for (and the command's defaults).
STATED: dict[str, int] = {"layers": 6, "width": 384, "heads": 6, "context": 512, "vocab": 2048, "batch": 8,
                          "new_tokens": 256}
NOT_JUDGED = ("target set for 6 layers x 384 (6 heads) at context 512, vocab 2048, batch 8, 256 new tokens; "
              "not judged at this size")


def default_config(args: argparse.Namespace | None = None) -> GPTConfig:
    """The benchmark's stated config: 6 layers, width 384, 6 heads, context 512 (vocab 2048)."""
    a = args or argparse.Namespace(**STATED)
    return GPTConfig(vocab_size=a.vocab, n_layer=a.layers, n_head=a.heads, n_embd=a.width, block_size=a.context)


class Trainee:
    """One variant with its optimiser and a fixed batch; ``step`` is forward, backward, AdamW."""

    def __init__(self, config: GPTConfig, batch: int, device: str, dtype: torch.dtype, seed: int = 0,
                 compile: bool = False) -> None:
        keep_freed_memory()  # as training does (core.allocator)
        torch.manual_seed(seed)
        self.config = config
        self.model = GPT(config).to(device)
        self.forward = torch.compile(self.model) if compile else self.model  # what ``train.compile`` does
        self.opt = adamw(self.model.param_groups(0.1), device, 3e-4, (0.9, 0.95))
        shape = (batch, config.block_size + 1) if config.n_streams == 1 else \
            (batch, config.n_streams, config.block_size + 1)
        self.idx = torch.randint(0, config.vocab_size, shape, device=device)
        self.device, self.dtype = device, dtype

    def decodes_packed(self) -> bool:
        """Whether this trainee's generation reads packed weights (``models.packed``: measured per model;
        never under the bf16 autocast its generation runs in)."""
        return self.dtype == torch.float32 and packing_pays(self.model)

    def targets(self) -> torch.Tensor:
        """What the loss predicts: every next id."""
        return self.idx[..., 1:]

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(self.device).type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            loss = stream_losses(self.forward(self.idx[..., :-1]), self.targets()).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return float(loss.detach())


class PairedTrainee(Trainee):
    """The baseline on paired sequences (``train.target_only``): each row a source, a task marker at half the
    context, then the target, with the loss on the target only (the mask training builds from the ids)."""

    def __init__(self, config: GPTConfig, batch: int, device: str, dtype: torch.dtype, seed: int = 0) -> None:
        super().__init__(config, batch, device, dtype, seed)
        marker, end = config.vocab_size - 1, config.vocab_size - 2  # a task marker opens a target, EOS closes it
        self.idx[self.idx >= end] = 0
        self.idx[..., config.block_size // 2] = marker
        self.spans = ([marker], [end])

    def targets(self) -> torch.Tensor:
        """The next ids after a task marker only (computed each step, as training does from its batch)."""
        from shortcutlm.models.losses import targets_only

        return targets_only(self.idx, *self.spans)


def measure_training(trainees: dict[str, Trainee], steps: int, warmup: int) -> dict[str, list[float]]:
    """Interleaved step times per variant (seconds)."""
    for _ in range(warmup):
        for t in trainees.values():
            t.step()
    times: dict[str, list[float]] = {name: [] for name in trainees}
    for _ in range(steps):
        for name, t in trainees.items():
            times[name].append(timed(t.step, t.device))
    return times


def interleaved_step_seconds(configs: dict[str, GPTConfig], batch: int, steps: int, warmup: int = 2,
                             device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, list[float]]:
    """Train-step seconds of each config, all in this process with their steps interleaved
    (``dtype``: the autocast dtype, as the runs trained).

    Step times taken in separate runs on a shared machine swing by several times; side by
    side, a slowdown hits every config alike and their ratios stay meaningful.
    """
    trainees = {name: Trainee(config, batch, device, dtype) for name, config in configs.items()}
    return measure_training(trainees, steps, warmup)


def measure_generation(model: GPT, new_tokens: int, use_cache: bool, device: str, compile: bool = False,
                       prompt_tokens: int = 16) -> float:
    """Generated tokens per second from a ``prompt_tokens`` prompt (batch 1; the prompt's prefill counted in
    the time); ``compile``: the compiled chunks of steps (``generate(compile=True)``)."""
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_tokens), device=device)
    settings = SamplingSettings(temperature=1.0, top_k=50, seed=0)
    seconds = timed(lambda: generate(model, prompt, new_tokens, settings, use_cache=use_cache, compile=compile),
                    device)
    return new_tokens / seconds


def training_tokens_per_second(steps: int = 3, device: str = "cpu") -> float:
    """Tokens per second the baseline trains at in the default config (what a loader must feed)."""
    trainee = Trainee(default_config(), 8, device, torch.float32)
    times = measure_training({"baseline": trainee}, steps, 1)["baseline"]
    return 8 * trainee.config.block_size / median(times)


def add_size_arguments(parser: argparse.ArgumentParser, steps: int = 5, warmup: int = 1) -> None:
    """The stated benchmark config and timing options, shared by the speed benchmarks."""
    parser.add_argument("--json", metavar="FILE", help="write the figures here as JSON")
    parser.add_argument("--layers", type=int, default=STATED["layers"])
    parser.add_argument("--width", type=int, default=STATED["width"])
    parser.add_argument("--heads", type=int, default=STATED["heads"])
    parser.add_argument("--context", type=int, default=STATED["context"])
    parser.add_argument("--vocab", type=int, default=STATED["vocab"])
    parser.add_argument("--batch", type=int, default=STATED["batch"])
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per variant (after warmup)")
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--device", default=default_device())


def configure(parser: argparse.ArgumentParser) -> None:
    add_size_arguments(parser)
    parser.add_argument("--new-tokens", type=int, default=STATED["new_tokens"])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--joint-vocab", type=int, default=None, metavar="V",
                        help="also step the baseline at a joint model's vocabulary V (e.g. 3557 for the tiny "
                             "multimodal recipe) and report it beside the single-domain one")
    parser.add_argument("--paired", action="store_true",
                        help="also step the baseline on paired sequences (a source, a task marker at half the "
                             "context, the target; loss on the target only) and generate a target after a "
                             "source of half the context, beside the single-domain baseline")
    parser.add_argument("--compiled-decoding", action="store_true",
                        help="also time every variant's generation through compiled chunks (generate --compile; "
                             "each variant compiles first, about a minute on a CPU) and check it decodes the "
                             "ids eager decoding does")


def at_stated_size(args: argparse.Namespace) -> bool:
    """Whether this run measures the sizes the speed targets were set for."""
    return all(getattr(args, name) == value for name, value in STATED.items())


def summary(result: dict[str, Any]) -> list[str]:
    """The terminal's view of a result: the setup in one line, one row per variant."""
    s, out = result["setup"], result["variants"]
    ratios = result.get("step_time_ratio_to_baseline", {})
    rows = []
    for name, v in out.items():
        cache = nbytes(v["kv_cache_bytes_full_context"])
        extra = v["kv_cache_bytes_with_shortcut_features"] - v["kv_cache_bytes_full_context"]
        rows.append([name, param_count(v["parameters"]), f"{v['train_step_seconds_median'] * 1000:.1f}",
                     f"{ratios[name]:.3f}" if name in ratios else "-", count(v["tokens_per_second"]),
                     f"{v['mfu']:.1%}", nbytes(v["peak_train_step_bytes"]),
                     cache + (f" +{nbytes(extra)}" if extra else ""),
                     f"{v['generate_tokens_per_second_cached']:.0f}", f"{v['generate_tokens_per_second_uncached']:.0f}",
                     f"{v['cache_speedup']:.1f}x"])
    head = (f"bench model: {s['layers']} layers x {s['width']} ({s['heads']} heads), context {s['context']}, "
            f"vocab {s['vocab']}, batch {s['batch']}, {s['dtype']} on {s['device']}; "
            f"median of {s['timed_steps']} steps, {s['new_tokens']} generated tokens")
    return [head, *table(["variant", "params", "step ms", "x baseline", "tokens/s", "MFU", "peak step", "KV cache",
                          "gen tok/s cached", "uncached", "cache gain"], rows),
            "peak step: the memory one training step holds (weights, gradients, AdamW state, activations); "
            "KV cache: keys and values at full context, batch 1 (+ the shortcut's cached depth features)",
            *_joint_lines(result.get("joint")), *_paired_lines(result.get("paired")), *_compiled_lines(out)]


def _compiled_lines(out: dict[str, Any]) -> list[str]:
    compiled = {n: v for n, v in out.items() if "generate_tokens_per_second_compiled" in v}
    if not compiled:
        return []
    return ["compiled chunks (generate --compile), tokens/s and over eager: " + ", ".join(
        f"{n} {v['generate_tokens_per_second_compiled']:.0f} ({v['compiled_over_eager']:.2f}x"
        f"{'' if v['compiled_ids_equal_eager'] else ', ids differ'})" for n, v in compiled.items())]


def _joint_lines(j: dict[str, Any] | None) -> list[str]:
    if not j:
        return []
    peak = f", peak step memory {nbytes(j['joint_peak_step_bytes'])} against {nbytes(j['single_peak_step_bytes'])}"
    joint_ms, single_ms = j["joint_step_seconds_median"] * 1000, j["single_step_seconds_median"] * 1000
    return [f"joint vocabulary {j['joint_vocab']} against {j['single_vocab']}: {param_count(j['joint_parameters'])} "
            f"against {param_count(j['single_parameters'])} parameters, step {joint_ms:.1f} against "
            f"{single_ms:.1f} ms ({j['step_time_ratio']:.3f}x){peak}, generation "
            f"{j['joint_generate_tokens_per_second']:.0f} tokens/s"]


def _paired_lines(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    return [f"paired (loss on targets, a source of {p['source_tokens']} tokens): step "
            f"{p['paired_step_seconds_median'] * 1000:.1f} against {p['single_step_seconds_median'] * 1000:.1f} ms "
            f"({p['step_time_ratio']:.3f}x), peak step memory {nbytes(p['paired_peak_step_bytes'])}; a target after "
            f"its source {p['generate_tokens_per_second_after_source']:.0f} tokens/s (prefill counted)"]


JOINT = "joint_baseline"
PAIRED = "paired_baseline"


def _peak_step_bytes(trainee: Trainee) -> int:
    """Peak memory of one training step: the allocator's count on a GPU; on a CPU, which keeps none,
    torch's memory tracker (every tensor the step holds: weights, gradients, AdamW state, activations)."""
    if torch.device(trainee.device).type != "cuda":
        return peak_step_bytes(trainee.step, trainee.model, trainee.opt)["Total"]
    torch.cuda.synchronize(trainee.device)
    torch.cuda.reset_peak_memory_stats(trainee.device)
    trainee.step()
    torch.cuda.synchronize(trainee.device)
    return int(torch.cuda.max_memory_allocated(trainee.device))


def _joint_figures(trainees: dict[str, Trainee], times: dict[str, list[float]], new_tokens: int) -> dict[str, Any]:
    """The joint configuration beside the single-domain baseline: the same decoder with a larger
    embedding and output layer, so its step should cost what the baseline's does plus those."""
    single, joint = trainees["baseline"], trainees[JOINT]
    figures: dict[str, Any] = {"single_vocab": single.config.vocab_size, "joint_vocab": joint.config.vocab_size,
               "single_parameters": single.model.num_params(), "joint_parameters": joint.model.num_params(),
               "single_step_seconds_median": median(times["baseline"]),
               "joint_step_seconds_median": median(times[JOINT]),
               "joint_step_seconds_all": times[JOINT],
               "single_peak_step_bytes": _peak_step_bytes(single), "joint_peak_step_bytes": _peak_step_bytes(joint)}
    figures["step_time_ratio"] = figures["joint_step_seconds_median"] / figures["single_step_seconds_median"]
    figures["joint_generate_tokens_per_second"] = _generation(joint, new_tokens)
    return figures


def _generation(trainee: Trainee, new_tokens: int, prompt_tokens: int = 16, use_cache: bool = True,
                compile: bool = False) -> float:
    """Tokens per second ``trainee``'s model generates, in eval mode under the trainee's autocast."""
    model = trainee.model.eval()
    with torch.autocast(torch.device(trainee.device).type, dtype=trainee.dtype, enabled=trainee.dtype != torch.float32):
        rate = measure_generation(model, new_tokens, use_cache, trainee.device, compile, prompt_tokens)
    model.train()
    return rate


def _compiled_figures(trainee: Trainee, new_tokens: int, eager: float) -> dict[str, Any]:
    """Generation through compiled chunks beside the eager rate: the compile's own time (a first,
    short generation), the rate after it, and whether both loops decode the same ids."""
    started = time.perf_counter()
    _generation(trainee, min(8, new_tokens), compile=True)
    compile_s = time.perf_counter() - started
    rate = _generation(trainee, new_tokens, compile=True)
    model = trainee.model.eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, 16), device=trainee.device)
    settings = SamplingSettings(temperature=1.0, top_k=50, seed=0)
    same = torch.equal(generate(model, prompt, new_tokens, settings, compile=True),
                       generate(model, prompt, new_tokens, settings))
    model.train()
    return {"generate_tokens_per_second_compiled": rate, "compiled_over_eager": rate / eager,
            "compile_seconds": compile_s, "compiled_ids_equal_eager": same,
            "packed_weights": trainee.decodes_packed()}


def _paired_figures(trainees: dict[str, Trainee], times: dict[str, list[float]], new_tokens: int) -> dict[str, Any]:
    """The paired configuration beside the single-domain baseline: the same model, its loss on the targets
    only, and a target generated after a source of half the context (what ``generate --task`` does)."""
    paired = trainees[PAIRED]
    source = paired.config.block_size // 2
    figures: dict[str, Any] = {
        "source_tokens": source, "single_step_seconds_median": median(times["baseline"]),
        "paired_step_seconds_median": median(times[PAIRED]), "paired_step_seconds_all": times[PAIRED],
        "paired_peak_step_bytes": _peak_step_bytes(paired),
        "generate_tokens_per_second_after_source": _generation(paired, min(new_tokens, source - 1), source)}
    figures["step_time_ratio"] = figures["paired_step_seconds_median"] / figures["single_step_seconds_median"]
    return figures


def _variant_figures(trainee: Trainee, times: list[float], args: argparse.Namespace, peak: float,
                     tokens_per_step: int) -> dict[str, Any]:
    """One variant's row: step time, MFU, peak step memory, its cache (measured and in closed form) and
    generation speed with and without the cache."""
    memory = _peak_step_bytes(trainee)
    model, cfg = trainee.model, trainee.config
    step = median(times)
    n_params = model.num_params()
    cache = model.new_cache(1)
    cached = _generation(trainee, args.new_tokens)
    uncached = _generation(trainee, args.new_tokens, use_cache=False)
    tps = tokens_per_step / step
    return {
        "config": {k: v for k, v in cfg.to_dict().items() if k in ("value_residual", "shortcut")},
        "parameters": n_params,
        "train_step_seconds_median": step,
        "train_step_seconds_all": times,
        "tokens_per_second": tps,
        "mfu": tps * flops_per_token(cfg, n_params) / peak,
        "peak_train_step_bytes": memory,
        "kv_cache_bytes_full_context": cache.attention_nbytes(),
        "kv_cache_bytes_with_shortcut_features": cache.nbytes(),
        # The closed form (GPTConfig.kv_cache_bytes) beside the measurement: a user plans with it.
        "kv_cache_bytes_formula": sum(cfg.kv_cache_bytes(1, cfg.block_size, cache.keys[0].element_size())),
        "generate_tokens_per_second_cached": cached,
        "generate_tokens_per_second_uncached": uncached,
        "cache_speedup": cached / uncached,
        **(_compiled_figures(trainee, args.new_tokens, cached) if args.compiled_decoding else {}),
    }


def _targets(out: dict[str, Any], n_layer: int, stated: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """Step-time ratios to the baseline and the targets judged on them (speed at the stated size only)."""
    b = out["baseline"]
    ratios = {n: v["train_step_seconds_median"] / b["train_step_seconds_median"] for n, v in out.items()}
    targets: dict[str, Any] = {}

    def sized(t: dict[str, Any]) -> dict[str, Any]:
        """Speed targets hold at the stated sizes only; elsewhere they are shown, not judged."""
        return t if stated else not_judged(t, NOT_JUDGED)

    for n, bound in (("resformer", 1.03), ("learnable", 1.03), ("shortcut_depth", 1.05)):
        if n in ratios:
            targets[f"{n}_step_ratio"] = sized(target(round(ratios[n], 4), bound, "<="))
    if "svformer" in out:
        L = n_layer
        measured = out["svformer"]["kv_cache_bytes_full_context"] / b["kv_cache_bytes_full_context"]
        targets["svformer_cache_fraction"] = target(measured, (L + 1) / (2 * L), "==")
        exact = math.isclose(measured, (L + 1) / (2 * L), rel_tol=0, abs_tol=0)
        targets["svformer_cache_fraction"]["exact"] = exact
        # (L+1)/(2L) is the design's fraction at every depth: judged at any size.
    for n, v in out.items():
        targets[f"{n}_cache_speedup"] = sized(target(round(v["cache_speedup"], 2), 5.0, ">="))
    return ratios, targets


def run(args: argparse.Namespace) -> int:
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    base = default_config(args)
    trainees = {n: Trainee(replace(base, **VARIANTS[n]), args.batch, args.device, dtype) for n in names}
    joint = None
    if args.joint_vocab:  # a joint model's vocabulary, the rest alike: stepped in turn with the others
        if "baseline" not in trainees:
            raise SystemExit("--joint-vocab compares with the baseline variant; include it in --variants")
        joint = Trainee(replace(base, vocab_size=args.joint_vocab), args.batch, args.device, dtype)
        trainees[JOINT] = joint
    if args.paired:  # the baseline on paired sequences, loss on targets: stepped in turn with the others
        if "baseline" not in trainees:
            raise SystemExit("--paired compares with the baseline variant; include it in --variants")
        trainees[PAIRED] = PairedTrainee(base, args.batch, args.device, dtype)
    times = measure_training(trainees, args.steps, args.warmup)
    joint_figures = _joint_figures(trainees, times, args.new_tokens) if joint is not None else None
    paired_figures = _paired_figures(trainees, times, args.new_tokens) if args.paired else None
    trainees.pop(JOINT, None)
    trainees.pop(PAIRED, None)
    peak = matmul_peak_flops(args.device, dtype)
    tokens_per_step = args.batch * base.block_size
    out = {name: _variant_figures(trainee, times[name], args, peak, tokens_per_step)
           for name, trainee in trainees.items()}
    result: dict[str, Any] = {
        "benchmark": "model",
        "machine": machine(),
        "setup": {"layers": base.n_layer, "width": base.n_embd, "heads": base.n_head, "context": base.block_size,
                  "vocab": base.vocab_size, "batch": args.batch, "dtype": args.dtype, "device": args.device,
                  "timed_steps": args.steps, "warmup_steps": args.warmup, "new_tokens": args.new_tokens,
                  "flops_per_token": "6N + 12·L·d·T (nanoGPT), + shortcut attention terms",
                  "matmul_peak_flops": peak},
        "variants": out,
    }
    if joint_figures is not None:
        result["joint"] = joint_figures
    if paired_figures is not None:
        result["paired"] = paired_figures
    if "baseline" in out:
        result["step_time_ratio_to_baseline"], result["targets"] = _targets(out, base.n_layer, at_stated_size(args))
    write_json(result, args.json, summary(result))
    return 0
