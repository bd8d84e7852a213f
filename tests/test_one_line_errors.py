"""A mistake in a spec file or an option is one line naming it, never a traceback: malformed YAML, a
``!!python`` tag (refused, never built), in ``prepare --spec``, ``prepare --set`` and a recipe's ``--set``."""
from __future__ import annotations

import pytest

from tests.cli_lines import one_line

REPO_RECIPE = "recipes/bach_chorales.yaml"


SPECS = {
    "malformed": "source: {name: text8, path: [unclosed\ntokenizer: {domain: text}\n",
    "python tag": "source: !!python/object/apply:os.system ['id']\ntokenizer: {domain: text}\n",
    "a list": "- source\n- tokenizer\n",
}


@pytest.mark.parametrize("case", list(SPECS))
def test_a_bad_prepare_spec_is_one_line(tmp_path, capsys, case):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPECS[case])
    line = one_line(capsys, ["prepare", "--spec", str(spec), "--out", str(tmp_path / "out")])
    assert str(spec) in line
    if case == "python tag":
        assert "!!python tag" in line and "never done" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["vocab_size=[300,", "vocab_size=!!python/object:os.system x", "vocab_size: 3"])
def test_a_bad_prepare_set_is_one_line(tmp_path, capsys, value):
    line = one_line(capsys, ["prepare", "--source", "shakespeare", "--tokenizer", "text", "--set", value,
                             "--out", str(tmp_path / "out")])
    assert "--set" in line and ("not valid YAML" in line or "expected key=value" in line)


def test_a_bad_recipe_set_is_one_line(tmp_path, capsys):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / REPO_RECIPE
    line = one_line(capsys, ["train", str(recipe), "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                             "--set", "train.lr=[0.1,"])
    assert "--set train.lr=[0.1,: not valid YAML" in line
