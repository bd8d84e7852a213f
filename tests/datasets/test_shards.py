"""Shard files: WebDataset layout, atomic writes, reproducible bytes, errors that name the shard."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import webdataset as wds

from shortcutlm.datasets.shards import (ShardError, ShardWriter, read_manifest, read_shard, sha256_file,
                                        token_dtype, verify_shard)


def write(folder, docs, index=0, dtype=np.uint16):
    writer = ShardWriter(folder, "train", index, np.dtype(dtype))
    for i, doc in enumerate(docs):
        writer.add(f"doc-{i}", doc, {"source": "test", "split": "train", "doc_id": f"doc-{i}", "bytes": 3})
    return writer


def test_dtype_choice():
    assert token_dtype(1024) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.int32


def test_round_trip_and_webdataset_layout(tmp_path):
    docs = [np.arange(10), np.arange(7, 20).reshape(1, 13).repeat(4, axis=0)]
    record = write(tmp_path, docs).finish()
    path = tmp_path / record.name
    assert record.name == "train-000000.tar" and record.documents == 2 and record.tokens == 10 + 13
    assert record.doc_tokens == (10, 13) and record.sha256 == sha256_file(path)
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["doc-0.meta.json", "doc-0.tokens.npy", "doc-1.meta.json", "doc-1.tokens.npy"]
    got = list(read_shard(path))
    assert [k for k, _, _ in got] == ["doc-0", "doc-1"]
    assert got[0][1].dtype == np.uint16 and np.array_equal(got[0][1], docs[0])
    assert got[1][1].shape == (4, 13) and got[1][2]["bytes"] == 3
    # A stock webdataset pipeline reads the same samples.
    samples = list(wds.WebDataset(str(path), shardshuffle=False, nodesplitter=wds.split_by_node).decode())
    assert [s["__key__"] for s in samples] == ["doc-0", "doc-1"]
    assert np.array_equal(samples[0]["tokens.npy"], docs[0]) and samples[1]["meta.json"]["doc_id"] == "doc-1"


def test_same_documents_same_bytes(tmp_path):
    docs = [np.arange(50) % 7, np.arange(3)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert write(tmp_path / "a", docs).finish().sha256 == write(tmp_path / "b", docs).finish().sha256


def test_unfinished_shard_is_only_a_temp_file(tmp_path):
    writer = write(tmp_path, [np.arange(5)])
    assert not (tmp_path / "train-000000.tar").exists() and writer.tmp.exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_bad_keys_and_ids_are_refused(tmp_path):
    writer = ShardWriter(tmp_path, "train", 0, np.dtype(np.uint16))
    with pytest.raises(ValueError, match="no dots"):
        writer.add("a.b", np.arange(3), {})
    with pytest.raises(ValueError, match="outside the range"):
        writer.add("big", np.array([70000]), {})
    writer.abort()


def test_errors_name_the_shard(tmp_path):
    record = write(tmp_path, [np.arange(100)]).finish()
    path = tmp_path / record.name
    verify_shard(path, record.sha256)
    path.write_bytes(path.read_bytes()[:700])
    with pytest.raises(ShardError, match="train-000000.tar.*checksum"):
        verify_shard(path, record.sha256)
    with pytest.raises(ShardError, match="train-000000.tar"):
        list(read_shard(path))
    with pytest.raises(ShardError, match="missing"):
        verify_shard(tmp_path / "nope.tar", record.sha256)


def test_manifest_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="shortcutlm prepare"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ShardError, match="not a shortcutlm"):
        read_manifest(tmp_path)
