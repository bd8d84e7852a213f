"""prepare never aborts on one bad input: unreadable, crashing, fuzzed or too few files, in every domain.

Every file here is real and made by the test (WAV through soundfile, MIDI through symusic, UTF-8
text); the crash test makes the reader die for real inside a worker (a segfault in C code).
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from shortcutlm.artifacts.manifest import MANIFEST
from shortcutlm.cli import main as cli_main
from shortcutlm.datasets.prepare import prepare
from shortcutlm.datasets.shards import read_shard
from shortcutlm.datasets.sources import read_source
from shortcutlm.datasets.splits import assign_splits, contiguous_parts, plan_splits
from shortcutlm.documents import Document
from shortcutlm.tokenizers import load_tokenizer
from tests.datasets.mutations import MIDI_MUTATIONS, TEXT_MUTATIONS, WAV_MUTATIONS, mutants
from tests.tokenizers.conftest import SAMPLE, on_grid_notes, tones, write_midi

ACOUSTIC = {"domain": "acoustic", "weights": "mel_kmeans", "bandwidth": 1.5, "kmeans_iters": 2,
            "kmeans_max_frames": 500}
WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards box and judge "
         "how vexingly quick daft zebras jump in the pale moonlight").split()
ALL_TRAIN = "100,0,0"  # every file in train, so the tokenizer's fitting reads them all


def lines_of_words(n_lines: int, seed: int = 0, words_per_line: int = 12) -> str:
    rng = np.random.default_rng(seed)
    return "".join(" ".join(rng.choice(WORDS, size=words_per_line)) + "\n" for _ in range(n_lines))


def write_wav(path, seconds=0.4, rate=24000, seed=0):
    sf.write(str(path), tones(seconds, rate, seed=seed), rate)
    return path


def shard_docs(out) -> dict[str, tuple[np.ndarray, dict]]:
    manifest = json.loads((out / MANIFEST).read_text())
    return {key: (tokens, meta) for record in manifest["shards"]
            for key, tokens, meta in read_shard(out / record["name"])}


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------------------ 1. bad train files

def folder_with_a_bad_train_file(root, domain: str) -> tuple[dict, str]:
    """Three good files and one unreadable one of the domain; returns (tokenizer spec, bad file name)."""
    root.mkdir()
    if domain == "text":
        for i in range(3):
            (root / f"good{i}.txt").write_text(lines_of_words(60, seed=i))
        (root / "bad.txt").write_bytes(b"fine start\n\xff\xfe not UTF-8\n")
        return {"domain": "text", "vocab_size": 300}, "bad.txt"
    if domain == "midi":
        for i in range(3):
            write_midi(root / f"good{i}.mid", [(0, False, on_grid_notes(i))])
        (root / "empty.mid").write_bytes(b"")
        return {"domain": "midi", "vocab_size": 400}, "empty.mid"  # BPE: the tokenizer is fitted
    for i in range(3):
        write_wav(root / f"good{i}.wav", seed=i)
    (root / "empty.wav").write_bytes(b"")
    return dict(ACOUSTIC), "empty.wav"


@pytest.mark.parametrize("domain", ["text", "midi", "acoustic"])
def test_an_unreadable_train_file_is_rejected_while_fitting(tmp_path, domain):
    spec, bad = folder_with_a_bad_train_file(tmp_path / "in", domain)
    manifest = prepare({"name": "folder", "path": str(tmp_path / "in"), "fractions": ALL_TRAIN}, spec,
                       tmp_path / "out", workers=1, progress=False)
    assert manifest["complete"] and manifest["inputs"] == {"total": 4, "documents": 3, "rejected": 1, "skipped": 0}
    [rejected] = manifest["rejected"]
    assert rejected["input"] == str(tmp_path / "in" / bad) and rejected["split"] == "train"
    expected = {"text": "not valid UTF-8 at byte offset 11", "midi": "not a readable MIDI file (empty file)",
                "acoustic": "cannot read audio (Format not recognised.)"}[domain]
    assert rejected["reason"].startswith(expected) and bad not in rejected["reason"]
    assert manifest["last_run"]["encoded_documents"] == 3  # rejected while fitting: not tried again
    again = prepare({"name": "folder", "path": str(tmp_path / "in"), "fractions": ALL_TRAIN}, spec,
                    tmp_path / "out", workers=1, progress=False)  # nor when the run is resumed
    assert again["rejected"] == manifest["rejected"] and again["last_run"]["encoded_documents"] == 0
    # Nothing but train was asked for, and prepare says so rather than leaving the splits silently empty.
    assert manifest["warnings"] == ["the valid split is empty: the source gave no valid documents",
                                    "the test split is empty: the source gave no test documents"]


def test_a_train_split_with_no_readable_file_is_one_clear_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.wav").write_bytes(b"")
    (tmp_path / "in" / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(ValueError) as err:
        prepare({"name": "folder", "path": str(tmp_path / "in"), "fractions": ALL_TRAIN}, ACOUSTIC, tmp_path / "out",
                workers=1, progress=False)
    assert one_line(str(err.value)).startswith("the acoustic tokenizer needs training but none of the 2 train "
                                               f"documents could be read (e.g. {tmp_path / 'in' / 'empty.wav'}: ")


# ------------------------------------------------------------------------------ 3. crashing readers

CRASH_HOOK = '''
"""Test-only: reading audio dies for real (inside C) on files named segfault*/abort*, and hangs on
sleep*, whether a file is read whole (soundfile.read) or opened to be read in blocks (SoundFile)."""
import ctypes
import os
import time

import soundfile

_read = soundfile.read
_open = soundfile.SoundFile.__init__


def _trouble(file):
    name = os.path.basename(str(file))
    if name.startswith("segfault"):
        ctypes.string_at(0)  # reads address 0: SIGSEGV in C code
    if name.startswith("abort"):
        os.abort()
    if name.startswith("sleep"):
        time.sleep(600)


def read(file, *args, **kwargs):
    _trouble(file)
    return _read(file, *args, **kwargs)


def open_file(self, file, *args, **kwargs):
    _trouble(file)
    return _open(self, file, *args, **kwargs)


soundfile.read = read
soundfile.SoundFile.__init__ = open_file
'''


@pytest.fixture
def crashing_reader(tmp_path, monkeypatch):
    """Worker processes (spawned, so they start Python afresh) import this ``sitecustomize``;
    this process does not, so its own reads are untouched."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASH_HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))


