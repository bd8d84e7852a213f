"""Mismatches refused up front, in one line: recipe against shards, and unreadable checkpoint files."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.artifacts.weights import write_weights
from shortcutlm.artifacts.checkpoint import (LEGACY_WEIGHTS, TRAINER_STATE, WEIGHTS, CheckpointError,
                                             check_trainer_state, load_folder)
from shortcutlm.core.config_schema import ConfigError, from_dict
from shortcutlm.datasets.loader import read_manifest
from shortcutlm.run.recipe import Recipe, load_recipe
from shortcutlm.run.checks import check_block_fits, check_tokenizer_matches
from shortcutlm.run.training import train
from tests.conftest import tiny_recipe_dict


@pytest.fixture(autouse=True)
def peak_cache(tmp_path, monkeypatch):
    """Training caches the machine's matmul peak: keep it out of the real home."""
    monkeypatch.setenv("SHORTCUTLM_CACHE", str(tmp_path / "cache"))


def recipe(tokenizer: dict | None = None, **train_settings) -> Recipe:
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, tokenizer or {"domain": "text"}, **train_settings)
    data["variants"] = {"baseline": {}}
    return from_dict(Recipe, data)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "weights_only" not in text, text
    return text


# ------------------------------------------------------------------------------ block size

def test_a_block_longer_than_the_train_split_is_refused(tmp_path, text8_shards):
    train_split = read_manifest(text8_shards)["splits"]["train"]
    tokens, docs = train_split["tokens"], train_split["documents"]
    r = recipe()
    r.model["block_size"] = 65536
    with pytest.raises(ConfigError) as err:
        train(r, "baseline", text8_shards, tmp_path / "run", progress=False)
    text = one_line(err)
    assert "model.block_size is 65536" in text and f"holds only {tokens} tokens" in text
    assert str(text8_shards / "manifest.json") in text
    assert f"lower model.block_size to at most {tokens + docs}" in text and "--set model.block_size=32768" in text
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_the_block_rule_is_the_loaders_packing(text8_shards):
    """One epoch's stream is 1 + tokens + documents long (leading EOS, one EOS per document);
    a window of block_size + 1 fits exactly when tokens + documents >= block_size."""
    shards = ShardManifest.read(text8_shards)
    split = shards.raw["splits"]["train"]
    fits = split["tokens"] + split["documents"]
    r = recipe()
    check_block_fits(r, "baseline", fits, shards)
    with pytest.raises(ConfigError, match=f"model.block_size is {fits + 1}"):
        check_block_fits(r, "baseline", fits + 1, shards)
    r.variants["long"] = {"block_size": fits + 1}
    with pytest.raises(ConfigError, match="lower variants.long.block_size"):
        check_block_fits(r, "long", fits + 1, shards)


# ------------------------------------------------------------------------------ tokenizer

def test_a_recipe_of_another_domain_is_refused(tmp_path, text8_shards):
    r = recipe({"domain": "midi", "vocab_size": 1000})
    r.name = "bach_chorales"
    with pytest.raises(ConfigError) as err:
        train(r, "baseline", text8_shards, tmp_path / "run", progress=False)
    assert one_line(err) == (f"recipe bach_chorales wants midi tokens, but {text8_shards} holds text shards "
                             f"({text8_shards / 'manifest.json'}); prepare with the recipe's tokenizer "
                             "(into another folder) or pick the matching recipe")
    assert not (tmp_path / "run").exists()


def test_tokenizer_settings_the_recipe_states_must_match(tmp_path, text8_shards):
    """The shards were prepared with {"domain": "text", "vocab_size": 300}; the tokenizer filled
    in the other defaults, which its saved config records."""
    shards = ShardManifest.read(text8_shards)
    for same in ({"vocab_size": 300}, {"vocab_size": 300.0}, {"character_coverage": 0.9995},
                 {"model_type": "bpe", "byte_fallback": True}, {"num_threads": 8}):
        check_tokenizer_matches(recipe({"domain": "text", **same}), shards)
    with pytest.raises(ConfigError) as err:
        check_tokenizer_matches(recipe({"domain": "text", "character_coverage": 1.0}), shards)
    assert "character_coverage=1.0" in one_line(err) and "character_coverage=0.9995" in str(err.value)
    with pytest.raises(ConfigError) as err:
        train(recipe({"domain": "text", "vocab_size": 4000}), "baseline", text8_shards, tmp_path / "run",
              progress=False)
    assert one_line(err).startswith("recipe tiny wants text tokens with vocab_size=4000, but ")
    assert "holds shards prepared with vocab_size=300 (" in str(err.value)


