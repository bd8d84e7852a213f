"""prepare: real tokenizers in, shards + manifest out; resume, atomicity, accounting, CLI."""
from __future__ import annotations

import hashlib

import json

import numpy as np
import pytest

from shortcutlm.artifacts.manifest import MANIFEST
from shortcutlm.cli import main as cli_main
from shortcutlm.datasets.batches import eval_batches, train_batches
from shortcutlm.datasets.prepare import prepare
from shortcutlm.datasets.shards import ShardError, ShardWriter, read_shard, sha256_file
from shortcutlm.datasets.sources import safe_id
from shortcutlm.tokenizers import FingerprintMismatch, load_tokenizer

TEXT = {"domain": "text", "vocab_size": 400}
WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards box and judge "
         "how vexingly quick daft zebras jump in the pale moonlight").split()


def make_text_folder(root, n=14):
    rng = np.random.default_rng(0)
    for i in range(n):
        lines = [" ".join(rng.choice(WORDS, size=12)) for _ in range(20 + 3 * i)]
        (root / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n")
    (root / "corrupt.txt").write_bytes(b"valid start \xff\xfe\xfa not utf-8\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "ignored.bin").write_bytes(b"\x00")  # not a text suffix: not an input, listed as skipped
    return n + 2


def shard_table(out):
    manifest = json.loads((out / MANIFEST).read_text())
    return [(r["name"], r["sha256"], r["doc_ids"]) for r in manifest["shards"]]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    n_inputs = make_text_folder(root)
    out = tmp_path_factory.mktemp("out") / "shards"
    manifest = prepare({"name": "folder", "path": str(root)}, TEXT, out, workers=1, shard_tokens=3000, progress=False)
    return root, out, manifest, n_inputs


def test_every_input_is_a_document_or_a_rejection(text_run):
    _, out, manifest, n_inputs = text_run
    assert manifest["complete"]
    inputs = manifest["inputs"]
    assert inputs["total"] == n_inputs == inputs["documents"] + inputs["rejected"]
    assert inputs["skipped"] == 1 and [r["input"].endswith("ignored.bin") for r in manifest["rejected"]
                                       if r.get("skipped")] == [True]
    reasons = {r["doc_id"]: r["reason"] for r in manifest["rejected"] if not r.get("skipped")}
    assert set(reasons) == {"corrupt_txt", "empty_txt"}
    assert "utf-8" in reasons["corrupt_txt"].lower() and "empty" in reasons["empty_txt"]
    assert sum(s["documents"] for s in manifest["splits"].values()) == inputs["documents"]
    written = [k for r in manifest["shards"] for k in r["doc_ids"]]
    assert len(written) == len(set(written)) == inputs["documents"]


def test_manifest_and_samples(text_run):
    root, out, manifest, _ = text_run
    tok = load_tokenizer(out / "tokenizer")
    assert manifest["tokenizer"] == {"domain": "text", "fingerprint": tok.fingerprint(), "vocab_size": tok.vocab_size,
                                     "n_streams": 1, "special_ids": tok.special_ids, "folder": "tokenizer",
                                     "files": sorted(p.name for p in (out / "tokenizer").iterdir()),
                                     "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                                for p in (out / "tokenizer").iterdir()}}
    assert manifest["dtype"] == "uint16"
    assert {"train", "valid", "test"} <= set(manifest["splits"])
    assert len([r for r in manifest["shards"] if r["split"] == "train"]) > 1  # shard_tokens closes shards
    total_bytes = 0
    for record in manifest["shards"]:
        path = out / record["name"]
        assert path.name.startswith(record["split"] + "-") and sha256_file(path) == record["sha256"]
        samples = list(read_shard(path))
        assert [k for k, _, _ in samples] == record["doc_ids"]
        assert sum(t.shape[-1] for _, t, _ in samples) == record["tokens"]
        for key, tokens, meta in samples:
            assert tokens.dtype == np.uint16 and meta["doc_id"] == key and meta["split"] == record["split"]
            assert meta["source"] == "folder"
            original = (root / meta["info"]["relative_path"]).read_text()
            assert meta["bytes"] == len(original.encode()) and tok.decode_text(tokens) == original
            total_bytes += meta["bytes"]
    assert sum(s["bytes"] for s in manifest["splits"].values()) == total_bytes
    assert not list(out.glob("*.tmp"))


def test_tokenizer_trained_on_train_split_only(text_run, tmp_path):
    """Same train documents, different valid/test ones (of the same sizes, which the split rule
    reads): same tokenizer."""
    root, out, manifest, _ = text_run
    moved = tmp_path / "other"
    moved.mkdir()
    held_out = {k for r in manifest["shards"] if r["split"] != "train" for k in r["doc_ids"]}
    for file in root.glob("*.txt"):  # same names, so the same hash splits
        keep = safe_id(file.name) not in held_out
        size = file.stat().st_size
        other = (b"completely different words here\n" * (size // 32 + 1))[:size]
        (moved / file.name).write_bytes(file.read_bytes() if keep else other)
    again = prepare({"name": "folder", "path": str(moved)}, TEXT, tmp_path / "o", workers=1, progress=False)
    assert again["tokenizer"]["fingerprint"] == manifest["tokenizer"]["fingerprint"]


def test_parallel_run_writes_identical_shards(text_run, tmp_path):
    root, out, _, _ = text_run
    prepare({"name": "folder", "path": str(root)}, TEXT, tmp_path / "par", workers=2, shard_tokens=3000, progress=False)
    assert shard_table(tmp_path / "par") == shard_table(out)


def test_killed_run_resumes_without_duplicates(text_run, tmp_path, monkeypatch):
    root, out, _, _ = text_run
    target = tmp_path / "resumed"
    real_finish = ShardWriter.finish
    calls = {"n": 0}

    def finish_then_die(self):
        calls["n"] += 1
        if calls["n"] == 3:  # die after writing the third shard's bytes, before its rename
            raise KeyboardInterrupt
        return real_finish(self)

    monkeypatch.setattr(ShardWriter, "finish", finish_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare({"name": "folder", "path": str(root)}, TEXT, target, workers=1, shard_tokens=3000, progress=False)
    monkeypatch.setattr(ShardWriter, "finish", real_finish)
    partial = json.loads((target / MANIFEST).read_text())
    assert not partial["complete"] and len(partial["shards"]) == 2
    assert sorted(p.name for p in target.glob("*.tar")) == sorted(r["name"] for r in partial["shards"])
    (target / "train-000002.tar.tmp").write_bytes(b"half a shard")  # what a SIGKILL would leave
    with pytest.raises(ShardError, match="incomplete|did not finish"):
        eval_batches(target, "valid", 16, 2)
    done_before = {p.name: p.stat().st_mtime_ns for p in target.glob("*.tar")}
    manifest = prepare({"name": "folder", "path": str(root)}, TEXT, target, workers=1, shard_tokens=3000,
                       progress=False)
    assert manifest["complete"] and shard_table(target) == shard_table(out)
    assert all((target / n).stat().st_mtime_ns == t for n, t in done_before.items())  # finished shards kept
    assert not list(target.glob("*.tmp"))
    # A third run has nothing left to do and changes nothing.
    assert prepare({"name": "folder", "path": str(root)}, TEXT, target, workers=1, shard_tokens=3000,
                   progress=False)["inputs"] == manifest["inputs"]
    assert shard_table(target) == shard_table(out)


def test_resume_refuses_other_settings_or_tokenizer(text_run, tmp_path):
    root, out, _, _ = text_run
    with pytest.raises(ValueError, match="tokenizer_settings"):
        prepare({"name": "folder", "path": str(root)}, {**TEXT, "vocab_size": 500}, out, progress=False)
    target = tmp_path / "copy"
    prepare({"name": "folder", "path": str(root)}, TEXT, target, workers=1, progress=False)
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["tokenizer"]["fingerprint"] = "0" * 16
    (target / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FingerprintMismatch):
        prepare({"name": "folder", "path": str(root)}, TEXT, target, workers=1, progress=False)


def test_bad_specs_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown source"):
        prepare({"name": "nope"}, TEXT, tmp_path)
    with pytest.raises(ValueError, match="unknown option"):
        prepare({"name": "shakespeare", "colour": 1}, TEXT, tmp_path)
    with pytest.raises(ValueError, match="vocab_sise"):
        prepare({"name": "shakespeare", "limit": 2}, {"domain": "text", "vocab_sise": 10}, tmp_path)
    with pytest.raises(ValueError, match="domain"):
        prepare({"name": "shakespeare"}, {"vocab_size": 10}, tmp_path)


def test_loader_reads_prepared_text(text_run):
    _, out, manifest, _ = text_run
    batches = list(eval_batches(out, "valid", 64, 4))
    pad = manifest["tokenizer"]["special_ids"]["pad"]
    targets = sum(int((b[:, 1:] != pad).sum()) for b in batches)
    split = manifest["splits"]["valid"]
    assert targets == split["tokens"] + split["documents"]
    batch = next(iter(train_batches(out, 64, 4, seed=0)))
    assert batch.shape == (4, 65) and int(batch.max()) < manifest["tokenizer"]["vocab_size"]


def test_cli_with_spec_file(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("source: {name: shakespeare}\ntokenizer: {domain: text, vocab_size: 400}\n")
    out = tmp_path / "cli"
    code = cli_main(["prepare", "--spec", str(spec), "--option", "limit=4", "--set", "input_sentence_size=2000",
                     "--out", str(out), "--workers", "1", "--quiet"])
    assert code == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source"] == {"name": "shakespeare", "limit": 4}
    assert manifest["tokenizer_settings"] == {"domain": "text", "vocab_size": 400, "input_sentence_size": 2000}
    assert manifest["inputs"]["documents"] == 4
    assert "train:" in capsys.readouterr().out
    assert cli_main(["prepare", "--source", "nope", "--tokenizer", "text", "--out", str(out)]) == 2
    assert "unknown source" in capsys.readouterr().err


# ------------------------------------------------------------------------------ MIDI and audio

def test_midi_chorales_with_a_corrupt_file(chorales_cache, tmp_path):
    """Chorales as MIDI through the folder source, one file corrupt: counts still add up."""
    from .conftest import CHORALES

    folder = tmp_path / "midi"
    folder.mkdir()
    for path in sorted((chorales_cache / "bach_chorales").glob("*.mid"))[:CHORALES]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    manifest = prepare({"name": "folder", "path": str(folder)}, {"domain": "midi"}, tmp_path / "out",
                       workers=1, progress=False)
    inputs = manifest["inputs"]
    # Seven files are a small collection: one or two chorales may be cut into parts (splits.py).
    assert inputs["total"] >= CHORALES + 1 and inputs["total"] == inputs["documents"] + inputs["rejected"]
    assert [r["doc_id"] for r in manifest["rejected"]] == ["broken_mid"]
    assert manifest["tokenizer"]["domain"] == "midi" and manifest["dtype"] == "uint16"
    assert all(s["seconds"] > 0 for s in manifest["splits"].values())
    _, tokens, meta = next(read_shard(tmp_path / "out" / manifest["shards"][0]["name"]))
    assert meta["seconds"] > 1 and tokens.ndim == 1


@pytest.mark.slow
def test_bach_chorales_source_end_to_end(chorales_cache, tmp_path):
    manifest = prepare({"name": "bach_chorales", "limit": 4, "cache": str(chorales_cache)}, {"domain": "midi"},
                       tmp_path / "out", workers=2, progress=False)
    assert manifest["inputs"] == {"total": 4, "documents": 4, "rejected": 0, "skipped": 0}
    batch = next(iter(train_batches(tmp_path / "out", 32, 2, seed=0)))
    assert batch.shape == (2, 33)


@pytest.mark.slow
def test_acoustic_delay_layout_end_to_end(tmp_path):
    """K-stream tokens ([K, T]) from real audio through shards and both loaders."""
    import soundfile

    folder = tmp_path / "wav"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rate = 24000
    for i in range(3):
        t = np.arange(int(rate * 0.6)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.01 * rng.standard_normal(t.size)
        soundfile.write(str(folder / f"clip{i}.wav"), wave.astype(np.float32), rate)
    settings = {"domain": "acoustic", "weights": "mel_kmeans", "bandwidth": 1.5, "layout": "delay",
                "kmeans_iters": 2, "kmeans_max_frames": 2000}
    manifest = prepare({"name": "folder", "path": str(folder)}, settings, tmp_path / "out", workers=1, progress=False)
    k = manifest["tokenizer"]["n_streams"]
    # Three equal files are too few to split by file: the last one is cut into train/valid/test parts.
    assert k == 2 and manifest["inputs"]["documents"] == 5 and not manifest["rejected"]
    _, tokens, meta = next(read_shard(tmp_path / "out" / manifest["shards"][0]["name"]))
    assert tokens.shape[0] == k and meta["seconds"] == pytest.approx(0.6, abs=0.02)
    eos = manifest["tokenizer"]["special_ids"]["eos"]
    for split in manifest["splits"]:
        batches = list(eval_batches(tmp_path / "out", split, 16, 4))
        assert batches[0].shape[1:] == (k, 17) and (batches[0][0, :, 0] == eos).all()
        pad = manifest["tokenizer"]["special_ids"]["pad"]
        targets = sum(int((b[:, 0, 1:] != pad).sum()) for b in batches)
        entry = manifest["splits"][split]
        assert targets == entry["tokens"] + entry["documents"]
    assert next(iter(train_batches(tmp_path / "out", 16, 3, seed=1))).shape == (3, k, 17)
