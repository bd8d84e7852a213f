"""One source for every shared option, and ``--config FILE`` for any command.

A sampling or evaluation setting has one default, in the settings dataclass a recipe reads; the
command line and the Python API take theirs from it. A YAML file of options stands in for the
command line (which still wins), and a wrong file is one line naming it and the key.
"""
from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from shortcutlm.api import Model
from shortcutlm.artifacts.sidecar import read_sidecar
from shortcutlm.cli import build_parser
from shortcutlm.cli import main as cli_main
from shortcutlm.run.recipe import EvaluateSettings, GenerateSettings
from tests.cli_lines import one_line

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLING = ["temperature", "top_k", "top_p", "seed", "samples"]


def parsed(argv: list[str]):
    return build_parser(argv).parse_args(argv)


def test_generate_evaluate_and_the_api_share_the_recipe_defaults():
    generate = parsed(["generate", "CKPT", "--out", "x"])
    for name in SAMPLING + ["seconds"]:
        assert getattr(generate, name) == getattr(GenerateSettings(), name), name
    assert generate.max_new_tokens is None  # the length is resolved when the command runs (see the next test)
    evaluate = parsed(["evaluate", "CKPT", "--out", "x"])
    for field in dataclasses.fields(EvaluateSettings):
        assert getattr(evaluate, field.name) == getattr(EvaluateSettings(), field.name), field.name
    api = inspect.signature(Model.generate).parameters
    for name in SAMPLING:
        assert api[name].default == getattr(GenerateSettings(), name), name


def test_help_shows_each_default_and_none_turns_a_setting_off():
    assert parsed(["generate", "C", "--out", "x", "--top-k", "none"]).top_k is None
    assert parsed(["generate", "C", "--out", "x", "--top-k", "7"]).top_k == 7
    parser = build_parser(["generate"])
    sub = next(a for a in parser._actions if a.dest == "command").choices["generate"]
    text = sub.format_help()
    assert "(default: 50)" in " ".join(text.split()) and "--config FILE" in text


def test_a_config_file_gives_options_and_the_command_line_wins(tmp_path):
    config = tmp_path / "sampling.yaml"
    config.write_text("top-k: 7\ntemperature: 0.5\nseed: 3\nout: samples/\nstop_at_eos: true\n")
    args = parsed(["generate", "CKPT", "--config", str(config), "--seed", "9"])
    assert (args.top_k, args.temperature, args.seed, args.out, args.stop_at_eos) == (7, 0.5, 9, "samples/", True)
    assert parsed(["generate", "CKPT", f"--config={config}"]).seed == 3


@pytest.mark.parametrize("command", [["prepare"], ["train"], ["evaluate"], ["generate"], ["recipe"], ["diagnose"],
                                     ["ablate"], ["bench", "model"], ["bench", "data"], ["bench", "codec"]])
def test_every_command_takes_a_config_file(command, tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text("# nothing set here\n")
    parser = build_parser(command + ["--config", str(config)])
    sub = parser
    for name in command:
        sub = next(a for a in sub._actions if a.dest in ("command", "benchmark")).choices[name]
    assert any(a.option_strings == ["--config"] for a in sub._actions)


@pytest.mark.parametrize("body, says", [
    ("top-q: 3\n", "'top-q' is not an option of this command"),
    ("seed: many\n", "seed: 'many' is not a valid value"),
    ("stop-at-eos: 3\n", "stop-at-eos: give true or false"),
    ("- a\n- b\n", "should map option names to values"),
    ("seed: [1\n", "not valid YAML"),
    ("device: {a: 1}\n", "device: give one value, not a dict"),
])
def test_a_wrong_config_file_is_one_line_naming_it(tmp_path, capsys, body, says):
    config = tmp_path / "wrong.yaml"
    config.write_text(body)
    line = one_line(capsys, ["generate", "CKPT", "--out", "x", "--config", str(config)])
    assert str(config) in line and says in line


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    line = one_line(capsys, ["evaluate", "CKPT", "--out", "x", "--config", str(tmp_path / "nope.yaml")])
    assert "nope.yaml" in line and "no such file" in line


def test_generate_runs_from_a_config_file(text_ckpt, tmp_path, capsys):
    """The file's settings reach the sample: its sidecar records them."""
    config = tmp_path / "gen.yaml"
    out = tmp_path / "out"
    config.write_text(json.dumps({"tokens": 12, "seed": 5, "top-k": 9, "temperature": 0.8, "out": str(out),
                                  "quiet": True}))  # JSON is YAML too
    assert cli_main(["generate", str(text_ckpt), "--config", str(config)]) == 0
    (sample,) = sorted(out.glob("*.txt"))
    record = read_sidecar(sample)
    assert (record.seed, record.max_new_tokens) == (5, 12)
    assert record.settings["top_k"] == 9 and record.settings["temperature"] == 0.8
    # Without a length, the settings' own: what a recipe's generate stage would draw.
    assert cli_main(["generate", str(text_ckpt), "--out", str(tmp_path / "default"), "--quiet"]) == 0
    (sample,) = sorted((tmp_path / "default").glob("*.txt"))
    assert read_sidecar(sample).max_new_tokens == GenerateSettings().max_new_tokens
