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
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shortcutlm.bench.common import machine, matmul_peak_flops, median, target, timed, write_json
from shortcutlm.bench.model import Trainee, count, default_config, measure_generation, measure_training, table
from shortcutlm.models import GPT, GPTConfig, flops_per_token

#: Our ``value_residual`` setting per compared variant (theirs: ``add_value_residual``).
VARIANTS = {"plain": "none", "resformer": "resformer"}
IMPLEMENTATIONS = ("ours", "theirs")
#: Relative parameter-count difference the peer may have (it is configured to have none).
PARAM_TOLERANCE = 0.001
#: Goals from the issue.
STEP_RATIO_TARGET = 0.5
GENERATION_RATIO_TARGET = 3.0
#: What ``bench.model.measure_generation`` uses for ours; the peer gets the same.
PROMPT_TOKENS = 16
TOP_K = 50
INITS = ("gpt2", "copy", "theirs")
IGNORE = -100


def peer_missing() -> str | None:
    """Why the peer cannot be built here (``None`` when x-transformers imports)."""
    try:
        import x_transformers  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"x-transformers is not importable ({exc}); install the bench extra: pip install -e '.[bench]'"
    return None


def peer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("x-transformers")
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------
# The peer model
# --------------------------------------------------------------------------------------------
def peer_model(config: GPTConfig, init: str = "gpt2", flash: bool = True) -> nn.Module:
    """An x-transformers ``TransformerWrapper`` of our config's size and shape.

    ``init``: ``gpt2`` (our GPT-2 initialisation scheme, drawn from the current RNG), ``copy``
    (the same, to be overwritten by ``copy_weights_``) or ``theirs`` (x-transformers' own
    initialisation and its dim**-0.5 tied-logit scale, which belongs with that init).
    ``flash``: attention through ``F.scaled_dot_product_attention`` as ours does; ``False`` keeps
    x-transformers' default einsum attention (the same function, computed its own way).
    """
    from x_transformers import Decoder, TransformerWrapper

    if init not in INITS:
        raise ValueError(f"init={init!r}, expected one of {INITS}")
    if config.positions != "rope" or config.mlp != "gelu" or config.n_streams != 1 or config.shortcut != "none" \
            or config.value_residual not in VARIANTS.values() or config.n_kv_head not in (None, config.n_head) \
            or config.bias or not config.tie_embeddings or config.rope_base != 10000.0:
        raise ValueError("the peer is built for a one-stream RoPE (base 10000) GELU decoder without bias, shortcut or "
                         "GQA, with tied embeddings and value_residual none/resformer")
    ours_init = init != "theirs"
    decoder = Decoder(
        dim=config.n_embd, depth=config.n_layer, heads=config.n_head,
        attn_dim_head=config.head_dim,                 # theirs defaults to 64 whatever the width
        rotary_pos_emb=True, rotary_emb_dim=config.head_dim,  # theirs rotates half of each head by default
        attn_flash=flash,                              # F.scaled_dot_product_attention, as ours
        ff_mult=4, ff_no_bias=True,                    # 4x GELU MLP without biases (GELU is their default)
        norm_add_unit_offset=False,                    # LayerNorm gain stored as 1, not as an offset from 1
        attn_dropout=config.dropout, ff_dropout=config.dropout,
        add_value_residual=config.value_residual == "resformer",
        learned_value_residual_mix=False,              # fixed 0.5/0.5 as the paper; theirs learns a per-token gate by default
        verbose=False,
    )
    net = TransformerWrapper(
        num_tokens=config.vocab_size, max_seq_len=config.block_size, attn_layers=decoder,
        use_abs_pos_emb=False, tie_embedding=True, tie_embedding_scale=1.0 if ours_init else None,
        emb_dropout=config.dropout,
    )
    if ours_init:
        gpt2_init_(net, config)
    return net