def test_an_unknown_tokenizer_domain_is_refused_at_load(tmp_path):
    data = tiny_recipe_dict({"name": "text8"}, {"domain": "midiX"})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"r.yaml: tokenizer.domain: unknown tokenizer domain 'midiX'; "
                                          r"expected text, midi or acoustic"):
        load_recipe(path)
    data["tokenizer"] = {"vocab_size": 10}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"r.yaml: tokenizer.domain is missing"):
        load_recipe(path)


# ------------------------------------------------------------------------------ unreadable checkpoints

@pytest.fixture(scope="module")
def partial_run(tmp_path_factory, text8_shards) -> Path:
    """A run stopped at step 2 of 4: a checkpoint folder plus the trainer state to resume from."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    with pytest.MonkeyPatch.context() as env, torch.random.fork_rng():
        env.setenv("SHORTCUTLM_CACHE", str(out.parent / "cache"))
        train(recipe(max_steps=4, val_every=2), "baseline", text8_shards, out, progress=False, stop_after=2)
    return out


@pytest.fixture
def run_copy(tmp_path, partial_run) -> Path:
    return Path(shutil.copytree(partial_run, tmp_path / "run"))


class NotATensor:
    pass


def corruptions(good: bytes) -> dict[str, bytes]:
    return {"garbage": b"hello, not a checkpoint\n" * 20, "empty": b"", "truncated": good[: len(good) // 2],
            "zip garbage": b"PK\x03\x04" + bytes(range(256)) * 4}


def test_a_good_trainer_state_passes_the_check(partial_run):
    check_trainer_state(partial_run / TRAINER_STATE)  # loads with weights_only=True


def each_is_one_line(run_copy: Path, weights: Path, bodies: dict[str, bytes]) -> None:
    """Each corrupt body of the weights file makes loading the folder one line naming the file and the fix."""
    for name, body in bodies.items():
        weights.write_bytes(body)
        with pytest.raises(CheckpointError) as err:
            load_folder(run_copy)
        text = one_line(err)
        assert text.startswith(f"{weights}: not a shortcutlm weights file, or corrupt ("), name
        assert f"--out {run_copy} --fresh" in text and "restore" in text, name


def test_unreadable_weights_give_one_line(run_copy):
    weights = run_copy / WEIGHTS
    good = weights.read_bytes()
    each_is_one_line(run_copy, weights, {**corruptions(good), "header only": good[:8]})
    weights.write_bytes(good)
    state = load_folder(run_copy).model.state_dict()
    write_weights(weights, {"unrelated.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError) as err:
        load_folder(run_copy)
    assert f"{weights}: the weights do not fit model_config.json (" in one_line(err)
    write_weights(weights, state)
    assert load_folder(run_copy).model.config.block_size == 32


def test_unreadable_legacy_weights_give_one_line(run_copy):
    """A folder saved before safetensors holds model.pt, a torch save: its faults read as one line too."""
    state = load_folder(run_copy).model.state_dict()
    (run_copy / WEIGHTS).unlink()
    weights = run_copy / LEGACY_WEIGHTS
    torch.save(state, weights)
    good = weights.read_bytes()
    each_is_one_line(run_copy, weights, corruptions(good))
    torch.save({"model": NotATensor()}, weights)
    with pytest.raises(CheckpointError) as err:
        load_folder(run_copy)
    assert "holds objects other than tensors" in one_line(err)
    torch.save({"unrelated.weight": torch.zeros(3)}, weights)
    with pytest.raises(CheckpointError) as err:
        load_folder(run_copy)
    assert f"{weights}: the weights do not fit model_config.json (" in one_line(err)
    weights.write_bytes(good)
    assert load_folder(run_copy).model.config.block_size == 32


def test_an_unreadable_trainer_state_names_the_fix(run_copy, text8_shards):
    state = run_copy / TRAINER_STATE
    good = state.read_bytes()
    bodies = {**corruptions(good), "pickled object": None, "not lightning": None}
    for name in bodies:
        if name == "pickled object":
            torch.save({"state_dict": {}, "global_step": 2, "loops": NotATensor()}, state)
        elif name == "not lightning":
            torch.save({"weight": torch.zeros(2)}, state)
        else:
            state.write_bytes(bodies[name])
        with pytest.raises(CheckpointError) as err:
            train(recipe(max_steps=4, val_every=2), "baseline", text8_shards, run_copy, progress=False)
        text = one_line(err)
        assert text.startswith(f"{state}: "), name
        assert text.endswith("run again with --fresh to start over, or delete it"), name
    assert "not a Lightning trainer checkpoint" in text
