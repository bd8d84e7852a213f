"""Speed, ours and theirs interleaved: train steps (``bench.model.measure_training`` does the
stepping) and cached generation, gathered into one row per model."""
from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from shortcutlm.bench.common import median, timed
from shortcutlm.bench.model import Trainee, measure_generation
from shortcutlm.bench.peer.config import PROMPT_TOKENS, TOP_K
from shortcutlm.bench.peer.models import num_params
from shortcutlm.models import GPT


def measure_peer_generation(net: nn.Module, new_tokens: int, device: str) -> float:
    """Their cached generation, set up as ``bench.model.measure_generation`` sets up ours:
    batch 1, a 16-token random prompt, top-k 50, temperature 1; tokens per second."""
    from x_transformers import AutoregressiveWrapper

    wrapper = AutoregressiveWrapper(net)
    vocab = cast(int, net.num_tokens)  # x-transformers' attribute, untyped
    prompt = torch.randint(0, vocab, (1, PROMPT_TOKENS), device=device)
    seconds = timed(lambda: wrapper.generate(prompt, new_tokens, temperature=1.0, filter_logits_fn="top_k",
                                             filter_kwargs={"k": TOP_K}, cache_kv=True), device)
    return new_tokens / seconds


def generation_rate(impl: str, model: nn.Module, new_tokens: int, device: str, compile: bool = False) -> float:
    if impl == "ours":
        return measure_generation(cast(GPT, model), new_tokens, True, device, compile)
    return measure_peer_generation(model, new_tokens, device)


def measure_generations(models: dict[str, tuple[str, nn.Module]], new_tokens: int, repeats: int, device: str,
                        dtype: torch.dtype, compiled: bool = False) -> dict[str, list[float]]:
    """Cached generation tokens/s per model, interleaved (A, B, A, B …) after a short warm-up.

    ``compiled`` adds ours through the compiled chunks of steps as "NAME+compiled", in the
    same rounds (its compile happens in the warm-up)."""
    runs = [(name, impl, model, False) for name, (impl, model) in models.items()]
    if compiled:
        runs += [(f"{name}+compiled", impl, model, True) for name, (impl, model) in models.items() if impl == "ours"]
    rates: dict[str, list[float]] = {name: [] for name, *_ in runs}
    with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
        for _, impl, model, comp in runs:
            generation_rate(impl, model, min(8, new_tokens), device, comp)
        for _ in range(repeats):
            for name, impl, model, comp in runs:
                rates[name].append(generation_rate(impl, model, new_tokens, device, comp))
    return rates


def timing_rows(trainees: dict[str, Trainee], times: dict[str, list[float]], rates: dict[str, list[float]],
                batch: int) -> dict[str, dict[str, Any]]:
    """``{variant: {impl: row}}`` from the step times and generation rates of each "variant/impl"."""
    models: dict[str, dict[str, Any]] = {}
    for name, trainee in trainees.items():
        tokens_per_step = batch * trainee.config.block_size
        v, impl = name.split("/")
        step = median(times[name])
        models.setdefault(v, {})[impl] = {
            "parameters": num_params(trainee.model),
            "vocab": trainee.model.num_tokens if impl == "theirs" else trainee.config.vocab_size,
            "context": trainee.model.max_seq_len if impl == "theirs" else trainee.config.block_size,
            "layers": trainee.config.n_layer, "width": trainee.config.n_embd,
            "train_step_seconds_median": step,
            "train_step_seconds_all": times[name],
            "tokens_per_second": tokens_per_step / step,
            "generate_tokens_per_second_cached": median(rates[name]),
            "generate_tokens_per_second_all": rates[name],
        }
        if impl == "ours":
            models[v][impl]["generate_packed_weights"] = trainee.decodes_packed()
        if f"{name}+compiled" in rates:
            models[v][impl]["generate_tokens_per_second_cached_compiled"] = median(rates[f"{name}+compiled"])
            models[v][impl]["generate_tokens_per_second_compiled_all"] = rates[f"{name}+compiled"]
    return models