def _peer_blocks(net: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """(layer type, pre-branch norm, branch) for each attention / feed-forward layer, in order."""
    layers = net.attn_layers
    return [(kind, layer[0][0], layer[1]) for kind, layer in zip(layers.layer_types, layers.layers)]


def gpt2_init_(net: nn.Module, config: GPTConfig) -> None:
    """Our initialisation (``GPT.reset_parameters``) on the peer: N(0, 0.02) for every matrix and
    the embedding, residual output projections scaled by 1/sqrt(2L), LayerNorm gains 1."""
    std = config.init_std
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for kind, norm, branch in _peer_blocks(net):
            out = branch.to_out if kind == "a" else branch.ff[-1]
            nn.init.normal_(out.weight, 0.0, std / math.sqrt(2 * config.n_layer))
            norm.gamma.fill_(1.0)
        net.attn_layers.final_norm.gamma.fill_(1.0)


def rotary_permutation(head_dim: int) -> Tensor:
    """Row order taking our rotate-half pairs (i, i + D/2) to x-transformers' interleaved (2i, 2i+1)."""
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()


@torch.no_grad()
def copy_weights_(ours: GPT, theirs: nn.Module) -> None:
    """Make the peer compute our model's function: copy every parameter, permuting the rows of
    the query and key projections within each head to move our rotary pairs onto theirs."""
    cfg = ours.config
    perm = rotary_permutation(cfg.head_dim)

    def qk(weight: Tensor, heads: int) -> Tensor:
        return weight.view(heads, cfg.head_dim, -1)[:, perm].reshape(weight.shape)

    pairs: list[tuple[Tensor, Tensor]] = [(theirs.token_emb.emb.weight, ours.embeddings[0].weight),
                                          (theirs.attn_layers.final_norm.gamma, ours.ln_f.weight)]
    blocks = _peer_blocks(theirs)
    for i, block in enumerate(ours.blocks):
        (_, attn_norm, attn), (_, ff_norm, ff) = blocks[2 * i], blocks[2 * i + 1]
        pairs += [(attn_norm.gamma, block.ln_1.weight), (attn.to_q.weight, qk(block.attn.q_proj.weight, cfg.n_head)),
                  (attn.to_k.weight, qk(block.attn.k_proj.weight, cfg.kv_heads)), (attn.to_v.weight, block.attn.v_proj.weight),
                  (attn.to_out.weight, block.attn.o_proj.weight), (ff_norm.gamma, block.ln_2.weight),
                  (ff.ff[0][0].weight, block.mlp.up.weight), (ff.ff[-1].weight, block.mlp.down.weight)]
    covered = {id(dst) for dst, _ in pairs}
    left = [n for n, p in theirs.named_parameters() if id(p) not in covered]
    if left:
        raise ValueError(f"the peer has parameters with no counterpart in ours: {left}")
    for dst, src in pairs:
        dst.copy_(src)


def peer_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups by our rule: decay matrices (and the embedding), never gains or biases."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class PeerTrainee(Trainee):
    """``bench.model.Trainee`` (same step: forward, our loss, backward, clip 1.0, AdamW) around the peer."""

    def __init__(self, config: GPTConfig, batch: int, device: str, dtype: torch.dtype, seed: int = 0,
                 init: str = "gpt2", flash: bool = True) -> None:
        torch.manual_seed(seed)
        self.config = config
        self.model = peer_model(config, init, flash).to(device)
        self.opt = torch.optim.AdamW(peer_param_groups(self.model, 0.1), lr=3e-4, betas=(0.9, 0.95), fused=device == "cuda")
        self.idx = torch.randint(0, config.vocab_size, (batch, config.block_size + 1), device=device)
        self.device, self.dtype = device, dtype


def make_trainee(impl: str, config: GPTConfig, batch: int, device: str, dtype: torch.dtype, seed: int,
                 init: str, flash: bool = True) -> Trainee:
    if impl == "ours":
        return Trainee(config, batch, device, dtype, seed)
    trainee = PeerTrainee(config, batch, device, dtype, seed, init, flash)
    if init == "copy":
        torch.manual_seed(seed)
        copy_weights_(GPT(config), trainee.model)
    return trainee


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------
def measure_peer_generation(net: nn.Module, new_tokens: int, device: str) -> float:
    """Their cached generation, set up as ``bench.model.measure_generation`` sets up ours:
    batch 1, a 16-token random prompt, top-k 50, temperature 1; tokens per second."""
    from x_transformers import AutoregressiveWrapper

    wrapper = AutoregressiveWrapper(net)
    prompt = torch.randint(0, net.num_tokens, (1, PROMPT_TOKENS), device=device)
    seconds = timed(lambda: wrapper.generate(prompt, new_tokens, temperature=1.0, filter_logits_fn="top_k",
                                             filter_kwargs={"k": TOP_K}, cache_kv=True), device)
    return new_tokens / seconds


def generation_rate(impl: str, model: nn.Module, new_tokens: int, device: str) -> float:
    if impl == "ours":
        return measure_generation(model, new_tokens, True, device)
    return measure_peer_generation(model, new_tokens, device)


def measure_generations(models: dict[str, tuple[str, nn.Module]], new_tokens: int, repeats: int, device: str,
                        dtype: torch.dtype) -> dict[str, list[float]]:
    """Cached generation tokens/s per model, interleaved (A, B, A, B …) after a short warm-up."""
    rates: dict[str, list[float]] = {name: [] for name in models}
    with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
        for impl, model in models.values():
            generation_rate(impl, model, min(8, new_tokens), device)
        for _ in range(repeats):
            for name, (impl, model) in models.items():
                rates[name].append(generation_rate(impl, model, new_tokens, device))
    return rates


# --------------------------------------------------------------------------------------------
# What the machine allows: the floors under any implementation's step and decode times
# --------------------------------------------------------------------------------------------
def weight_read_seconds(model: nn.Module, device: str, dtype: torch.dtype, repeats: int = 20) -> float:
    """Best time of one pass through every Linear of ``model`` on a single row.

    Decoding a token at batch 1 multiplies one row by every weight matrix once; on a CPU that is
    bound by reading the weights from memory, so no implementation of this model decodes a
    token faster than this (attention over the cache and sampling come on top).
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    rows = [torch.zeros(1, m.in_features, device=device, dtype=dtype) for m in linears]
    weights = [m.weight.to(dtype) for m in linears]

    @torch.no_grad()
    def one_pass() -> None:
        for row, weight in zip(rows, weights):
            F.linear(row, weight)

    one_pass()
    return min(timed(one_pass, device) for _ in range(repeats))


def floors(config: GPTConfig, batch: int, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Step time at 100% of the measured matmul peak, and the weight-read time per decoded token."""
    model = GPT(config).to(device)
    peak = matmul_peak_flops(device, dtype)
    flops = flops_per_token(config, model.num_params())
    step = flops * batch * config.block_size / peak
    read = weight_read_seconds(model, device, dtype)
    weight_bytes = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)) * \
        torch.finfo(dtype).bits // 8
    return {"matmul_peak_flops": peak, "flops_per_token": flops,
            "flops_formula": "6N + 12·L·d·T (models.gpt.flops_per_token)",
            "train_step_floor_seconds": step, "decode_weight_read_seconds": read,
            "decode_weight_bytes": weight_bytes, "decode_weight_read_bytes_per_second": weight_bytes / read}


