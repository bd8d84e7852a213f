"""Fine-tuning: ``train --init-from CKPT`` on other text prepared with the checkpoint's tokenizer
(``prepare --tokenizer-from CKPT``) starts from the checkpoint's weights, and says where it started."""
from __future__ import annotations

import csv
import logging
import random
from pathlib import Path

import pytest
import torch
import yaml

from shortcutlm.artifacts.checkpoint import CheckpointFolder, load_folder
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.datasets.batches import train_batches
from shortcutlm.models.losses import stream_losses
from shortcutlm.tokenizers.base import ignored_ids
from shortcutlm.run.recipe import Recipe, from_dict
from shortcutlm.run.training import train
from tests.cli_lines import one_line
from tests.conftest import tiny_recipe_dict, write_text8

# Other text in text8's published form (lower-case a-z words separated by single spaces), mostly of words
# the source corpus does not use, so the fine-tune's data differs from what the checkpoint saw.
OTHER_WORDS = ("to be or not to be that is the question whether tis nobler in the mind to suffer the slings "
               "and arrows of outrageous fortune or to take arms against a sea of troubles").split()


def other_text8(path: Path, chars: int = 30_000, seed: int = 7) -> Path:
    rng = random.Random(seed)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(OTHER_WORDS))
    path.write_text(" ".join(words)[:chars])
    return path


def recipe_dict(**train_settings) -> dict:
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text", "vocab_size": 300},
                            **train_settings)
    data["variants"] = {"baseline": {}, "deeper": {"n_layer": 3}}
    return data


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory, text8_shards) -> Path:
    """A tiny text model trained on the text8 fixture."""
    out = tmp_path_factory.mktemp("finetune") / "source"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHORTCUTLM_CACHE", str(out.parent / "cache"))
        return train(from_dict(Recipe, recipe_dict()), "baseline", text8_shards, out, progress=False)


