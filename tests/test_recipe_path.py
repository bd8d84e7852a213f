"""``shortcutlm recipe RECIPE --path P``: one flag points a recipe at its data; what goes wrong before
any work starts is one line that names the way out, and leaves no run folder behind."""
from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

from shortcutlm.cli import main as cli_main
from tests.datasets.published import make_librispeech

RECIPES = Path(__file__).parents[1] / "recipes"


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_default_path_names_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(RECIPES, tmp_path / "recipes")
    assert cli_main(["recipe", "recipes/maestro.yaml", "--preset", "tiny"]) == 2
    line = one_line(capsys)
    assert "recipe maestro: data/maestro-v3.0.0 does not exist (its source.path, relative to " in line
    assert line.endswith("--path /where/it/lies")
    assert cli_main(["recipe", "recipes/maestro.yaml", "--path", str(tmp_path / "nowhere")]) == 2
    assert one_line(capsys).endswith(f"--path {tmp_path / 'nowhere'}: no such file or folder")
    assert cli_main(["recipe", "recipes/bach_chorales.yaml", "--path", str(tmp_path)]) == 2
    assert "reads no path; leave out --path" in one_line(capsys)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_failed_encodec_download_is_one_line_naming_both_ways_out(tmp_path, monkeypatch, capsys):
    """No network: the download fails as urllib fails without one (patched here so the test does not
    depend on this machine's network); `recipe` says so in one line, not a traceback."""
    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    make_librispeech(tmp_path / "data", {"train-clean-100": [("103", "1240", 2)], "dev-clean": [("84", "121123", 1)],
                                         "test-clean": [("1089", "134686", 1)]}, seconds=0.2)
    out = tmp_path / "run"
    code = cli_main(["recipe", str(RECIPES / "librispeech.yaml"), "--path", str(tmp_path / "data"), "--out", str(out),
                     "--stage", "prepare", "--no-progress"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    line = lines[-1]
    assert line.startswith("shortcutlm recipe: error: acoustic tokenizer: could not download the pretrained")
    assert "weights=mel_kmeans" in line and "encodec_24khz-d7cc33bc.th" in line and "Traceback" not in "\n".join(lines)
    assert not out.exists()


def test_a_source_that_cannot_be_read_as_asked_is_one_line(tmp_path, capsys):
    """The folder source refuses to mix files that name a split with files that do not: inside `recipe`
    too, that is one line, not a traceback."""
    import yaml

    from tests.conftest import tiny_recipe_dict

    data = tmp_path / "texts"
    data.mkdir()
    for name in ("wiki.train.raw", "wiki.valid.raw", "wiki.test.raw", "notes.raw"):
        (data / name).write_text("some words of text\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"name": "folder", "path": str(data), "extensions": ".raw"},
                                                      {"domain": "text", "vocab_size": 300})))
    assert cli_main(["recipe", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    line = one_line(capsys)
    assert "3 file(s) under" in line and "(e.g. notes.raw)" in line and "splits=hash" in line
    (tmp_path / "text8").write_bytes(b"anarchism originated as \xff a term")
    assert cli_main(["prepare", "--source", "text8", "--path", str(tmp_path / "text8"), "--tokenizer", "text",
                     "--out", str(tmp_path / "t8"), "--quiet"]) == 2
    assert "is not UTF-8 text (byte 24" in one_line(capsys)