# --------------------------------------------------------------------------------------------
# Peak memory (fresh subprocess per model and phase)
# --------------------------------------------------------------------------------------------
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
    code = ("import json, sys; from shortcutlm.bench.peer import memory_probe; "
            "print(json.dumps(memory_probe(json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed for {spec['impl']} {spec['phase']}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Validation loss after the same training
# --------------------------------------------------------------------------------------------
def prepare_chorales(out: Path, limit: int | None, vocab: int) -> Path:
    """bach_chorales as MIDI shards (music21's corpus, no download); resumes if already there."""
    from shortcutlm.datasets.prepare import prepare

    source: dict[str, Any] = {"name": "bach_chorales"}
    if limit:
        source["limit"] = limit
    prepare(source, {"domain": "midi", "vocab_size": vocab}, out, workers=2, progress=False)
    return out


@torch.no_grad()
def validation_loss(model: nn.Module, shard_dir: Path, block: int, batch: int, ignore: list[int],
                    device: str, dtype: torch.dtype) -> float:
    """Mean next-token loss over every valid target of the exact validation pass."""
    from shortcutlm.datasets.loader import eval_batches
    from shortcutlm.models.lightning import mask_targets

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for window in eval_batches(shard_dir, "valid", block, batch):
        window = window.to(device)
        targets = mask_targets(window[:, 1:], ignore)
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(window[:, :-1])
        total += float(F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                       reduction="sum"))
        count += int((targets != IGNORE).sum())
    model.train(was_training)
    if count == 0:
        raise ValueError(f"{shard_dir}: the validation split has no targets")
    return total / count


def train_step(trainee: Trainee, batch: Tensor, lr: float, ignore: list[int]) -> float:
    """One step as ``Trainee.step`` does it, on a data batch with masked targets and a set lr."""
    from shortcutlm.models import stream_losses
    from shortcutlm.models.lightning import mask_targets

    for group in trainee.opt.param_groups:
        group["lr"] = lr
    trainee.opt.zero_grad(set_to_none=True)
    targets = mask_targets(batch[:, 1:], ignore)
    with torch.autocast(torch.device(trainee.device).type, dtype=trainee.dtype, enabled=trainee.dtype != torch.float32):
        loss = stream_losses(trainee.model(batch[:, :-1]), targets, IGNORE).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), 1.0)
    trainee.opt.step()
    return float(loss.detach())