@pytest.mark.slow
def test_a_reader_that_crashes_costs_its_file_only(tmp_path, crashing_reader):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        write_wav(folder / f"good{i}.wav", seed=i)
    for name in ("segfault.wav", "abort.wav"):
        write_wav(folder / name, seed=7)
    assert sf.read(str(folder / "segfault.wav"))[0].size  # a valid file: only the workers' reader dies on it
    source = {"name": "folder", "path": str(folder), "fractions": ALL_TRAIN}

    # While fitting the codebooks (the train files are read in a worker).
    first = prepare(source, ACOUSTIC, tmp_path / "fit", workers=1, progress=False)
    reasons = {r["doc_id"]: r["reason"] for r in first["rejected"]}
    assert reasons == {"segfault_wav": "parser crashed (signal 11, SIGSEGV)",
                       "abort_wav": "parser crashed (signal 6, SIGABRT)"}
    assert first["inputs"]["documents"] == 3 and first["last_run"]["encoded_documents"] == 3

    # While encoding, with two workers, and a file that hangs its reader past the time limit.
    write_wav(folder / "sleep.wav", seed=8)
    codec = {"domain": "acoustic", "weights": str(tmp_path / "fit" / "tokenizer" / "codec.pt"), "bandwidth": 1.5}
    second = prepare(source, codec, tmp_path / "enc", workers=2, progress=False, file_timeout_s=5)
    reasons = {r["doc_id"]: r["reason"] for r in second["rejected"]}
    assert reasons == {"segfault_wav": "parser crashed (signal 11, SIGSEGV)",
                       "abort_wav": "parser crashed (signal 6, SIGABRT)",
                       "sleep_wav": "parser did not finish within 5 s (its process was stopped)"}
    assert sorted(shard_docs(tmp_path / "enc")) == ["good0_wav", "good1_wav", "good2_wav"]
    assert {k: v[0].tolist() for k, v in shard_docs(tmp_path / "enc").items()} == \
           {k: v[0].tolist() for k, v in shard_docs(tmp_path / "fit").items()}  # same codec, same ids


# ------------------------------------------------------------------------------ 3. fuzzed files

