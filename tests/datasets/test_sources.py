"""Readers of published layouts, on tiny copies of each layout built here."""
from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
import soundfile

from shortcutlm.datasets.sources import Rejected, read_source
from shortcutlm.datasets.splits import assign_splits, hash_split, parse_fractions, unit_hash
from shortcutlm.documents import Document


def split_items(items):
    docs = [i for i in items if isinstance(i, Document)]
    return docs, [i for i in items if isinstance(i, Rejected)]


# ------------------------------------------------------------------------------ splits

def test_hash_split_is_stable_and_proportional():
    keys = [f"file{i}.mid" for i in range(4000)]
    counts = Counter(hash_split(k) for k in keys)
    assert abs(counts["train"] / 4000 - 0.90) < 0.02 and abs(counts["valid"] / 4000 - 0.05) < 0.015
    assert [hash_split(k) for k in keys[:50]] == [hash_split(k) for k in keys[:50]]
    # sha256-based, not Python's salted hash(): the same value on every machine and run.
    assert unit_hash("a/b.wav") == pytest.approx(0.20815688793520015, abs=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12])
def test_tiny_collections_get_usable_splits(n):
    splits = assign_splits([f"k{i}" for i in range(n)])
    counts = Counter(splits.values())
    assert counts["train"] >= 1
    if n >= 2:
        assert counts["valid"] >= 1
    if n >= 3:
        assert counts["test"] >= 1


def test_fractions_parse():
    assert parse_fractions("90,5,5") == pytest.approx((0.9, 0.05, 0.05))
    assert parse_fractions([8, 1, 1]) == pytest.approx((0.8, 0.1, 0.1))
    with pytest.raises(ValueError, match="three numbers"):
        parse_fractions("90,10")


# ------------------------------------------------------------------------------ LibriSpeech

def write_flac(path, seconds=0.1, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.zeros(int(seconds * rate), dtype=np.float32), rate, format="FLAC")


def make_librispeech(root):
    layout = {"train-clean-100": [("19", "198", 3)], "dev-clean": [("84", "121123", 2)],
              "test-other": [("1688", "142285", 1)]}
    for subset, chapters in layout.items():
        for speaker, chapter, n in chapters:
            folder = root / "LibriSpeech" / subset / speaker / chapter
            lines = []
            for u in range(n):
                utt = f"{speaker}-{chapter}-{u:04d}"
                write_flac(folder / f"{utt}.flac")
                lines.append(f"{utt} WORDS OF UTTERANCE {u}")
            lines.append(f"{speaker}-{chapter}-{n:04d} THIS ONE HAS NO AUDIO")
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech(tmp_path):
    docs, rejected = split_items(list(read_source({"name": "librispeech", "path": make_librispeech(tmp_path)})))
    assert Counter(d.split for d in docs) == {"train": 3, "valid": 2, "test": 1}
    first = next(d for d in docs if d.doc_id == "19-198-0001")
    assert first.path.name == "19-198-0001.flac" and first.meta["transcript"] == "WORDS OF UTTERANCE 1"
    assert first.meta["subset"] == "train-clean-100"
    assert len(rejected) == 3 and all("flac is missing" in r.reason for r in rejected)
    only_dev = list(read_source({"name": "librispeech", "path": tmp_path, "subsets": "dev-clean"}))
    assert {d.split for d in split_items(only_dev)[0]} == {"valid"}


# ------------------------------------------------------------------------------ text8