@pytest.fixture(scope="module")
def other_shards(tmp_path_factory, source) -> Path:
    """Other text, encoded with the source checkpoint's saved tokenizer by the command line."""
    from shortcutlm.cli import main as cli_main

    root = tmp_path_factory.mktemp("other")
    other_text8(root / "text8")
    out = root / "shards"
    assert cli_main(["prepare", "--source", "text8", "--path", str(root / "text8"), "--option", "chunk_chars=2000",
                     "--tokenizer-from", str(source), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    return out


def first_loss(folder: Path) -> float:
    with (folder / "metrics.csv").open() as fh:
        return next(float(r["train/loss"]) for r in csv.DictReader(fh)
                    if r.get("train/loss") and float(r["opt_step"]) == 0)


def test_prepare_with_a_checkpoints_tokenizer_keeps_its_ids(source, other_shards):
    manifest = ShardManifest.read(other_shards)
    ours = load_folder(source).tokenizer
    assert manifest.fingerprint == ours.fingerprint() == CheckpointFolder(source).data().fingerprint
    assert manifest.tokenizer_settings["from"] == str((source / "tokenizer").resolve())
    text = "to be or not to be"
    assert ours.decode_text(ours.encode_text(text)) == text


def test_finetuning_starts_from_the_checkpoints_weights(source, other_shards, tmp_path):
    data = recipe_dict(max_steps=3, val_every=3)
    out = train(from_dict(Recipe, data), "baseline", other_shards, tmp_path / "tuned", progress=False, init_from=source)
    # The first step's loss is the source model's loss on that batch: the weights carried over.
    ck = load_folder(source)
    settings = from_dict(Recipe, data).train
    batch = next(iter(train_batches(other_shards, 32, settings.batch_size, settings.seed)))
    ignored = ignored_ids(ShardManifest.read(other_shards).tokenizer.special_ids)
    with torch.no_grad():
        expected = stream_losses(ck.model(batch[..., :-1]), batch[..., 1:], ignored).mean().item()
    assert first_loss(out) == pytest.approx(expected, rel=1e-5)
    fresh = train(from_dict(Recipe, data), "baseline", other_shards, tmp_path / "fresh", progress=False)
    assert abs(first_loss(fresh) - expected) > 0.1  # fresh weights start elsewhere: the check can fail
    # The new checkpoint records where it started, and trained at the fine-tuning rate.
    hparams = CheckpointFolder(out).hparams()
    assert hparams.init_from == {"folder": str(source.resolve()), "fingerprint": ck.fingerprint,
                                    "step": CheckpointFolder(source).step}
    assert hparams.train["lr"] == pytest.approx(data["train"]["lr"] / 10)
    assert hparams.step == 3 and load_folder(out).fingerprint == ck.fingerprint


def test_frozen_parts_keep_the_checkpoints_values(source, other_shards, tmp_path):
    data = recipe_dict(max_steps=2, val_every=2, freeze=["embeddings", "blocks.0-0"], finetune_lr=1e-2)
    out = train(from_dict(Recipe, data), "baseline", other_shards, tmp_path / "tuned", progress=False, init_from=source)
    before, after = CheckpointFolder(source).read_weights(), CheckpointFolder(out).read_weights()
    kept = {k for k in before if torch.equal(before[k], after[k])}
    assert {"embeddings.0.weight", "heads.0.weight"} <= kept  # tied heads are the embedding
    assert {k for k in before if k.startswith("blocks.0.")} <= kept
    assert not any(k.startswith("blocks.1.") for k in kept) and "ln_f.weight" not in kept
    assert CheckpointFolder(out).hparams().train["lr"] == 1e-2


def test_other_tokenizer_shape_or_freeze_is_refused_in_one_line(source, other_shards, text8_shards, tmp_path,
                                                                  capsys):
    recipe = write_recipe(tmp_path / "r.yaml", recipe_dict())
    # data prepared with its own tokenizer: the ids mean other things to the checkpoint
    own = tmp_path / "own"
    from shortcutlm.datasets.prepare import prepare
    other_text8(tmp_path / "text8")
    prepare({"name": "text8", "path": str(tmp_path / "text8")}, {"domain": "text", "vocab_size": 300}, own,
            workers=0, progress=False)
    line = one_line(capsys, ["train", str(recipe), "--data", str(own), "--out", str(tmp_path / "a"),
                             "--init-from", str(source), "--no-progress"])
    assert f"--init-from {source} was trained with tokenizer fingerprint" in line
    assert f"--tokenizer-from {source}" in line
    # another shape
    line = one_line(capsys, ["train", str(recipe), "--variant", "deeper", "--data", str(other_shards),
                             "--out", str(tmp_path / "b"), "--init-from", str(source), "--no-progress"])
    assert "holds a model of another shape" in line and "n_layer 2 -> 3" in line
    # a block the model does not have
    line = one_line(capsys, ["train", str(recipe), "--data", str(other_shards), "--out", str(tmp_path / "c"),
                             "--init-from", str(source), "--set", "train.freeze=[blocks.1-2]", "--no-progress"])
    assert "train.freeze: 'blocks.1-2' is outside the model's blocks 0-1" in line
    assert not any((tmp_path / n).exists() for n in "abc")


def test_a_finetune_resumes_only_from_where_it_started(source, other_shards, text8_shards, tmp_path):
    data = recipe_dict(max_steps=3, val_every=3)
    out = tmp_path / "tuned"
    train(from_dict(Recipe, data), "baseline", other_shards, out, progress=False, init_from=source, stop_after=1)
    with pytest.raises(ValueError, match=rf"started from {source.resolve()}.*run again with --init-from"):
        train(from_dict(Recipe, data), "baseline", other_shards, out, progress=False)
    train(from_dict(Recipe, data), "baseline", other_shards, out, progress=False, init_from=source)
    assert CheckpointFolder(out).hparams().step == 3


def test_prepare_tokenizer_from_a_folder_without_one_is_one_line(tmp_path, capsys):
    write_text8(tmp_path / "text8", chars=3000)
    line = one_line(capsys, ["prepare", "--source", "text8", "--path", str(tmp_path / "text8"),
                             "--tokenizer-from", str(tmp_path), "--out", str(tmp_path / "out")])
    assert f"--tokenizer-from {tmp_path}: no saved tokenizer there" in line
    line = one_line(capsys, ["prepare", "--source", "text8", "--path", str(tmp_path / "text8"), "--tokenizer", "text",
                             "--tokenizer-from", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "without --tokenizer and --set" in line


def test_a_saved_midi_tokenizer_is_never_trained_again_even_in_worker_processes(tmp_path, caplog):
    """A MIDI vocabulary whose BPE target is below its base vocabulary learns nothing and keeps saying it
    could: encoding other MIDI with it (``--tokenizer-from``, here through real worker processes) uses it
    as saved, never trains it again."""
    from shortcutlm.datasets.prepare import prepare
    from shortcutlm.datasets.tokenizer_fit import tokenizer_from
    from shortcutlm.tokenizers import load_tokenizer

    cache = str(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="shortcutlm.tokenizers.midi"):
        first = prepare({"name": "bach_chorales", "limit": 6, "cache": cache}, {"domain": "midi", "vocab_size": 100},
                        tmp_path / "first", workers=0, progress=False)
    # Said once, in one line, when it is trained: the target asked for cannot be reached.
    said = [r.getMessage() for r in caplog.records if "not above the base vocabulary" in r.getMessage()]
    assert len(said) == 1 and "vocab_size 100 is not above the base vocabulary of 357 ids (REMI" in said[0]
    saved = load_tokenizer(tmp_path / "first" / "tokenizer")
    assert saved.needs_training  # the state this test is about
    again = prepare({"name": "bach_chorales", "limit": 9, "cache": cache}, tokenizer_from(tmp_path / "first"),
                    tmp_path / "again", workers=1, progress=False)
    assert again["tokenizer"]["fingerprint"] == first["tokenizer"]["fingerprint"] == saved.fingerprint()
    assert sum(s["documents"] for s in again["splits"].values()) > 0