def fuzz_folder(root, domain: str, n: int, seed: int) -> list[str]:
    """Real files of the domain plus ``n`` mutated copies; returns every file name."""
    base = root / "base"
    base.mkdir(parents=True, exist_ok=True)
    folder = root / domain
    folder.mkdir()
    if domain == "midi":
        originals = [write_midi(base / "a.mid", [(0, False, on_grid_notes(0, 2))]),
                     write_midi(base / "b.mid", [(0, False, on_grid_notes(1, 2)), (40, False, on_grid_notes(2, 2)),
                                                 (0, True, [(36, 0, 240, 100)])])]
        mutations, suffix = MIDI_MUTATIONS, ".mid"
    elif domain == "acoustic":
        originals = [base / "a.wav", base / "b.wav", base / "c.wav"]
        sf.write(str(originals[0]), tones(0.25, 24000, seed=1), 24000, subtype="PCM_16")
        sf.write(str(originals[1]), tones(0.25, 44100, seed=2, channels=2), 44100, subtype="PCM_16")
        sf.write(str(originals[2]), tones(0.25, 16000, seed=3), 16000, subtype="FLOAT")
        mutations, suffix = WAV_MUTATIONS, ".wav"
    else:
        originals = [base / "a.txt"]
        originals[0].write_text(SAMPLE * 4 + lines_of_words(30), encoding="utf-8")
        mutations, suffix = TEXT_MUTATIONS, ".txt"
    data = [p.read_bytes() for p in originals]
    for i, blob in enumerate(data):
        (folder / f"original{i}{suffix}").write_bytes(blob)
    for i, (name, blob) in enumerate(mutants(data, mutations, n, seed)):
        (folder / f"m{i:03d}_{name}{suffix}").write_bytes(blob)
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("domain, n, spec", [
    ("midi", 120, {"domain": "midi"}),
    ("acoustic", 100, dict(ACOUSTIC)),
    ("text", 80, {"domain": "text", "vocab_size": 400}),
])
def test_fuzzed_files_end_tokenized_or_rejected(tmp_path, domain, n, spec):
    """Truncations, flipped bytes, chunk lengths past the end, zero and odd sample rates, zero time
    division, tempos of 0 and 1 microseconds per quarter, delta times of days: each file ends in a
    shard or in the rejected list with a one-line reason, and the run completes."""
    names = fuzz_folder(tmp_path, domain, n, seed=0)
    manifest = prepare({"name": "folder", "path": str(tmp_path / domain)}, spec, tmp_path / "out", workers=2,
                       progress=False, file_timeout_s=60)
    assert manifest["complete"] and manifest["inputs"]["total"] == len(names)
    written = shard_docs(tmp_path / "out")
    reasons = {r["doc_id"]: r["reason"] for r in manifest["rejected"]}
    for name in names:
        doc_id = name.replace(".", "_")
        assert (doc_id in written) != (doc_id in reasons), name  # exactly one of the two
        if doc_id in reasons:
            reason = reasons[doc_id]
            assert reason and "\n" not in reason and name not in reason, (name, reason)
    assert all(np.isfinite(value) for entry in manifest["splits"].values() for value in entry.values()
               if isinstance(value, float))
    assert len(written) >= len(names) // 10  # the originals and the harmless mutations are kept
    assert any(name.startswith("original") and name.replace(".", "_") in written for name in names)


# ------------------------------------------------------------------------------ 2. small collections

@pytest.mark.parametrize("n", [2, 3])
def test_a_few_keys_never_crash_the_split_assignment(n):
    """Two keys used to raise "max() arg is an empty sequence" when both hashed outside train."""
    for i in range(300):
        splits = assign_splits([f"{k}{i}" for k in "abc"[:n]])
        assert {"train", "valid"} <= set(splits.values())