def test_text8_proportional_slices(tmp_path):
    rng = np.random.default_rng(0)
    words = [" ".join("abcdefgh"[: rng.integers(1, 8)] for _ in range(1)) for _ in range(3000)]
    text = " ".join(words)
    (tmp_path / "text8").write_text(text)
    docs, rejected = split_items(list(read_source({"name": "text8", "path": tmp_path / "text8", "chunk_chars": 1000})))
    assert not rejected
    by_split = {s: "".join(d.text for d in docs if d.split == s) for s in ("train", "valid", "test")}
    n = len(text)
    assert len(by_split["train"]) == int(n * 0.9) and len(by_split["valid"]) == int(n * 0.95) - int(n * 0.9)
    assert by_split["train"] + by_split["valid"] + by_split["test"] == text
    inner = [d for d in docs if d.meta["end"] not in (int(n * 0.9), int(n * 0.95), n)]
    assert inner and all(d.text.endswith(" ") for d in inner)  # inner cuts never break a word
    assert len({d.doc_id for d in docs}) == len(docs) and all("." not in d.doc_id for d in docs)


# ------------------------------------------------------------------------------ WikiText-103

WIKI = """ 
 = Valkyria Chronicles III = 
 
 Senjō no Valkyria 3 is a game . 
 
 = = Gameplay = = 
 
 Play is tactical . 
 
 = Tower Building = 
 
 A tower . 
"""


def test_wikitext103_articles(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.tokens").write_text(WIKI if split == "train" else " \n = Only = \n text . \n")
    docs, _ = split_items(list(read_source({"name": "wikitext103", "path": tmp_path})))
    train = [d for d in docs if d.split == "train"]
    assert [d.meta["title"] for d in train] == ["Valkyria Chronicles III", "Tower Building"]
    assert "Gameplay" in train[0].text and "Play is tactical" in train[0].text  # sub-headings stay inside
    assert "".join(d.text for d in train).strip() == WIKI.strip()
    assert Counter(d.split for d in docs) == {"train": 2, "valid": 1, "test": 1}


# ------------------------------------------------------------------------------ MAESTRO

def test_maestro(tmp_path):
    rows = [("2004", "train", "2004/a.midi"), ("2006", "validation", "2006/b.midi"),
            ("2008", "test", "2008/c.midi"), ("2009", "train", "2009/missing.midi")]
    with open(tmp_path / "maestro-v3.0.0.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["canonical_composer", "canonical_title", "split", "year", "midi_filename",
                         "audio_filename", "duration"])
        for year, split, midi in rows:
            writer.writerow(["Bach", "Prelude", split, year, midi, midi.replace(".midi", ".wav"), "1.5"])
            if "missing" not in midi:
                (tmp_path / midi).parent.mkdir(exist_ok=True)
                (tmp_path / midi).write_bytes(b"MThd")
    docs, rejected = split_items(list(read_source({"name": "maestro", "path": tmp_path})))
    assert {d.doc_id: d.split for d in docs} == {"2004_a": "train", "2006_b": "valid", "2008_c": "test"}
    assert docs[0].meta["canonical_composer"] == "Bach"
    assert len(rejected) == 1 and "missing" in rejected[0].input and rejected[0].split == "train"
    with pytest.raises(ValueError, match="unknown option"):
        read_source({"name": "maestro", "path": tmp_path, "colour": "red"})
    (tmp_path / "2004" / "a.wav").write_bytes(b"RIFF")  # files="audio" reads the audio column
    audio, missing = split_items(list(read_source({"name": "maestro", "path": tmp_path, "files": "audio"})))
    assert [d.path.name for d in audio] == ["a.wav"] and len(missing) == 3


# ------------------------------------------------------------------------------ any folder

