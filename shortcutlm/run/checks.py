"""Refuse a training run whose recipe does not fit its prepared data, before any work starts.

Without these checks a MIDI recipe trains on text shards (and its checkpoint says midi), and a
block longer than the train split packs the split into each window several times over. Each
check raises :class:`ConfigError` with one line: the recipe, the shard folder's manifest, what
disagrees, and the fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.core.config_schema import ConfigError
from shortcutlm.run.recipe import Recipe
from shortcutlm.tokenizers.base import read_config

FIX_TOKENIZER = "prepare with the recipe's tokenizer (into another folder) or pick the matching recipe"


def _normal(value: Any) -> Any:
    """A form in which settings equal in meaning compare equal: 4000 == 4000.0, tuples == lists,
    mapping keys as strings, and a path to an existing file by its resolved location."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, str):
        path = Path(value).expanduser()
        if value and path.is_file():
            return str(path.resolve())
    return value


def _prepared_settings(shards: ShardManifest) -> dict[str, Any]:
    """The tokenizer settings the shards were made with: what ``prepare`` was given (the manifest's
    ``tokenizer_settings``), over the saved tokenizer's full config (defaults filled in)."""
    settings: dict[str, Any] = {}
    try:
        config = read_config(shards.tokenizer_dir).get("config", {})
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict):
        settings.update(config)
    settings.update({k: v for k, v in shards.tokenizer_settings.items() if k != "domain"})
    return settings


def check_tokenizer_matches(recipe: Recipe, shards: ShardManifest) -> None:
    """The shards must hold the recipe's kind of tokens, made with the settings the recipe states.

    Only keys the recipe states are compared, against what ``prepare`` was given or, for a key
    it was not given, the default the saved tokenizer used; a key recorded nowhere (a runtime
    knob such as thread counts) is not compared.
    """
    data_dir, where = shards.folder, shards.path
    want, have = recipe.tokenizer.get("domain"), shards.domain
    if want != have:
        raise ConfigError(f"recipe {recipe.name} wants {want} tokens, but {data_dir} holds {have} shards ({where}); "
                          f"{FIX_TOKENIZER}")
    prepared = _prepared_settings(shards)
    diffs = [(key, value, prepared[key]) for key, value in recipe.tokenizer.items()
             if key != "domain" and key in prepared and _normal(value) != _normal(prepared[key])]
    if diffs:
        wanted = ", ".join(f"{k}={v!r}" for k, v, _ in diffs)
        made = ", ".join(f"{k}={p!r}" for k, _, p in diffs)
        raise ConfigError(f"recipe {recipe.name} wants {want} tokens with {wanted}, but {data_dir} holds shards "
                          f"prepared with {made} ({where}); {FIX_TOKENIZER}")


def check_block_fits(recipe: Recipe, variant: str, block_size: int, shards: ShardManifest) -> None:
    """A training window must not wrap around the train split.

    The loader packs the split as ``EOS d1 EOS d2 EOS …`` (one leading EOS, one after each
    document) and cuts windows of ``block_size + 1`` tokens; one epoch's stream is
    ``1 + tokens + documents`` long, so a window fits when ``tokens + documents >= block_size``.
    A longer window would repeat the split inside itself (4,096 against 1,057 tokens held it
    four times). The valid split needs no check: evaluation pads its last window.
    """
    data_dir, where = shards.folder, shards.path
    train = shards.split("train")
    tokens, docs = train.tokens, train.documents
    if tokens + docs >= block_size:
        return
    key = "model.block_size" if "block_size" not in (recipe.variants.get(variant) or {}) \
        else f"variants.{variant}.block_size"
    fix = f"lower {key} to at most {tokens + docs} (e.g. --set {key}={_round_down(tokens + docs)}), or " \
        if tokens else ""
    raise ConfigError(f"recipe {recipe.name}: {key} is {block_size}, but the train split of {data_dir} holds only "
                      f"{tokens} tokens in {docs} documents ({where}), so each window of {block_size + 1} tokens "
                      f"would repeat the split; {fix}prepare more training data")


def _round_down(n: int) -> int:
    """The largest power of two not above ``n`` (a block size people recognise)."""
    return 1 << (max(1, n).bit_length() - 1)


# Lightning's strategies that this suite documents, and those that need GPUs.
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_find_unused_parameters_true", "fsdp")
GPU_ONLY_STRATEGIES = ("fsdp",)


def check_strategy(accelerator: str, strategy: str, cuda_available: bool) -> None:
    """Refuse a strategy the accelerator cannot run before Lightning starts (and fails deep inside)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"train.strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    on_gpu = accelerator != "cpu" and cuda_available  # the device rule of shortcutlm.core.devices
    if accelerator in ("gpu", "cuda") and not cuda_available:
        raise ConfigError(f"train.accelerator {accelerator!r}: no CUDA device is visible on this machine; "
                          "use accelerator: cpu (or auto)")
    if strategy in GPU_ONLY_STRATEGIES and not on_gpu:
        raise ConfigError(f"train.strategy {strategy!r} needs GPUs (Lightning runs FSDP on CUDA only); "
                          "on CPUs use strategy: ddp with train.devices: N")