def test_the_only_large_file_is_cut_so_train_gets_its_share():
    """By file, the one large file of three hashes into test and train gets 5 bytes: split inside instead."""
    sizes = {"big.txt": 300_000, "s1.txt": 5, "s2.txt": 6}
    assert assign_splits(list(sizes))["big.txt"] != "train"
    plan = plan_splits(sizes)
    assert plan["big.txt"] == [("train", 0.0, pytest.approx(0.9 * 300_011 / 300_000)),
                               ("valid", pytest.approx(0.9 * 300_011 / 300_000),
                                pytest.approx(0.95 * 300_011 / 300_000)),
                               ("test", pytest.approx(0.95 * 300_011 / 300_000), 1.0)]
    assert plan["s1.txt"] == [("test", 0.0, 1.0)] and plan["s2.txt"] == [("test", 0.0, 1.0)]
    # The large file in train and two 5-byte files as valid and test is no split either.
    assert plan_splits({"big.txt": 300_000, "v.txt": 5, "t.txt": 5}, (0.9, 0.05, 0.05)) == \
           contiguous_parts({"big.txt": 300_000, "v.txt": 5, "t.txt": 5}, (0.9, 0.05, 0.05))
    # A collection that splits well by file keeps whole files.
    many = {f"f{i:02d}.txt": 1000 + i for i in range(30)}
    assert all(len(parts) == 1 and parts[0][1:] == (0.0, 1.0) for parts in plan_splits(many).values())


def test_two_text_files_give_three_splits_whose_parts_decode_to_the_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text(lines_of_words(150, seed=1))
    (folder / "b.txt").write_text(lines_of_words(150, seed=2))
    manifest = prepare({"name": "folder", "path": str(folder)}, {"domain": "text", "vocab_size": 300},
                       tmp_path / "out", workers=1, progress=False)
    assert {s: e["documents"] for s, e in manifest["splits"].items()} == {"train": 2, "valid": 1, "test": 1}
    assert not manifest["rejected"] and not manifest["warnings"]
    written = shard_docs(tmp_path / "out")
    tok = load_tokenizer(tmp_path / "out" / "tokenizer")
    parts = [written[k] for k in ("b_txt__train", "b_txt__valid", "b_txt__test")]
    assert "".join(tok.decode_text(tokens) for tokens, _ in parts) == (folder / "b.txt").read_text()
    assert [meta["info"]["part"][0] for _, meta in parts] == [0.0, pytest.approx(0.8, abs=0.01),
                                                              pytest.approx(0.9, abs=0.01)]
    total = sum(e["bytes"] for e in manifest["splits"].values())
    assert total == sum(p.stat().st_size for p in folder.iterdir())
    assert manifest["splits"]["train"]["bytes"] == pytest.approx(0.9 * total, abs=200)  # cut at a word start


def test_one_large_text_and_two_small_ones(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "big.txt").write_text(lines_of_words(2000))
    (folder / "s1.txt").write_text("tiny\n")
    (folder / "s2.txt").write_text("small\n")
    manifest = prepare({"name": "folder", "path": str(folder)}, {"domain": "text", "vocab_size": 300},
                       tmp_path / "ok", workers=1, progress=False)
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert manifest["splits"]["train"]["bytes"] == pytest.approx(0.9 * total, abs=200)
    assert set(manifest["splits"]) == {"train", "valid", "test"} and not manifest["warnings"]
    # A vocabulary the train split cannot fill: one line naming both sizes, nothing of sentencepiece's.
    code = cli_main(["prepare", "--source", "folder", "--path", str(folder), "--tokenizer", "text",
                     "--set", "vocab_size=4000", "--out", str(tmp_path / "big"), "--workers", "1", "--quiet"])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and re.fullmatch(r"shortcutlm prepare: error: text tokenizer: the train split \([\d,]+ bytes\) "
                                      r"supports at most \d+ pieces, asked for 4000; lower vocab_size", err), err


def test_a_vocabulary_below_the_characters_is_one_clear_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(lines_of_words(100))
    with pytest.raises(ValueError) as err:
        prepare({"name": "folder", "path": str(tmp_path / "in")}, {"domain": "text", "vocab_size": 100},
                tmp_path / "out", workers=1, progress=False)
    message = one_line(str(err.value))
    assert re.fullmatch(r"text tokenizer: vocab_size 100 is too small for the train split \([\d,]+ bytes\), which "
                        r"needs at least \d+ pieces \(its characters, byte pieces and specials\); raise vocab_size",
                        message), message


