"""Weights as safetensors: tied weights stored once, and folders saved before (model.pt) still load,
evaluate, generate and convert, with the same logits either way."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from shortcutlm.artifacts.checkpoint import LEGACY_WEIGHTS, WEIGHTS, CheckpointFolder, load_folder, save_folder
from shortcutlm.artifacts.weights import read_weights, write_weights
from shortcutlm.cli import main as cli_main
from shortcutlm.run.evaluation import evaluate_checkpoint
from shortcutlm.models import GPT, GPTConfig


def legacy_copy(folder: Path, to: Path) -> Path:
    """``folder`` as the suite saved it before safetensors: the state dict by ``torch.save`` in model.pt."""
    copy = Path(shutil.copytree(folder, to))
    state = {k: v.detach().cpu() for k, v in load_folder(folder).model.state_dict().items()}
    (copy / WEIGHTS).unlink()
    torch.save(state, copy / LEGACY_WEIGHTS)
    return copy


def logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return load_folder(folder).model(ids)


def test_tied_weights_are_stored_once_and_tied_again(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=16, block_size=8, tie_embeddings=True))
    path = write_weights(tmp_path / "w.safetensors", model.state_dict())
    with safe_open(path, framework="pt") as fh:
        stored = set(fh.keys())
    assert "embeddings.0.weight" in stored and "heads.0.weight" not in stored  # safetensors refuses shared tensors
    state = read_weights(path)
    assert state.keys() == model.state_dict().keys()
    again = GPT(model.config)
    again.load_state_dict(state)
    assert again.heads[0].weight is again.embeddings[0].weight  # the model still ties them after loading
    ids = torch.randint(0, 50, (2, 8))
    assert torch.equal(model(ids), again(ids))


def test_untied_heads_are_stored_apart(tmp_path):
    model = GPT(GPTConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, block_size=8, tie_embeddings=False))
    path = write_weights(tmp_path / "w.safetensors", model.state_dict())
    with safe_open(path, framework="pt") as fh:
        assert {"embeddings.0.weight", "heads.0.weight"} <= set(fh.keys())
    state = read_weights(path)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_checkpoint_is_written_as_safetensors(text_ckpt):
    files = CheckpointFolder(text_ckpt)
    assert files.weights_path == text_ckpt / WEIGHTS and not (text_ckpt / LEGACY_WEIGHTS).exists()
    assert (text_ckpt / WEIGHTS).read_bytes()[8:9] == b"{"  # an 8-byte length, then the JSON header


def test_legacy_and_safetensors_folders_give_the_same_logits(text_ckpt, tmp_path):
    ids = torch.randint(0, load_folder(text_ckpt).model.config.vocab_size, (2, 16),
                        generator=torch.Generator().manual_seed(1))
    legacy = legacy_copy(text_ckpt, tmp_path / "legacy")
    assert CheckpointFolder(legacy).weights_path == legacy / LEGACY_WEIGHTS
    assert torch.equal(logits(text_ckpt, ids), logits(legacy, ids))
    # model.pt -> model.safetensors: load the legacy folder, save it again
    ck = load_folder(legacy)
    converted = save_folder(tmp_path / "converted", ck.model, ck.recipe, ck.hparams, ck.files.tokenizer_dir, ck.data)
    assert (converted / WEIGHTS).is_file() and not (converted / LEGACY_WEIGHTS).exists()
    assert torch.equal(logits(legacy, ids), logits(converted, ids))
    # a save into the legacy folder itself (a resumed run) leaves one weights file, the new one
    save_folder(legacy, ck.model, ck.recipe, ck.hparams, ck.files.tokenizer_dir, ck.data)
    assert (legacy / WEIGHTS).is_file() and not (legacy / LEGACY_WEIGHTS).exists()
    assert torch.equal(logits(text_ckpt, ids), logits(legacy, ids))


def test_a_legacy_folder_evaluates_and_generates(text_ckpt, tmp_path):
    legacy = legacy_copy(text_ckpt, tmp_path / "legacy")
    ours = evaluate_checkpoint(text_ckpt, split="valid", progress=False)
    theirs = evaluate_checkpoint(legacy, split="valid", progress=False)
    assert theirs.loss == ours.loss and theirs.loss.tokens > 0
    for folder, out in ((text_ckpt, tmp_path / "a"), (legacy, tmp_path / "b")):
        assert cli_main(["generate", str(folder), "--tokens", "12", "--seed", "3", "--quiet", "--out", str(out)]) == 0
    assert (tmp_path / "a" / "unconditional-seed3.txt").read_text() == \
        (tmp_path / "b" / "unconditional-seed3.txt").read_text()


def test_a_legacy_folder_resumes_into_safetensors(tmp_path, text8_shards):
    """A run saved as model.pt and resumed now ends as the uninterrupted run, in one weights file."""
    from shortcutlm.run.recipe import Recipe, from_dict
    from shortcutlm.run.training import train
    from tests.conftest import tiny_recipe_dict

    recipe = from_dict(Recipe, tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}))
    whole = train(recipe, "baseline", text8_shards, tmp_path / "whole", progress=False)
    split = train(recipe, "baseline", text8_shards, tmp_path / "split", progress=False, stop_after=2)
    torch.save(CheckpointFolder(split).read_weights(), split / LEGACY_WEIGHTS)  # as the suite saved it before
    (split / WEIGHTS).unlink()
    assert CheckpointFolder(split).weights_path == split / LEGACY_WEIGHTS and load_folder(split).hparams.step == 2
    train(recipe, "baseline", text8_shards, split, progress=False)
    assert (split / WEIGHTS).is_file() and not (split / LEGACY_WEIGHTS).exists()
    a, b = CheckpointFolder(whole).read_weights(), CheckpointFolder(split).read_weights()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
