"""The README's tour runs as written (at tiny sizes), so the README cannot drift from the code.

The commands are read from the README itself (the fenced block after the ``<!-- tour`` marker),
preceded by ``make demo``'s command from the Makefile. Each runs through the real entry point in
a folder laid out like a clone; only size settings are added, never a changed path or option.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from shortcutlm.cli import main

ROOT = Path(__file__).resolve().parent.parent

# Size settings added per command so the tour takes a few minutes instead of fifteen.
TINY_MODEL = ["--set", "train.max_steps=3", "--set", "train.val_every=3", "--set", "train.warmup_steps=1",
              "--set", "model.n_layer=2", "--set", "model.n_embd=32", "--set", "model.n_head=2",
              "--set", "model.block_size=64"]
TINY = {
    "prepare": ["--option", "limit=3", "--quiet"],
    "train": TINY_MODEL + ["--no-progress"],
    "recipe": TINY_MODEL + ["--set", "source.limit=8", "--set", "evaluate.max_batches=2",
                            "--set", "generate.max_new_tokens=32", "--no-progress"],
    "evaluate": ["--max-batches", "2", "--no-progress"],
    "generate": [],
    "diagnose": ["--windows", "1"],
}


def tour_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- tour.*?-->\s*```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no tour block"
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    commands = [shlex.split(line) for line in lines if line.startswith("shortcutlm ")]
    demo = re.search(r"^demo:.*\n\t\$\(BIN\)/(shortcutlm .*)$", (ROOT / "Makefile").read_text(), re.M)
    assert demo, "Makefile has no demo target"
    return [shlex.split(demo.group(1))] + commands


def test_the_tour_block_is_what_a_newcomer_types():
    commands = tour_commands()
    assert {c[1] for c in commands} >= {"prepare", "train", "evaluate", "generate", "recipe", "diagnose"}
    for command in commands:  # every path the tour reads is made by an earlier step or shipped
        for arg in command:
            if arg.startswith(("examples/", "recipes/")):
                assert (ROOT / arg).exists(), arg


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path, monkeypatch, one_thread):
    for shipped in ("recipes", "examples"):
        (tmp_path / shipped).symlink_to(ROOT / shipped)
    monkeypatch.chdir(tmp_path)
    for command in tour_commands():
        argv = command[1:] + TINY[command[1]]
        assert main(argv) == 0, " ".join(command)
    assert json.loads(Path("runs/eval/results.json").read_text())
    assert list(Path("runs/samples/text").glob("*.txt"))
    assert list(Path("runs/samples/midi").glob("*.mid")) and list(Path("runs/samples/midi").glob("*.wav"))
    assert list(Path("runs/samples/audio").glob("*.wav"))
    assert Path("runs/diag/diagnostics.json").is_file()
    assert Path("runs/chorales_audio/report.md").is_file()