def test_a_split_emptied_by_rejections_is_a_warning(tmp_path):
    """Twelve MIDI files split by file; the valid ones are corrupt: prepare names the empty split."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        write_midi(folder / f"piece{i:02d}.mid", [(0, False, on_grid_notes(i))])
    valid = [d.path for d in read_source({"name": "folder", "path": str(folder), "extensions": ".mid"})
             if d.split == "valid"]
    assert valid and all(d.span is None for d in read_source({"name": "folder", "path": str(folder)}))
    for path in valid:
        path.write_bytes(b"MThd" + b"\x00" * (path.stat().st_size - 4))  # same size, so the same split
    manifest = prepare({"name": "folder", "path": str(folder)}, {"domain": "midi"}, tmp_path / "out",
                       workers=1, progress=False)
    assert manifest["warnings"] == [f"the valid split is empty: all {len(valid)} of its documents were rejected"]
    assert "valid" not in manifest["splits"] and manifest["inputs"]["rejected"] == len(valid)


def test_parts_of_audio_and_midi_cover_the_file(tmp_path):
    """Audio parts are cut at samples, MIDI parts at bar lines; together they are the whole file."""
    from shortcutlm.tokenizers.acoustic import AcousticTokenizer
    from shortcutlm.tokenizers.midi import MidiTokenizer

    wav = write_wav(tmp_path / "a.wav", seconds=1.0, rate=16000)
    mid = write_midi(tmp_path / "a.mid", [(0, False, on_grid_notes(0, n_bars=40))])
    spans = [(0.0, 0.8), (0.8, 0.9), (0.9, 1.0)]
    audio = AcousticTokenizer({"weights": "mel_kmeans", "bandwidth": 1.5})
    seconds = [audio.read_audio(Document(f"a{i}", "train", "t", path=wav, span=s))[1] for i, s in enumerate(spans)]
    assert seconds == pytest.approx([0.8, 0.1, 0.1]) and sum(seconds) == pytest.approx(1.0)
    midi = MidiTokenizer()
    whole, _ = midi.load_score(Document("m", "train", "t", path=mid))
    parts = [midi.load_score(Document(f"m{i}", "train", "t", path=mid, span=s))[0] for i, s in enumerate(spans)]
    assert sum(p.note_num() for p in parts) == whole.note_num()
    bar = 4 * whole.ticks_per_quarter  # 4/4 throughout: cut at bar lines, every onset keeps its place in the bar
    assert sorted(n.time % bar for n in whole.tracks[0].notes) == \
           sorted(n.time % bar for p in parts for n in p.tracks[0].notes)


# ------------------------------------------------------------------------------ 4. and 5. messages

def test_an_empty_folder_says_which_suffixes_it_looked_for(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "texts" / name).write_text("words\n")
    for folder, holds in (("empty", "no files"), ("texts", "2 .txt")):
        code = cli_main(["prepare", "--source", "folder", "--path", str(tmp_path / folder), "--tokenizer", "midi",
                         "--out", str(tmp_path / "out"), "--quiet"])
        err = one_line(capsys.readouterr().err)
        assert code == 2 and err == (f"shortcutlm prepare: error: folder: no file under {tmp_path / folder} "
                                     f"ends in .mid .midi (it holds {holds})")


def test_a_reject_names_its_file_once(tmp_path, capsys):
    folder = tmp_path / "in" / "x"
    folder.mkdir(parents=True)
    for i in range(3):
        write_midi(folder / f"good{i}.mid", [(0, False, on_grid_notes(i))])
    (folder / "empty.mid").write_bytes(b"")
    code = cli_main(["prepare", "--source", "folder", "--path", str(folder), "--option", f"fractions={ALL_TRAIN}",
                     "--tokenizer", "midi", "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    [line] = [line for line in out.splitlines() if "rejected " in line and "empty.mid" in line]
    assert line == f"  rejected {folder / 'empty.mid'}: not a readable MIDI file (empty file)"
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert [r["reason"] for r in manifest["rejected"]] == ["not a readable MIDI file (empty file)"]


def test_workers_zero_reads_in_this_process(tmp_path):
    """The unprotected mode (for debugging) gives the same shards as a worker process."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        write_midi(folder / f"p{i}.mid", [(0, False, on_grid_notes(i))])
    a = prepare({"name": "folder", "path": str(folder)}, {"domain": "midi"}, tmp_path / "a", workers=0, progress=False)
    b = prepare({"name": "folder", "path": str(folder)}, {"domain": "midi"}, tmp_path / "b", workers=1, progress=False)
    assert [r["sha256"] for r in a["shards"]] == [r["sha256"] for r in b["shards"]]

