"""The Python API: the README's block runs as written, and each domain's artifact comes back as its object
without leaving a file behind unless asked."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import shortcutlm
from shortcutlm.tokenizers.base import Waveform

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def readme_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- python:.*?-->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README.md has no Python block"
    return block.group(1)


def test_the_readme_block_runs_as_written(text_ckpt, tmp_path, monkeypatch, capsys):
    (tmp_path / "runs" / "ckpt").mkdir(parents=True)
    shutil.copytree(text_ckpt, tmp_path / "runs" / "ckpt" / "sp")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block(), "README.md", "exec"), {})  # noqa: S102 - the README's own code
    printed = capsys.readouterr().out
    prompt = (ROOT / "examples" / "prompts" / "sonnet.txt").read_text(encoding="utf-8")
    assert printed.startswith("shortcutlm.Model('runs/ckpt/sp': text, 2x32")
    assert prompt.split()[0] in printed and "40 tokens at" in printed and "valid loss" in printed
    assert (tmp_path / "runs" / "samples" / "python.txt").is_file()
    assert (tmp_path / "runs" / "samples" / "python.json").is_file()
    assert sorted(p.name for p in (tmp_path / "runs" / "samples").iterdir()) == ["python.json", "python.txt"]


def test_each_domain_comes_back_as_its_object_and_leaves_nothing(midi_ckpt, audio_flatten_ckpt, tmp_path,
                                                                 monkeypatch):
    import symusic

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the temporary decoding happens
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    score = shortcutlm.load(midi_ckpt, device="cpu").generate(tokens=24, seed=3)
    assert isinstance(score.artifact, symusic.Score) and score.path is None
    audio = shortcutlm.load(audio_flatten_ckpt, device="cpu").generate(tokens=16, seed=3, samples=2)
    assert [type(a.artifact) for a in audio] == [Waveform, Waveform]
    wave = audio[0].artifact
    assert wave.samples.dtype == np.float32 and wave.samples.ndim == 2 and wave.sample_rate > 0
    assert not list(tmp_path.iterdir())  # the temporary folders are gone


def test_same_seed_same_sample_as_the_command_line(text_ckpt, tmp_path):
    from shortcutlm.cli import main

    model = shortcutlm.load(text_ckpt, device="cpu")
    ours = model.generate(tokens=12, seed=5, temperature=0.8)
    assert main(["generate", str(text_ckpt), "--tokens", "12", "--seed", "5", "--temperature", "0.8", "--quiet",
                 "--device", "cpu", "--out", str(tmp_path / "cli.txt")]) == 0
    assert ours.artifact == (tmp_path / "cli.txt").read_text(encoding="utf-8")
    assert ours.record.seed == 5 and ours.record.tokens_generated == 12
