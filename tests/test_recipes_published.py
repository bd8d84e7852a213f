"""Every dataset recipe's tiny preset, offline, end to end (prepare → train → evaluate → generate →
report) on a copy of its dataset laid out as published (``tests/datasets/published.py``), through the
command line a user types: ``shortcutlm recipe recipes/X.yaml --preset tiny --path P``. Sizes are cut
with ``--set`` so each run takes seconds; the report's header must describe the run that was made."""
from __future__ import annotations

import json

import pytest

from shortcutlm.cli import main as cli_main
from shortcutlm.run.layout import RunLayout
from tests.datasets.published import make_librispeech, make_maestro, make_text8, make_wikitext

pytestmark = pytest.mark.slow

SMALL = ["train.max_steps=4", "train.val_every=2", "train.val_batches=2", "train.batch_size=4",
         "train.warmup_steps=1", "evaluate.max_batches=2", "model.block_size=64"]


def run_recipe(recipe: str, path, out, *sets: str, variants=("baseline", "shortcut_resformer")) -> RunLayout:
    argv = ["recipe", f"recipes/{recipe}.yaml", "--preset", "tiny", "--path", str(path), "--out", str(out),
            "--no-progress"]
    for item in [*SMALL, *sets]:
        argv += ["--set", item]
    for variant in variants:
        argv += ["--variant", variant]
    assert cli_main(argv) == 0
    return RunLayout(out)


def splits(layout: RunLayout) -> dict[str, int]:
    manifest = json.loads((layout.data / "manifest.json").read_text())
    return {split: entry["documents"] for split, entry in manifest["splits"].items()}


def header(layout: RunLayout) -> str:
    return layout.report.read_text().split("\n## ", 1)[0]


def test_librispeech_tiny_preset_offline(tmp_path, capsys, caplog, monkeypatch):
    from shortcutlm.tokenizers import acoustic

    monkeypatch.setattr(acoustic, "_WARNED_OFFLINE", set())  # as in a fresh `shortcutlm recipe` process
    make_librispeech(tmp_path / "data", {"train-clean-100": [("103", "1240", 4), ("1034", "121119", 3)],
                                         "dev-clean": [("84", "121123", 2)], "test-clean": [("1089", "134686", 2)]},
                     seconds=1.5)
    layout = run_recipe("librispeech", tmp_path / "data", tmp_path / "run", "generate.seconds=0.5",
                        "generate.prompt_tokens=30", "tokenizer.kmeans_iters=2")
    assert splits(layout) == {"train": 7, "valid": 2, "test": 2}
    head = header(layout)
    assert "offline log-mel codec" in head and "1.5 kbps (2 codebooks)" in head and "6 kbps" not in head
    assert "subsets train-clean-100 (train), dev-clean (valid), test-clean (test)" in head
    assert "4 steps" in head and "context 64" in head
    assert list((layout.root / "samples" / "baseline").glob("*.wav"))
    err = capsys.readouterr().err
    said = [r for r in caplog.records if "OFFLINE log-mel codec" in r.getMessage()]
    assert len(said) == 1 and "OFFLINE log-mel codec" not in err  # once, through the log (pytest captures it)
    assert f"found librispeech in {tmp_path / 'data' / 'LibriSpeech'}: subsets train-clean-100 (train), dev-clean " \
           "(valid), test-clean (test), at most 200 utterances each" in err
    assert "variant 1/2: baseline" in err and "variant 2/2: shortcut_resformer" in err


def test_maestro_tiny_preset_from_the_zip_folder(tmp_path):
    rows = [(str(2004 + i), split, f"MIDI-Unprocessed_{i:02d}_R1_{2004 + i}_01-05_ORIG_MID--AUDIO_{i:02d}_wav")
            for i, split in enumerate(["train"] * 6 + ["validation", "validation", "test", "test"])]
    make_maestro(tmp_path / "unzipped", rows)
    layout = run_recipe("maestro", tmp_path / "unzipped", tmp_path / "run", "tokenizer.vocab_size=500",
                        "generate.seconds=2.0", "generate.prompt_tokens=32")
    assert splits(layout) == {"train": 6, "valid": 2, "test": 2}
    head = header(layout)
    assert "REMI MIDI tokens with BPE to 500 ids" in head and "maestro-v3.0.0.csv (10 rows)" in head
    assert list((layout.root / "samples" / "baseline").glob("*.mid"))
    from shortcutlm.artifacts.sidecar import samples_in

    dropped = [s.sidecar.decode_dropped for v in ("baseline", "shortcut_resformer")
               for s in samples_in(layout.samples(v))]
    assert len(dropped) == 2 and all(d["of"] > 0 for d in dropped)
    if any(d["ids"] or d["tokens"] for d in dropped):  # a 4-step model writes ill-formed ids: the report says so
        assert "(decoding dropped " in layout.report.read_text()


def test_wikitext103_tiny_preset_reads_raw(tmp_path):
    make_wikitext(tmp_path / "data", {"train": 30, "valid": 3, "test": 3})
    layout = run_recipe("wikitext103", tmp_path / "data", tmp_path / "run", "tokenizer.vocab_size=500",
                        "generate.max_new_tokens=24", "generate.prompt_tokens=16")
    assert splits(layout) == {"train": 30, "valid": 3, "test": 3}
    head = header(layout)
    assert "the raw variant" in head and "SentencePiece bpe text tokens, vocabulary 500" in head
    prompt = (layout.root / "samples" / "prompt" / "prompt.txt").read_text()
    test_text = (tmp_path / "data" / "wikitext-103-raw" / "wiki.test.raw").read_text()
    assert test_text.startswith(prompt) and set(prompt.split()) <= set(test_text.split())


def test_text8_tiny_preset(tmp_path):
    make_text8(tmp_path / "data", 60_020)  # test begins inside a word
    layout = run_recipe("text8", tmp_path / "data", tmp_path / "run", "tokenizer.vocab_size=300",
                        "source.chunk_chars=10000", "generate.max_new_tokens=24", "generate.prompt_tokens=16")
    assert splits(layout) == {"train": 6, "valid": 1, "test": 1}
    assert "SentencePiece unigram text tokens, vocabulary 300" in header(layout)
    words = set((tmp_path / "data" / "text8").read_text().split())
    prompt = (layout.root / "samples" / "prompt" / "prompt.txt").read_text()
    assert prompt.split() and set(prompt.split()) <= words  # whole words, though test begins at 95% of the bytes
