"""A tiny end-to-end run per domain: prepare → train → evaluate → generate → report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import symusic

from shortcutlm.config_schema import from_dict
from shortcutlm.recipe import Recipe
from shortcutlm.stages import run_recipe
from tests.conftest import tiny_recipe_dict, write_text8
from tests.fixtures_eval import tone

pytestmark = pytest.mark.slow


def run(tmp_path: Path, source: dict, tokenizer: dict, **generate) -> tuple[Path, dict]:
    data = tiny_recipe_dict(source, tokenizer)
    data["generate"].update(generate)
    layout = run_recipe(from_dict(Recipe, data), tmp_path / "run", progress=False)
    report = layout.report.read_text()
    for variant in ("baseline", "shortcut_resformer"):
        assert f"| {variant} |" in report
        assert (layout.checkpoint(variant) / "model.pt").is_file()
    assert (layout.root / "loss_curves.png").is_file()
    assert (layout.root / "depth_map_shortcut_resformer.png").is_file()
    assert not (layout.root / "depth_map_baseline.png").exists()
    results = json.loads((layout.evaluation / "results.json").read_text())
    rows = results["checkpoints"]
    assert len(rows) == 2 and all(np.isfinite(r["loss_nats"]) and r["loss_nats"] > 0 for r in rows)
    return layout.root, rows[0]


def samples(root: Path, suffix: str) -> list[Path]:
    found = sorted((root / "samples" / "shortcut_resformer").glob(f"*{suffix}"))
    assert found, f"no {suffix} sample in {root / 'samples'}"
    return found


def test_text_end_to_end(tmp_path):
    write_text8(tmp_path / "text8", chars=40_000)
    root, row = run(tmp_path, {"name": "text8", "path": str(tmp_path / "text8"), "chunk_chars": 5_000},
                    {"domain": "text", "vocab_size": 300})
    assert row["bits_per_byte"] > 0
    text = samples(root, ".txt")[0].read_text()
    prompt = (root / "samples" / "prompt" / "prompt.txt").read_text()
    assert text.lstrip().startswith(prompt.strip()[:20]) and len(text) > len(prompt)


def test_midi_end_to_end(tmp_path):
    root, row = run(tmp_path, {"name": "bach_chorales", "limit": 8, "cache": str(tmp_path / "cache")},
                    {"domain": "midi"})
    assert "Pitch" in row["per_family"]
    score = symusic.Score(str(samples(root, ".mid")[0]))
    assert score.note_num() > 0
    wave, rate = sf.read(samples(root, ".wav")[0])
    assert rate > 0 and len(wave) > 0


def test_audio_end_to_end(tmp_path):
    folder = tmp_path / "wavs"
    folder.mkdir()
    for i in range(6):
        sf.write(folder / f"clip{i}.wav", tone(1.5, seed=i), 24000)
    root, row = run(tmp_path, {"name": "folder", "path": str(folder)},
                    {"domain": "acoustic", "bandwidth": 1.5, "layout": "delay", "weights": "random_kmeans",
                     "kmeans_iters": 5}, seconds=1.0, max_new_tokens=None, prompt_tokens=30)
    assert len(row["per_codebook"]) == 2
    wave, rate = sf.read(samples(root, ".wav")[0])
    assert rate == 24000 and abs(len(wave) / rate - (30 + 75) / 75) < 0.2