def test_folder_splits_and_extensions(tmp_path):
    for name in ["a.mid", "b.mid", "sub/c.midi", "sub/d.MID", "notes.txt", ".hidden/e.mid"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    docs, _ = split_items(list(read_source({"name": "folder", "path": tmp_path, "extensions": ".mid,.midi"})))
    assert sorted(d.meta["relative_path"] for d in docs) == ["a.mid", "b.mid", "sub/c.midi", "sub/d.MID"]
    assert all("." not in d.doc_id and "/" not in d.doc_id for d in docs)
    assert {"train", "valid", "test"} <= {d.split for d in docs}
    again = split_items(list(read_source({"name": "folder", "path": tmp_path, "extensions": [".mid", ".midi"]})))[0]
    assert [(d.doc_id, d.split) for d in again] == [(d.doc_id, d.split) for d in docs]
    two = tmp_path / "two"
    two.mkdir()
    for name in ("x.txt", "y.txt"):
        (two / name).write_text("hello")
    # Two files are too few to split by file: laid end to end, the second is cut at 90% and 95% of the bytes.
    parts = [(d.doc_id, d.split, d.span) for d in split_items(list(read_source({"name": "folder", "path": two})))[0]]
    assert parts == [("x_txt", "train", None), ("y_txt__train", "train", (0.0, pytest.approx(0.8))),
                     ("y_txt__valid", "valid", (pytest.approx(0.8), pytest.approx(0.9))),
                     ("y_txt__test", "test", (pytest.approx(0.9), 1.0))]


def test_unknown_source_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="unknown source"):
        read_source({"name": "imagenet"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_source({"name": "text8", "path": tmp_path / "nope"}))


# ------------------------------------------------------------------------------ embedded corpora

def test_shakespeare():
    docs, rejected = split_items(list(read_source({"name": "shakespeare"})))
    assert len(docs) == 38 and not rejected
    hamlet = next(d for d in docs if d.doc_id == "hamlet")
    assert hamlet.meta["title"] == "Hamlet" and hamlet.path.suffix == ".md"
    assert {"train", "valid", "test"} <= {d.split for d in docs}
    assert [d.doc_id for d in split_items(list(read_source({"name": "shakespeare", "limit": 3})))[0]] == \
        sorted(d.doc_id for d in docs)[:3]


def test_bach_chorales(chorales_cache):
    items = list(read_source({"name": "bach_chorales", "limit": 6, "cache": str(chorales_cache)}))
    docs, rejected = split_items(items)
    assert len(docs) + len(rejected) == 6
    assert all(d.path.suffix == ".mid" and d.path.read_bytes()[:4] == b"MThd" for d in docs)
    assert [d.meta["riemenschneider"] for d in docs] == sorted(d.meta["riemenschneider"] for d in docs)
    assert {"train", "valid"} <= {d.split for d in docs}
    # Cached: a second read converts nothing and returns the same documents.
    mtimes = {d.path: d.path.stat().st_mtime_ns for d in docs}
    again = split_items(list(read_source({"name": "bach_chorales", "limit": 6, "cache": str(chorales_cache)})))[0]
    assert [(d.doc_id, d.split) for d in again] == [(d.doc_id, d.split) for d in docs]
    assert all(d.path.stat().st_mtime_ns == mtimes[d.path] for d in again)


def test_failed_chorale_is_recorded_not_fatal(chorales_cache):
    docs = split_items(list(read_source({"name": "bach_chorales", "limit": 2, "cache": str(chorales_cache)})))[0]
    victim = docs[1]
    failed = chorales_cache / "bach_chorales" / f"{victim.doc_id}.failed"
    victim.path.rename(victim.path.with_suffix(".bak"))
    failed.write_text("music21 could not write it")
    try:
        docs2, rejected = split_items(list(read_source({"name": "bach_chorales", "limit": 2,
                                                        "cache": str(chorales_cache)})))
        assert [d.doc_id for d in docs2] == [docs[0].doc_id]
        assert len(rejected) == 1 and "could not write it" in rejected[0].reason
    finally:
        failed.unlink()
        victim.path.with_suffix(".bak").rename(victim.path)


def test_chorales_audio(chorales_cache):
    docs, _ = split_items(list(read_source({"name": "chorales_audio", "limit": 2, "cache": str(chorales_cache)})))
    assert docs and all(d.path.suffix == ".wav" for d in docs)
    info = soundfile.info(str(docs[0].path))
    assert info.samplerate == 24000 and info.channels == 1 and info.duration > 1.0
    midi_docs = split_items(list(read_source({"name": "bach_chorales", "limit": 2, "cache": str(chorales_cache)})))[0]
    assert [(d.doc_id, d.split) for d in docs] == [(d.doc_id, d.split) for d in midi_docs]
