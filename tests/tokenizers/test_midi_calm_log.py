"""The MIDI tokenizer's log stays calm: one line per written sample whose ids were repaired (not one per
length check), the drops recorded for the sample's sidecar, and one line, once, when several tracks
are merged into one piano track; prepare sums the merged files into one note naming use_programs."""
from __future__ import annotations

import logging

import numpy as np

from shortcutlm.datasets.prepare import prepare
from shortcutlm.tokenizers import tokenizer_class
from shortcutlm.tokenizers.midi import MidiTokenizer
from tests.datasets.published import write_piano_midi

LOGGER = "shortcutlm.tokenizers.midi"


def test_repairs_are_said_once_per_written_sample(tmp_path, caplog):
    tok = MidiTokenizer.from_settings({})
    ids = np.random.default_rng(0).integers(-10, tok.vocab_size + 10, size=300)
    ids[ids == tok.eos_id] = -1  # no end of sequence: every id is read (and some repaired)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(5):  # generation measures a sample's length this way, again and again
            tok.seconds_of(ids)
        assert not caplog.records
        tok.decode(ids, tmp_path / "sample.mid")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"midi decode: {tmp_path.name}/sample.mid: "
                                                   "repaired 300 ids: dropped ")
    dropped = tok.describe()["decode_dropped"]
    assert dropped["of"] == 300 and dropped["ids"] == tok.last_repair["dropped_ids"] > 0


def test_multitrack_merge_is_said_once_and_summed_by_prepare(tmp_path, caplog, monkeypatch):
    folder = tmp_path / "midi"
    for i in range(8):
        write_piano_midi(folder / f"piece{i}.mid", seed=i, extra_tracks=i in (2, 5))
    band = folder / "piece2.mid"
    tok = MidiTokenizer.from_settings({})
    from shortcutlm.documents import Document
    from shortcutlm.tokenizers import midi

    monkeypatch.setattr(midi, "_SAID_MERGED", set())  # as in a fresh `shortcutlm generate` process
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            tok.encode_document(Document("band", "test", "prompt", path=band))
    merged = [r.getMessage() for r in caplog.records if "merged into one piano track" in r.getMessage()]
    assert len(merged) == 1 and "piece2.mid has 3 tracks (drums included); merged into one piano track" in merged[0]
    assert "use_programs: true" in merged[0]
    assert tok.encode_document(Document("band", "test", "prompt", path=band)).meta["merged_files"] == 1
    assert "merged_files" not in tok.encode_document(Document("p", "test", "x", path=folder / "piece0.mid")).meta
    manifest = prepare({"name": "folder", "path": str(folder), "splits": "hash"}, {"domain": "midi"},
                       tmp_path / "out", workers=1, progress=False)
    assert sum(s.get("merged_files", 0) for s in manifest["splits"].values()) == 2
    assert len(manifest["notes"]) == 1 and manifest["notes"][0].startswith("midi tokenizer: 2 file(s) had several")
    assert "use_programs: true" in manifest["notes"][0]
    keep = prepare({"name": "folder", "path": str(folder), "splits": "hash"},
                   {"domain": "midi", "use_programs": True, "one_token_stream_for_programs": True},
                   tmp_path / "programs", workers=1, progress=False)
    assert keep["notes"] == [] and tokenizer_class("midi")  # programs kept: nothing merged, nothing to say
