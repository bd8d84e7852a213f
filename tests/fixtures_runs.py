"""Tiny recipe runs, one per domain (prepare → train → evaluate → generate → report), made once per
session and shared by the end-to-end tests and the report-page tests.

``tests/conftest.py`` registers this module as a plugin. Each run trains two variants for a few
steps, so only tests marked slow ask for them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from shortcutlm.core.config_schema import from_dict
from shortcutlm.run.recipe import Recipe
from shortcutlm.run.layout import RunLayout
from shortcutlm.stages import run_recipe
from tests.conftest import tiny_recipe_dict, write_text8
from tests.fixtures_eval import tone


def recipe_run(root: Path, source: dict[str, Any], tokenizer: dict[str, Any], **generate: Any) -> RunLayout:
    """Every stage of a tiny recipe (two variants) into ``root / "run"``."""
    data = tiny_recipe_dict(source, tokenizer)
    data["generate"].update(generate)
    return run_recipe(from_dict(Recipe, data), root / "run", progress=False)


@pytest.fixture(scope="session")
def text_run(tmp_path_factory) -> RunLayout:
    root = tmp_path_factory.mktemp("text_run")
    write_text8(root / "text8", chars=40_000)
    return recipe_run(root, {"name": "text8", "path": str(root / "text8"), "chunk_chars": 5_000},
                      {"domain": "text", "vocab_size": 300})


@pytest.fixture(scope="session")
def midi_run(tmp_path_factory) -> RunLayout:
    root = tmp_path_factory.mktemp("midi_run")
    return recipe_run(root, {"name": "bach_chorales", "limit": 8, "cache": str(root / "cache")}, {"domain": "midi"})


@pytest.fixture(scope="session")
def audio_run(tmp_path_factory) -> RunLayout:
    root = tmp_path_factory.mktemp("audio_run")
    folder = root / "wavs"
    folder.mkdir()
    for i in range(6):
        sf.write(folder / f"clip{i}.wav", tone(1.5, seed=i), 24000)
    return recipe_run(root, {"name": "folder", "path": str(folder)},
                      {"domain": "acoustic", "bandwidth": 1.5, "layout": "delay", "weights": "mel_kmeans",
                       "kmeans_iters": 5}, seconds=1.0, max_new_tokens=None, prompt_tokens=30)
