"""A tiny end-to-end run per domain: prepare → train → evaluate → generate → report.

The runs themselves are session fixtures (``tests/fixtures_runs.py``), shared with the report-page tests.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import symusic

from shortcutlm.run_layout import RunLayout

pytestmark = pytest.mark.slow


def check_run(layout: RunLayout) -> dict:
    """What every domain's run holds; returns the first checkpoint's evaluation row."""
    report = layout.report.read_text()
    for variant in ("baseline", "shortcut_resformer"):
        assert f"| {variant} |" in report
        assert (layout.checkpoint(variant) / "model.pt").is_file()
    assert (layout.root / "loss_curves.png").is_file()
    assert (layout.root / "depth_map_shortcut_resformer.png").is_file()
    assert not (layout.root / "depth_map_baseline.png").exists()
    assert layout.report_html.is_file()
    results = json.loads((layout.evaluation / "results.json").read_text())
    rows = results["checkpoints"]
    assert len(rows) == 2 and all(np.isfinite(r["loss_nats"]) and r["loss_nats"] > 0 for r in rows)
    return rows[0]


def samples(root: Path, suffix: str) -> list[Path]:
    found = sorted((root / "samples" / "shortcut_resformer").glob(f"*{suffix}"))
    assert found, f"no {suffix} sample in {root / 'samples'}"
    return found


def test_text_end_to_end(text_run):
    row = check_run(text_run)
    assert row["bits_per_byte"] > 0
    text = samples(text_run.root, ".txt")[0].read_text()
    prompt = (text_run.root / "samples" / "prompt" / "prompt.txt").read_text()
    assert text.lstrip().startswith(prompt.strip()[:20]) and len(text) > len(prompt)


def test_midi_end_to_end(midi_run):
    row = check_run(midi_run)
    assert "Pitch" in row["per_family"]
    score = symusic.Score(str(samples(midi_run.root, ".mid")[0]))
    assert score.note_num() > 0
    wave, rate = sf.read(samples(midi_run.root, ".wav")[0])
    assert rate > 0 and len(wave) > 0


def test_audio_end_to_end(audio_run):
    row = check_run(audio_run)
    assert len(row["per_codebook"]) == 2
    wave, rate = sf.read(samples(audio_run.root, ".wav")[0])
    assert rate == 24000 and abs(len(wave) / rate - (30 + 75) / 75) < 0.2
