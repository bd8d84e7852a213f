"""``recipe``'s training says where it is: each variant by name and place, an estimate of the variant's
and the whole run's end from the first steps, a plain line (step, loss, tokens/s, ETA) at intervals
when the bars are off, and on a re-run, which stages it skipped and why."""
from __future__ import annotations

import re

from shortcutlm.core import progress
from shortcutlm.core.config_schema import from_dict
from shortcutlm.core.heartbeat import duration
from shortcutlm.run.recipe import Recipe
from shortcutlm.stages import run_recipe
from tests.conftest import tiny_recipe_dict, write_text8


def test_duration_reads_as_a_person_plans():
    assert [duration(s) for s in (4.2, 89, 600, 3599, 3600, 3 * 3600 + 5 * 60 + 10)] == \
        ["4 s", "89 s", "10 min", "60 min", "1 h 00 min", "3 h 05 min"]


def test_training_progress_and_rerun(tmp_path, capsys, monkeypatch):
    write_text8(tmp_path / "text8", chars=20_000)
    recipe = from_dict(Recipe, tiny_recipe_dict({"name": "text8", "path": str(tmp_path / "text8"),
                                                 "chunk_chars": 5_000}, {"domain": "text", "vocab_size": 300},
                                                max_steps=12))
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # a plain line at every step instead of every 3 minutes
    run_recipe(recipe, tmp_path / "run", stages=("prepare", "train"), progress=False)
    err = capsys.readouterr().err
    assert "variant 1/2: baseline — 12 steps" in err and "variant 2/2: shortcut_resformer — 12 steps" in err
    first = re.search(r"variant 1/2: baseline: [\d.e-]+ s/step over the first 10 steps; this variant ends in about "
                      r"\d+ s; training all 2 variants ends in about \d+ s", err)
    assert first, err
    plain = re.findall(r"variant 2/2: shortcut_resformer: step (\d+)/12, loss [\d.]+, [\d,]+ tokens/s, ETA \d+ s", err)
    assert plain and int(plain[-1]) == 12
    run_recipe(recipe, tmp_path / "run", stages=("prepare", "train"), progress=False)
    again = capsys.readouterr().err
    assert "prepare: skipped, " in again and "already holds the finished shards" in again
    assert "train variant 1/2: baseline: skipped, already trained to step 12" in again
    assert "train variant 2/2: shortcut_resformer: skipped" in again and "s/step" not in again


def test_heartbeat_says_long_work_goes_on():
    import time

    from shortcutlm.core.heartbeat import Heartbeat

    lines: list[str] = []
    with Heartbeat("training the text tokenizer", every_s=0.05, say=lines.append):
        time.sleep(0.3)
    assert len(lines) >= 3 and lines[0].startswith("training the text tokenizer: still working (")
    assert lines[-1].startswith("training the text tokenizer: done in ")
    quiet: list[str] = []
    try:
        with Heartbeat("fit", every_s=10, say=quiet.append):
            raise ValueError("no readable file")
    except ValueError:
        pass
    assert quiet == []  # a failed fit says its own error, not "done"
    batch: list[str] = []
    with Heartbeat("fit", every_s=0.05, say=batch.append, closing_line=False):
        time.sleep(0.2)
    assert batch and all("still working" in line for line in batch)


def test_plain_counter_for_batch_logs():
    from shortcutlm.core.heartbeat import PlainCounter

    lines: list[str] = []
    counter = PlainCounter("prepare librispeech", 4, every_s=0.0, say=lines.append)
    for _ in range(4):
        counter.update()
    assert len(lines) == 4 and lines[1].startswith("prepare librispeech: 2/4 documents, ")
    assert lines[-1].endswith("ETA 0 s")
    quiet: list[str] = []
    slow = PlainCounter("prepare", 4, every_s=3600.0, say=quiet.append)
    slow.update(4)
    assert quiet == []  # shorter than one interval: nothing said


def test_prepare_without_bars_prints_plain_lines(tmp_path, capsys, monkeypatch):
    from shortcutlm.datasets import prepare as prepare_module
    from shortcutlm.datasets import prepare_common
    from tests.datasets.published import make_wikitext

    make_wikitext(tmp_path, {"train": 6, "valid": 2, "test": 2}, variants=("raw",))
    monkeypatch.setattr(prepare_common, "PLAIN_EVERY_S", 0.0)
    prepare_module.prepare({"name": "wikitext103", "path": str(tmp_path)}, {"domain": "text", "vocab_size": 400},
                           tmp_path / "out", workers=0, progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("prepare wikitext103: ")]
    assert len(lines) == 10 and lines[-1].startswith("prepare wikitext103: 10/10 documents, ")
