"""Training: exact resume, recipe validation, and DDP on two CPU processes."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.cli import main as cli_main
from shortcutlm.core.config_schema import ConfigError
from shortcutlm.run.recipe import from_dict, Recipe, load_recipe
from shortcutlm.run.training import train
from tests.conftest import shipped_recipes, tiny_recipe_dict


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def curve(folder: Path, key: str = "train/loss") -> dict[float, float]:
    with (folder / "metrics.csv").open() as fh:
        return {float(r["opt_step"]): float(r[key]) for r in csv.DictReader(fh) if r.get(key)}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return CheckpointFolder(folder).read_weights()


@pytest.fixture
def text8_recipe(tmp_path, text8_shards) -> Recipe:
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, accumulate=2)
    data["model"]["dropout"] = 0.1  # so the RNG state matters for resuming
    return from_dict(Recipe, data)


def test_resumed_run_equals_uninterrupted_run(tmp_path, text8_shards, text8_recipe):
    whole = train(text8_recipe, "shortcut_resformer", text8_shards, tmp_path / "whole", progress=False)
    split = tmp_path / "split"
    train(text8_recipe, "shortcut_resformer", text8_shards, split, progress=False, stop_after=2)
    assert not yaml.safe_load((split / "hparams.json").read_text())["finished"]
    train(text8_recipe, "shortcut_resformer", text8_shards, split, progress=False)
    a, b = weights(whole), weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert curve(whole) == curve(split)
    assert curve(whole, "val/loss") == curve(split, "val/loss")
    assert sorted(curve(split)) == [float(s) for s in range(6)]


def test_finished_run_is_kept(tmp_path, text8_shards, text8_recipe):
    out = train(text8_recipe, "baseline", text8_shards, tmp_path / "run", progress=False)
    stamp = CheckpointFolder(out).weights_path.stat().st_mtime_ns
    train(text8_recipe, "baseline", text8_shards, out, progress=False)
    assert CheckpointFolder(out).weights_path.stat().st_mtime_ns == stamp


def test_a_checkpoint_of_other_settings_is_refused(tmp_path, text8_shards, text8_recipe):
    out = train(text8_recipe, "baseline", text8_shards, tmp_path / "run", progress=False, stop_after=2)
    text8_recipe.train.lr = 1e-2
    with pytest.raises(ValueError, match=r"train.lr: 0.003 -> 0.01"):
        train(text8_recipe, "baseline", text8_shards, out, progress=False)
    with pytest.raises(ValueError, match=r"model.shortcut: 'none' -> 'depth'"):
        train(text8_recipe, "shortcut_resformer", text8_shards, out, progress=False)
    assert train(text8_recipe, "baseline", text8_shards, out, progress=False, fresh=True) == out


def test_checkpoint_folder_describes_itself(tmp_path, text8_shards, text8_recipe):
    from shortcutlm.artifacts.checkpoint import load_folder

    out = train(text8_recipe, "shortcut_resformer", text8_shards, tmp_path / "run", progress=False)
    ck = load_folder(out)
    assert ck.model.config.shortcut == "depth" and ck.model.config.value_residual == "resformer"
    assert ck.recipe["variant"] == "shortcut_resformer" and ck.recipe["train"]["max_steps"] == 6
    assert ck.hparams.step == 6 and ck.hparams.finished
    assert ck.tokenizer.fingerprint() == ck.data["fingerprint"]
    assert ck.model.config.vocab_size == ck.tokenizer.vocab_size


def test_recipe_errors_name_the_problem(tmp_path):
    good = tiny_recipe_dict({"name": "shakespeare"}, {"domain": "text"})
    path = write_recipe(tmp_path / "r.yaml", good)
    assert load_recipe(path).train.max_steps == 6
    assert load_recipe(path, overrides=["train.max_steps=9", "model.n_embd=64"]).model["n_embd"] == 64
    cases = [
        ({**good, "trian": {}}, "unknown key.*trian"),
        ({**good, "train": {**good["train"], "lr": "fast"}}, "train.lr: expected a number"),
        ({**good, "train": {**good["train"], "max_steps": 0}}, "max_steps must be >= 1"),
        ({**good, "variants": {"bad": {"shortcut": "sideways"}}}, "variant bad.*shortcut"),
        ({**good, "model": {"vocab_size": 10}}, "comes from the tokenizer"),
        ({**good, "variants": {"a.b": {}}}, "variant name"),
    ]
    for data, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as err:
            load_recipe(write_recipe(tmp_path / "bad.yaml", data))
        assert "bad.yaml" in str(err.value)
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        load_recipe(path, preset="huge")
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(path, overrides=["train.max_steps"])
    with pytest.raises(ConfigError, match="no such recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_every_shipped_recipe_and_preset_validates():
    checked = []
    for path in shipped_recipes():
        raw = yaml.safe_load(path.read_text())
        if "datasets" in raw:  # the ablation grid has its own schema (shortcutlm/ablation/config.py)
            continue
        presets = raw.get("presets", {})
        for preset in [None, *presets]:
            recipe = load_recipe(path, preset)
            for variant in recipe.variants:
                recipe.model_config(variant, vocab_size=1024, n_streams=2)
                checked.append((path.name, preset, variant))
    assert len({name for name, _, _ in checked}) >= 3, checked


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_at_the_same_global_batch(tmp_path, text8_shards):
    """Gloo on CPU. The train split is one document, so the two ranks take alternate windows
    of the same stream a single process reads in order: the global batches are identical."""
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, max_steps=4, val_every=2)
    recipe = write_recipe(tmp_path / "r.yaml", data)
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "shortcutlm.cli", "train", str(recipe), "--data", str(text8_shards),
                    "--out", str(single), "--variant", "shortcut_resformer", "--no-progress",
                    "--set", "train.accelerator=cpu"], check=True, cwd=Path.cwd(), timeout=300)
    ddp = tmp_path / "ddp"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-m", "shortcutlm.cli", "train", str(recipe), "--data", str(text8_shards),
                    "--out", str(ddp), "--variant", "shortcut_resformer", "--no-progress",
                    "--set", "train.accelerator=cpu", "--set", "train.devices=2", "--set", "train.strategy=ddp",
                    "--set", "train.batch_size=2"], check=True, cwd=Path.cwd(), env=env, timeout=300)
    assert yaml.safe_load((ddp / "hparams.json").read_text())["world_size"] == 2
    one, two = curve(single), curve(ddp)
    assert one.keys() == two.keys() == {0.0, 1.0, 2.0, 3.0}
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-4)
    assert curve(ddp, "val/loss") == pytest.approx(curve(single, "val/loss"), abs=1e-4)
    a, b = weights(single), weights(ddp)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-4, rtol=1e-3)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_of_one_process_match_one_node_of_two(tmp_path, text8_shards):
    """Multi-node as a cluster launches it: one process per node started by hand (as torchrun or srun
    would), Lightning's node variables set, gloo over 127.0.0.1. Same global batch, same ranks, same
    collective: the weights equal those of one node running two processes."""
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, max_steps=4, val_every=2,
                            batch_size=2)
    recipe = write_recipe(tmp_path / "r.yaml", data)
    train_cmd = [sys.executable, "-m", "shortcutlm.cli", "train", str(recipe), "--data", str(text8_shards),
                 "--variant", "shortcut_resformer", "--no-progress", "--set", "train.accelerator=cpu",
                 "--set", "train.strategy=ddp"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    one_node = tmp_path / "one_node"
    subprocess.run([*train_cmd, "--out", str(one_node), "--set", "train.devices=2"], check=True, env=env, timeout=300)
    two_nodes = tmp_path / "two_nodes"
    port = free_port()
    nodes = [subprocess.Popen([*train_cmd, "--out", str(two_nodes), "--set", "train.devices=1",
                               "--set", "train.num_nodes=2"],
                              env={**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                                   "NODE_RANK": str(rank), "LOCAL_RANK": "0"})
             for rank in range(2)]
    try:
        assert [node.wait(timeout=300) for node in nodes] == [0, 0]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    hparams = yaml.safe_load((two_nodes / "hparams.json").read_text())
    assert hparams["world_size"] == 2 and hparams["finished"]
    assert curve(two_nodes) == pytest.approx(curve(one_node), abs=1e-6)
    a, b = weights(one_node), weights(two_nodes)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5)


#: Every reading of the decoder, each with a value-residual mode: the variants the compiled and FSDP runs train.
EVERY_READING = pytest.mark.parametrize(
    "variant", [{}, {"value_residual": "svformer"}, {"value_residual": "resformer", "shortcut": "full"},
                {"value_residual": "learnable", "shortcut": "depth"},
                {"value_residual": "svformer", "shortcut": "last_layer"}],
    ids=["plain", "svformer", "full+resformer", "depth+learnable", "last_layer+svformer"])


@pytest.mark.slow
@EVERY_READING
def test_compiled_training_matches_eager(tmp_path, text8_shards, variant):
    """``train.compile: true`` (every ``paper`` preset sets it) trains through torch.compile's CPU
    backend to the eager run's losses; dropout is off so both draw no random numbers."""
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, max_steps=3, val_every=3)
    data["variants"] = {"v": variant}
    eager = train(from_dict(Recipe, data), "v", text8_shards, tmp_path / "eager", progress=False)
    data["train"]["compile"] = True
    compiled = train(from_dict(Recipe, data), "v", text8_shards, tmp_path / "compiled", progress=False)
    a, b = curve(eager), curve(compiled)
    assert a.keys() == b.keys() == {0.0, 1.0, 2.0}
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-4)
    assert curve(compiled, "val/loss") == pytest.approx(curve(eager, "val/loss"), abs=1e-4)
    for key, tensor in weights(eager).items():
        torch.testing.assert_close(weights(compiled)[key], tensor, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning runs FSDP on CUDA only (CPU runs are refused)")
@EVERY_READING
def test_fsdp_trains_every_variant_and_its_checkpoint_loads(tmp_path, text8_shards, variant):
    """FSDP on the GPU with every variant (the full shortcut's per-depth cache, SVFormer's layers
    without value projections): it trains to the single-device losses, and the checkpoint it saves
    is read by ``evaluate`` and ``generate`` like any other."""
    from shortcutlm.run.evaluation import evaluate_checkpoint

    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, max_steps=3, val_every=3,
                            accelerator="gpu", devices=1, precision="32-true")
    data["variants"] = {"v": variant}
    plain = train(from_dict(Recipe, data), "v", text8_shards, tmp_path / "plain", progress=False)
    data["train"]["strategy"] = "fsdp"
    sharded = train(from_dict(Recipe, data), "v", text8_shards, tmp_path / "fsdp", progress=False)
    a, b = curve(plain), curve(sharded)
    assert a.keys() == b.keys() == {0.0, 1.0, 2.0}
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-3)
    assert weights(sharded).keys() == weights(plain).keys()
    mine = evaluate_checkpoint(sharded, split="valid", device="cuda", progress=False)
    theirs = evaluate_checkpoint(plain, split="valid", device="cuda", progress=False)
    assert mine.loss_nats == pytest.approx(theirs.loss_nats, abs=1e-3)
    assert cli_main(["generate", str(sharded), "--tokens", "8", "--seed", "0", "--device", "cuda",
                     "--out", str(tmp_path / "gen")]) == 0