def loss_seed(shard_dir: Path, base: GPTConfig, variants: list[str], steps: int, seed: int, batch: int, lr: float,
              min_lr: float, warmup: int, weight_decay: float, init: str, device: str, dtype: torch.dtype,
              log: Any = None, flash: bool = True) -> dict[str, dict[str, Any]]:
    """One seed: every model ("variant/impl") trained on the batches of one loader, then validated."""
    from shortcutlm.datasets.loader import read_manifest, train_batches
    from shortcutlm.models.lightning import warmup_cosine
    from shortcutlm.training import ignored_ids

    tok = read_manifest(shard_dir)["tokenizer"]
    ignore = ignored_ids(tok["special_ids"])
    config = replace(base, vocab_size=int(tok["vocab_size"]))
    trainees: dict[str, Trainee] = {}
    for variant in variants:
        for impl in IMPLEMENTATIONS:
            trainee = make_trainee(impl, replace(config, value_residual=VARIANTS[variant]), batch, device, dtype, seed, init,
                                   flash)
            for group in trainee.opt.param_groups:
                group["weight_decay"] = weight_decay if group["weight_decay"] else 0.0
            trainees[f"{variant}/{impl}"] = trainee
    loader = iter(train_batches(shard_dir, config.block_size, batch, seed))
    last: dict[str, float] = {}
    times: dict[str, list[float]] = {name: [] for name in trainees}
    for step in range(steps):
        window = next(loader).to(device)
        rate = warmup_cosine(step, warmup, steps, lr, min_lr)
        for name, trainee in trainees.items():  # interleaved: A, B, C, D on each batch
            times[name].append(timed(lambda: last.__setitem__(name, train_step(trainee, window, rate, ignore)), device))
        if log and (step + 1) % max(1, steps // 10) == 0:
            log(f"loss phase seed {seed} step {step + 1}/{steps}: " + ", ".join(f"{n} {last[n]:.3f}" for n in trainees))
    out = {name: {"val_loss": validation_loss(t.model, shard_dir, config.block_size, batch, ignore, device, dtype),
                  "final_train_loss": last.get(name, float("nan")), "step_seconds": times[name]}
           for name, t in trainees.items()}
    del trainees
    gc.collect()
    return out


def summarise_losses(shard_dir: Path, per_seed: list[dict[str, dict[str, Any]]], variants: list[str]) -> dict[str, Any]:
    """Per model: validation loss per seed, mean, sample std; training step-time median."""
    from shortcutlm.datasets.loader import read_manifest
    from shortcutlm.training import ignored_ids

    manifest = read_manifest(shard_dir)
    out: dict[str, Any] = {"vocab": int(manifest["tokenizer"]["vocab_size"]),
                           "ignored_ids": ignored_ids(manifest["tokenizer"]["special_ids"]),
                           "valid_tokens": manifest["splits"]["valid"]["tokens"],
                           "train_tokens": manifest["splits"]["train"]["tokens"], "models": {}}
    for variant in variants:
        for impl in IMPLEMENTATIONS:
            rows = [seed[f"{variant}/{impl}"] for seed in per_seed]
            losses = [r["val_loss"] for r in rows]
            out["models"].setdefault(variant, {})[impl] = {
                "val_loss_per_seed": losses,
                "val_loss_mean": statistics.fmean(losses),
                "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
                "final_train_loss_per_seed": [r["final_train_loss"] for r in rows],
                "step_seconds_median": median([t for r in rows for t in r["step_seconds"]]),
            }
    return out


def loss_comparison(shard_dir: Path, base: GPTConfig, variants: list[str], steps: int, seeds: int, batch: int,
                    lr: float, min_lr: float, warmup: int, weight_decay: float, init: str, device: str,
                    dtype: torch.dtype, log: Any = None, flash: bool = True) -> dict[str, Any]:
    """Train ours and theirs for each variant on the same batches (one loader per seed feeds all
    models), then the exact validation pass; per model: losses per seed, mean, std."""
    per_seed = [loss_seed(shard_dir, base, variants, steps, seed, batch, lr, min_lr, warmup, weight_decay, init,
                          device, dtype, log, flash) for seed in range(seeds)]
    return summarise_losses(shard_dir, per_seed, variants)


# --------------------------------------------------------------------------------------------
# What still differs
# --------------------------------------------------------------------------------------------
def differences(init: str, flash: bool = True) -> list[dict[str, str]]:
    """Every remaining difference between the two decoders and how the benchmark handles it."""
    init_row = {
        "gpt2": "theirs gets our scheme (N(0, 0.02), residual output projections / sqrt(2L), gains 1), drawn "
                "from the same seed but in a different order, so the two start from different weights of the "
                "same distribution",
        "copy": "theirs starts from exactly our initial weights (copy_weights_), so the loss comparison isolates "
                "the implementations",
        "theirs": "theirs keeps its own init (default nn.Linear init, kaiming-normal embedding) and its dim**-0.5 "
                  "tied-logit scale, which belongs with that init",
    }[init]
    return [
        {"aspect": "rotary pairing", "ours": "rotate-half: dims (i, i + D/2) form a pair",
         "theirs": "interleaved: dims (2i, 2i+1) form a pair",
         "handled": "same frequencies, a fixed permutation of each head's query/key dims, so the same function "
                    "class; the equivalence check permutes q/k rows and matches logits"},
        {"aspect": "rotary width", "ours": "whole head", "theirs": "default rotary_emb_dim = dim_head // 2",
         "handled": "set rotary_emb_dim = head dim"},
        {"aspect": "head dimension", "ours": "n_embd / n_head", "theirs": "default attn_dim_head = 64",
         "handled": "set attn_dim_head = n_embd / n_head"},
        {"aspect": "value residual mix", "ours": "fixed V_n' = 0.5 V_1 + 0.5 V_n (paper, Eq. 7)",
         "theirs": "default learned per-token sigmoid gate (Linear(dim, heads) per layer)",
         "handled": "learned_value_residual_mix=False: theirs uses V_1.lerp(V_n, 0.5), the same mix, same place "
                    "(after the value projection, before attention; the mixed value is cached)"},
        {"aspect": "LayerNorm gain", "ours": "nn.LayerNorm(bias=False), gain initialised to 1",
         "theirs": "default unit offset: gain stored as gamma + 1 with gamma initialised to 0",
         "handled": "norm_add_unit_offset=False; both are a bias-free LayerNorm with eps 1e-5"},
        {"aspect": "tied output scale", "ours": "logits = h · E^T",
         "theirs": "default logits = h · E^T · dim**-0.5",
         "handled": "tie_embedding_scale=1.0" + (" (kept at dim**-0.5 under --peer-init theirs)" if init == "theirs" else "")},
        {"aspect": "positions", "ours": "RoPE only", "theirs": "absolute position embedding by default",
         "handled": "use_abs_pos_emb=False (also implied by rotary_pos_emb)"},
        {"aspect": "MLP", "ours": "Linear(d, 4d) → exact GELU → Linear(4d, d), no bias",
         "theirs": "same layers, biases by default", "handled": "ff_mult=4, ff_no_bias=True"},
        {"aspect": "attention kernel", "ours": "F.scaled_dot_product_attention",
         "theirs": "einsum attention unless attn_flash", "handled": "attn_flash=True (scaled_dot_product_attention)" if flash else
         "not matched (--peer-attention einsum): theirs keeps its default einsum attention, as out of the box"},
        {"aspect": "initialisation", "ours": "GPT-2: N(0, 0.02), residual output projections / sqrt(2L)",
         "theirs": "nn.Linear default (kaiming-uniform), kaiming-normal embedding", "handled": init_row},
        {"aspect": "loss and optimiser", "ours": "stream_losses, AdamW(β 0.9/0.95), clip 1.0, decay on matrices only",
         "theirs": "AutoregressiveWrapper.forward has its own loss",
         "handled": "training calls both models' forward for logits and applies our loss, clipping, AdamW and "
                    "decay rule (matrices and the embedding decayed, gains not) to both"},
        {"aspect": "KV cache", "ours": "preallocated per layer, keys rotated once when written",
         "theirs": "grown with torch.cat each step; keys cached before rotation and the whole cache rotated "
                   "again every step",
         "handled": "not matched: this is part of the implementation being measured"},
        {"aspect": "generation loop", "ours": "shortcutlm.models.generate, LM head on the last position",
         "theirs": "AutoregressiveWrapper.generate(cache_kv=True)",
         "handled": "same prompt length (16), new tokens, top-k 50 and temperature 1; random streams differ "
                    "(ours a seeded generator, theirs the global RNG), so sampled tokens differ"},
        {"aspect": "rotary base", "ours": "rope_base (10000 by default)", "theirs": "10000, fixed",
         "handled": "the peer is only built for rope_base 10000"},
        {"aspect": "parameters", "ours": "counted by GPT.num_params", "theirs": "counted over net.parameters()",
         "handled": f"reported for both; they must agree within {PARAM_TOLERANCE:.1%} (they are equal)"},
    ]


@torch.no_grad()
def equivalence(config: GPTConfig, device: str, tokens: int | None = None, flash: bool = True) -> dict[str, Any]:
    """Our fresh model and the peer with our weights copied: largest logit difference on one window."""
    torch.manual_seed(0)
    ours = GPT(config).to(device).eval()
    theirs = peer_model(config, "copy", flash).to(device).eval()
    copy_weights_(ours, theirs)
    idx = torch.randint(0, config.vocab_size, (1, tokens or config.block_size), device=device)
    a, b = ours(idx).float(), theirs(idx).float()
    return {"max_abs_logit_diff": float((a - b).abs().max()), "max_abs_logit": float(a.abs().max()),
            "tokens": idx.shape[1]}


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
    timing.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    timing.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    timing.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
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
                        help="reuse the phases and loss seeds a stopped run with the same settings saved in FILE.partial")
    parser.add_argument("--peer-attention", choices=["flash", "einsum"], default="flash",
                        help="flash: theirs attends through scaled_dot_product_attention as ours (default); "
                             "einsum: x-transformers' default attention path (attn_flash=False)")
    parser.add_argument("--peer-init", choices=INITS, default="gpt2",
                        help="gpt2: our init scheme on theirs (default); copy: theirs starts from our weights; "
                             "theirs: x-transformers' own init")


