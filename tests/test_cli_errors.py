"""A user's mistake in any command is one line on stderr and exit code 2, with no folder left behind."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from shortcutlm.cli import main
from shortcutlm.run.recipe import load_recipe
from tests.conftest import tiny_recipe_dict


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "r.yaml"
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, max_steps=2)
    data["presets"] = {"tiny": {"train": {"max_steps": 2}}}
    path.write_text(yaml.safe_dump(data))
    return path


def one_line_error(capsys, argv: list[str], command: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"shortcutlm {command}: error: "), err
    return lines[0]


def test_train_and_recipe_mistakes_are_one_line(tmp_path, capsys, recipe, text8_shards, one_thread):
    out = tmp_path / "run"
    train = ["train", str(recipe), "--data", str(text8_shards), "--out", str(out), "--no-progress"]
    assert "no such recipe file" in one_line_error(capsys, ["recipe", str(tmp_path / "nope.yaml")], "recipe")
    assert "no such recipe file" in one_line_error(capsys, ["train", str(tmp_path / "nope.yaml"), "--data", "x",
                                                            "--out", str(out)], "train")
    assert "did you mean 'tiny'?" in one_line_error(capsys, train + ["--preset", "tinyy"], "train")
    assert "did you mean 'baseline'?" in one_line_error(capsys, train + ["--variant", "baselin"], "train")
    assert "no manifest here" in one_line_error(capsys, ["train", str(recipe), "--data", str(tmp_path / "none"),
                                                         "--out", str(out)], "train")
    line = one_line_error(capsys, train + ["--set", "train.lrr=1e-3"], "train")
    assert "--set train.lrr=1e-3" in line and "did you mean 'lr'?" in line and str(recipe) not in line
    wrong_type = tmp_path / "wrong.yaml"
    data = yaml.safe_load(recipe.read_text())
    data["train"]["max_steps"] = "many"
    wrong_type.write_text(yaml.safe_dump(data))
    line = one_line_error(capsys, ["train", str(wrong_type), "--data", str(text8_shards), "--out", str(out)], "train")
    assert "wrong.yaml" in line and "expected an integer" in line
    assert not out.exists()  # none of the refused runs made its output folder

    assert main(train) == 0
    capsys.readouterr()
    line = one_line_error(capsys, train + ["--set", "train.lr=1e-2"], "train")
    assert "holds a run with other settings" in line and "--fresh" in line


def test_fsdp_on_cpu_is_refused_before_anything_starts(tmp_path, capsys, recipe, text8_shards):
    out = tmp_path / "fsdp"
    line = one_line_error(capsys, ["train", str(recipe), "--data", str(text8_shards), "--out", str(out),
                                   "--set", "train.strategy=fsdp", "--set", "train.accelerator=cpu"], "train")
    assert "needs GPUs" in line and "ddp" in line
    assert not out.exists()


def test_a_corrupt_shard_is_one_line_and_leaves_no_folder(tmp_path, capsys, recipe, text8_shards, one_thread):
    data = tmp_path / "shards"
    shutil.copytree(text8_shards, data)
    shard = next(data.glob("*train*.tar"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    out = tmp_path / "run"
    line = one_line_error(capsys, ["train", str(recipe), "--data", str(data), "--out", str(out), "--no-progress"],
                          "train")
    assert shard.name in line and "prepare" in line
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path, recipe):
    with pytest.raises(Exception, match="did you mean 'tiny'"):
        main(["train", str(recipe), "--data", "x", "--out", str(tmp_path / "o"), "--preset", "tinyy", "--debug"])


@pytest.mark.parametrize("written,value", [("3e-4", 3e-4), ("1e-3", 1e-3), ("6.0e-4", 6e-4), (".5", 0.5),
                                           ("1E-2", 1e-2), ("2e+0", 2.0)])
def test_numbers_as_people_write_them(tmp_path, written, value):
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"})
    text = yaml.safe_dump(data).replace("lr: 0.003", f"lr: {written}").replace("min_lr: 0.0003", "min_lr: 1.0e-6")
    assert f"lr: {written}" in text
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert load_recipe(path).train.lr == pytest.approx(value)  # in the file
    assert load_recipe(path, overrides=[f"train.lr={written}"]).train.lr == pytest.approx(value)  # in --set


def test_integers_with_underscores(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}))
                    .replace("max_steps: 6", "max_steps: 1_000"))
    assert load_recipe(path).train.max_steps == 1000
    assert load_recipe(path, overrides=["train.max_steps=2_000"]).train.max_steps == 2000


def test_a_failed_recipe_leaves_no_empty_folders(tmp_path, capsys):
    out = tmp_path / "runs" / "ls"
    line = one_line_error(capsys, ["recipe", "recipes/librispeech.yaml", "--preset", "tiny", "--out", str(out),
                                   "--set", f"source.path={tmp_path / 'nowhere'}"], "recipe")
    assert "does not exist" in line
    assert not (tmp_path / "runs").exists()


def test_a_failed_prepare_leaves_no_empty_folders(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "runs" / "data"
    line = one_line_error(capsys, ["prepare", "--source", "folder", "--path", str(empty), "--tokenizer", "midi",
                                   "--out", str(out)], "prepare")
    assert "no file under" in line and ".mid" in line
    assert not (tmp_path / "runs").exists()