def test_fresh_replaces_the_old_run_with_one_of_the_new_settings(tmp_path, text8_shards, capsys):
    """``--fresh`` on a folder that holds only what a previous run wrote: nothing of the old run is
    left (its weights, trainer state, sittings' logs, curve rows), and every record names the new run."""
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe_dict({"name": "text8", "path": "unused"},
                                                                {"domain": "text"}, ckpt_minutes=0))
    out = tmp_path / "run"
    command = ["train", str(recipe), "--data", str(text8_shards), "--out", str(out), "--no-progress"]
    assert cli_main([*command, "--variant", "baseline"]) == 0
    old_weights = weights(out)
    assert not any(k.startswith("shortcut.") for k in old_weights)
    new = [*command, "--variant", "shortcut_resformer", "--set", "train.lr=0.01", "--set", "train.max_steps=4"]
    with pytest.raises(ConfigError, match="other settings"):  # without --fresh the old run is kept
        train(load_recipe(recipe, overrides=["train.lr=0.01", "train.max_steps=4"]), "shortcut_resformer",
              text8_shards, out, progress=False)
    assert cli_main([*new, "--fresh"]) == 0
    capsys.readouterr()

    hparams = yaml.safe_load((out / "hparams.json").read_text())
    assert hparams["step"] == 4 and hparams["finished"]
    assert hparams["train"]["lr"] == 0.01 and hparams["train"]["max_steps"] == 4
    config = yaml.safe_load((out / "model_config.json").read_text())
    assert config["shortcut"] == "depth" and config["value_residual"] == "resformer"
    recorded = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recorded["variant"] == "shortcut_resformer" and recorded["train"]["lr"] == 0.01
    state = torch.load(out / "trainer" / "last.ckpt", weights_only=True, map_location="cpu")
    assert state["global_step"] == 4
    assert any(k.startswith("shortcut.") for k in weights(out))  # the new model's weights, not the old
    # One sitting, the new one: the old run's logs and curve rows are gone.
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["version_0"]
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["version_0"]
    lr = curve(out, "train/lr")
    assert sorted(lr) == [0.0, 1.0, 2.0, 3.0]
    assert lr[1.0] == pytest.approx(0.01)  # the new peak (warmup of 2 steps), not the old run's 0.003
    assert sorted(curve(out)) == [0.0, 1.0, 2.0, 3.0]
    # The same command without --fresh now finds the new run finished and keeps it.
    assert cli_main(new) == 0
    assert yaml.safe_load((out / "hparams.json").read_text())["step"] == 4