def _log(message: str) -> None:
    print(f"[bench peer] {message}", file=sys.stderr, flush=True)


class Progress:
    """Finished phases of a run, saved to ``FILE.partial`` after each one so ``--resume`` can go on."""

    IGNORED = ("json", "resume", "command", "benchmark", "_module")

    def __init__(self, args: argparse.Namespace) -> None:
        self.path = Path(args.json + ".partial") if args.json else None
        self.signature = {k: v for k, v in sorted(vars(args).items()) if k not in self.IGNORED}
        self.state: dict[str, Any] = {"signature": self.signature}
        if args.resume:
            if self.path is None:
                raise SystemExit("--resume needs --json FILE (the progress is kept in FILE.partial)")
            if self.path.exists():
                saved = json.loads(self.path.read_text())
                if saved.get("signature") != self.signature:
                    raise SystemExit(f"{self.path} was saved with other settings; run without --resume to start over")
                self.state = saved
                _log(f"resuming: {', '.join(k for k in saved if k != 'signature') or 'nothing finished yet'}")

    def get(self, key: str) -> Any:
        return self.state.get(key)

    def put(self, key: str, value: Any) -> Any:
        self.state[key] = value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.state, default=str))
            tmp.replace(self.path)
        return value

    def done(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()


def default_shards(limit: int | None, vocab: int) -> Path:
    """Where the default bach_chorales shards live (prepared on first use, then reused)."""
    from shortcutlm.datasets.embedded import cache_root

    return cache_root() / "peer" / f"bach_chorales_{limit or 'all'}_midi{vocab}"


def summary(result: dict[str, Any]) -> list[str]:
    """The terminal's view: the setup in one line, one row per variant (ours over theirs)."""
    s, peer = result["setup"], result["peer"]
    rows = []
    for v, r in result["ratios"].items():
        ours = result["models"][v]["ours"]
        rows.append([v, count(ours["parameters"]), f"{r['step_time_ours_over_theirs']:.3f}",
                     f"{r['generation_ours_over_theirs']:.3f}",
                     f"{r['peak_memory_ours_over_theirs']['train']:.3f}" if "peak_memory_ours_over_theirs" in r else "-",
                     f"{r['val_loss_ours_minus_theirs']:+.4f}" if "val_loss_ours_minus_theirs" in r else "-"])
    return [f"bench peer: ours against {peer['package']} {peer['version']}, {s['layers']} layers x {s['width']} "
            f"({s['heads']} heads), context {s['context']}, vocab {s['vocab']}, batch {s['batch']}, "
            f"{s['dtype']} on {s['device']}",
            *table(["variant", "params", "step time ours/theirs", "generation ours/theirs", "train memory ours/theirs",
                    "val loss ours-theirs"], rows)]


def run(args: argparse.Namespace) -> int:
    missing = peer_missing()
    if missing:
        raise SystemExit(missing)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    device = args.device
    base = default_config(args)
    configs = {v: replace(base, value_residual=VARIANTS[v]) for v in names}
    progress = Progress(args)
    flash = args.peer_attention == "flash"

    equal = progress.get("equivalence")
    if equal is None:
        _log("equivalence check (peer with our weights)")
        equal = progress.put("equivalence", {v: equivalence(c, device, flash=flash)
                                                for v, c in configs.items()})

    models: dict[str, dict[str, Any]] | None = progress.get("timing")
    if models is None:
        _log(f"timing {args.steps} interleaved train steps per model")
        trainees: dict[str, Trainee] = {}
        for v in names:
            for impl in IMPLEMENTATIONS:
                trainees[f"{v}/{impl}"] = make_trainee(impl, configs[v], args.batch, device, dtype, 0, args.peer_init,
                                                       flash)
        times = measure_training(trainees, args.steps, args.warmup)

        _log(f"timing cached generation ({args.new_tokens} tokens, {args.generation_repeats} interleaved repeats)")
        for t in trainees.values():
            t.opt.zero_grad(set_to_none=True)
        rates = measure_generations({n: (n.split("/")[1], t.model) for n, t in trainees.items()}, args.new_tokens,
                                    args.generation_repeats, device, dtype)
        tokens_per_step = args.batch * base.block_size
        models = {v: {} for v in names}
        for name, trainee in trainees.items():
            v, impl = name.split("/")
            step = median(times[name])
            models[v][impl] = {
                "parameters": num_params(trainee.model),
                "vocab": trainee.model.num_tokens if impl == "theirs" else trainee.config.vocab_size,
                "context": trainee.model.max_seq_len if impl == "theirs" else trainee.config.block_size,
                "train_step_seconds_median": step,
                "train_step_seconds_all": times[name],
                "tokens_per_second": tokens_per_step / step,
                "generate_tokens_per_second_cached": median(rates[name]),
                "generate_tokens_per_second_all": rates[name],
            }
        del trainees
        gc.collect()
        progress.put("timing", models)

    if not args.skip_memory:
        memory = progress.get("memory")
        if memory is None:
            _log("peak memory (a fresh subprocess per model and phase)")
            memory = {}
            for v in names:
                for impl in IMPLEMENTATIONS:
                    spec = {"impl": impl, "config": configs[v].to_dict(), "batch": args.batch, "device": device,
                            "dtype": args.dtype, "new_tokens": args.new_tokens, "init": args.peer_init,
                            "flash": flash}
                    memory[f"{v}/{impl}"] = {phase: measure_memory({**spec, "phase": phase})["bytes"]
                                             for phase in ("train", "generate")}
            progress.put("memory", memory)
        for v in names:
            for impl in IMPLEMENTATIONS:
                models[v][impl]["peak_memory_bytes"] = memory[f"{v}/{impl}"]

    floor = progress.get("floors")
    if floor is None:
        _log("floors: the measured matmul peak and one weight-read pass")
        floor = progress.put("floors", floors(base, args.batch, device, dtype))

    loss: dict[str, Any] | None = None
    if args.loss_steps > 0:
        shard_dir = Path(args.data) if args.data else default_shards(args.chorales, args.midi_vocab)
        if not args.data:
            _log(f"preparing bach_chorales shards in {shard_dir} (reused when already there)")
            prepare_chorales(shard_dir, args.chorales, args.midi_vocab)
        per_seed = []
        for seed in range(args.seeds):
            key = f"loss_seed_{seed}"
            if progress.get(key) is None:
                _log(f"loss phase seed {seed}: {args.loss_steps} steps × {2 * len(names)} models on {shard_dir}")
                progress.put(key, loss_seed(shard_dir, base, names, args.loss_steps, seed, args.batch, args.lr,
                                            args.min_lr, args.lr_warmup, args.weight_decay, args.peer_init, device,
                                            dtype, _log, flash))
            per_seed.append(progress.get(key))
        loss = summarise_losses(shard_dir, per_seed, names)
        loss["shards"] = str(shard_dir)
        for v in names:
            for impl in IMPLEMENTATIONS:
                models[v][impl]["val_loss"] = loss["models"][v][impl]

    ratios: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    for v in names:
        ours, theirs = models[v]["ours"], models[v]["theirs"]
        r: dict[str, Any] = {
            "parameters_relative_difference": abs(ours["parameters"] - theirs["parameters"]) / theirs["parameters"],
            "step_time_ours_over_theirs": ours["train_step_seconds_median"] / theirs["train_step_seconds_median"],
            "generation_ours_over_theirs": ours["generate_tokens_per_second_cached"] / theirs["generate_tokens_per_second_cached"],
        }
        if "peak_memory_bytes" in ours:
            r["peak_memory_ours_over_theirs"] = {p: ours["peak_memory_bytes"][p] / max(1, theirs["peak_memory_bytes"][p])
                                                 for p in ("train", "generate")}
        # The best any implementation could do against theirs on this machine: a step at 100% of
        # the matmul peak, a decoded token that costs nothing beyond reading the weights once.
        r["step_time_ratio_floor"] = floor["train_step_floor_seconds"] / theirs["train_step_seconds_median"]
        r["generation_ratio_ceiling"] = 1 / (floor["decode_weight_read_seconds"] *
                                             theirs["generate_tokens_per_second_cached"])
        r["our_mfu"] = floor["train_step_floor_seconds"] / ours["train_step_seconds_median"]
        r["our_decode_share_reading_weights"] = floor["decode_weight_read_seconds"] * \
            ours["generate_tokens_per_second_cached"]
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
            targets[f"{v}_val_loss_no_worse"] = target(round(r["val_loss_ours_minus_theirs"], 4), round(spread, 4), "<=")
        models[v]["equivalence"] = equal[v]
        ratios[v] = r

    result: dict[str, Any] = {
        "benchmark": "peer",
        "machine": machine(),
        "peer": {"package": "x-transformers", "version": peer_version(),
                 "build": "TransformerWrapper(Decoder(...)), AutoregressiveWrapper for generation"},
        "setup": {"layers": base.n_layer, "width": base.n_embd, "heads": base.n_head, "head_dim": base.head_dim,
                  "context": base.block_size, "vocab": base.vocab_size, "batch": args.batch, "dtype": args.dtype,
                  "device": device, "timed_steps": args.steps, "warmup_steps": args.warmup,
                  "timing": "ours and theirs interleaved step by step on one fixed random batch; medians",
                  "train_step": "forward, our cross-entropy, backward, clip 1.0, AdamW (lr 3e-4, β 0.9/0.95, wd 0.1)",
                  "generation": {"batch": 1, "prompt_tokens": PROMPT_TOKENS, "new_tokens": args.new_tokens,
                                 "top_k": TOP_K, "temperature": 1.0, "kv_cache": True,
                                 "repeats": args.generation_repeats, "interleaved": True},
                  "memory_method": None if args.skip_memory else memory_method(device),
                  "peer_init": args.peer_init, "peer_attention": args.peer_attention,
                  "loss": None if loss is None else {
                      "steps": args.loss_steps, "seeds": args.seeds, "batch": args.batch, "context": base.block_size,
                      "vocab": loss["vocab"], "shards": loss["shards"], "train_tokens": loss["train_tokens"],
                      "valid_tokens": loss["valid_tokens"], "lr": args.lr, "min_lr": args.min_lr,
                      "lr_warmup": args.lr_warmup, "schedule": "linear warmup then cosine (models.lightning.warmup_cosine)",
                      "weight_decay": args.weight_decay, "betas": [0.9, 0.95], "clip": 1.0,
                      "batches": "one train_batches loader per seed (seed = the seed) feeds the same batch to every model",
                      "validation": "exact pass over the valid split (eval_batches), pad targets masked, token-weighted mean",
                      "spread": "sample std over seeds; ours passes when mean(ours) - mean(theirs) <= the larger std"},
                  "torch_threads": torch.get_num_threads()},
        "floors": {**floor, "meaning": "train_step_floor_seconds: the step at 100% of the measured matmul peak; "
                   "decode_weight_read_seconds: one batch-1 pass through every weight matrix, the least a decoded "
                   "token costs. 'attainable' in targets is the ratio an implementation that reached these floors "
                   "would get against theirs"},
        "differences": differences(args.peer_init, flash),
        "models": models,
        "ratios": ratios,
        "targets": targets,
    }
    write_json(result, args.json, summary(result))
    progress.done()
    return 0
