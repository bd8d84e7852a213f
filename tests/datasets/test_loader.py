"""The loader: exact evaluation passes, seeded disjoint training streams, exact resume."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from shortcutlm.artifacts.manifest import MANIFEST
from shortcutlm.datasets.loader import ShardError, read_manifest
from shortcutlm.datasets.batches import eval_batches, train_batches

from .helpers import EOS, PAD, stream_of, unique_docs, write_shards


def targets_of(batches, n_streams: int = 1) -> np.ndarray:
    """Concatenated non-pad targets of a pass, checking each window continues the previous one."""
    out, previous_last = [], None
    for batch in batches:
        for window in batch.numpy():
            if (window == PAD).all():
                continue
            if previous_last is not None:
                assert np.array_equal(window[..., 0], previous_last)
            previous_last = window[..., -1]
            tgt = window[..., 1:]
            keep = (tgt != PAD).all(axis=0) if n_streams > 1 else tgt != PAD
            out.append(tgt[..., keep])
    return np.concatenate(out, axis=-1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("shards")
    splits = {"train": unique_docs(23, seed=1), "valid": unique_docs(7, seed=2, start=30000)}
    write_shards(path, splits, docs_per_shard=3)
    return path, splits


@pytest.mark.parametrize("block,batch", [(8, 3), (16, 4), (1, 5), (500, 2)])
def test_eval_pass_covers_every_token_once(folder, block, batch):
    path, splits = folder
    loader = eval_batches(path, "valid", block, batch)
    batches = list(loader)
    assert len(batches) == len(loader)
    assert all(b.dtype == torch.int64 and b.shape[1] == block + 1 for b in batches)
    expected = stream_of(splits["valid"])[1:]
    assert np.array_equal(targets_of(batches), expected)
    assert loader.targets == len(expected)
    # Deterministic: a second pass is identical.
    assert all(torch.equal(a, b) for a, b in zip(batches, eval_batches(path, "valid", block, batch), strict=True))


def test_eval_ranks_share_the_pass_in_step(folder):
    path, splits = folder
    world = 3
    per_rank = [list(eval_batches(path, "valid", 8, 2, rank=r, world_size=world)) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # same number of batches: no rank waits on the others
    flat = [[w for b in per_rank[r] for w in b.numpy()] for r in range(world)]
    n_windows = eval_batches(path, "valid", 8, 2).n_windows
    ordered = [flat[i % world][i // world] for i in range(n_windows)]  # window i lives on rank i % world
    assert np.array_equal(targets_of([torch.from_numpy(np.stack(ordered))]), stream_of(splits["valid"])[1:])
    leftovers = [w for r in range(world) for w in flat[r][len([i for i in range(n_windows) if i % world == r]):]]
    assert all((w == PAD).all() for w in leftovers)


def test_multi_stream_layout(tmp_path):
    docs = unique_docs(5, lengths=[7, 3, 12, 1, 9], n_streams=4, seed=3)
    write_shards(tmp_path, {"train": docs, "valid": docs}, docs_per_shard=2, n_streams=4)
    batches = list(eval_batches(tmp_path, "valid", 6, 2))
    assert batches[0].shape == (2, 4, 7)
    assert np.array_equal(targets_of(batches, 4), stream_of(docs, 4)[:, 1:])
    # the EOS column is eos in every stream
    first = batches[0][0].numpy()
    assert (first[:, 0] == EOS).all()
    train = next(iter(train_batches(tmp_path, 6, 3, seed=0)))
    assert train.shape == (3, 4, 7)


def doc_of(value: int, docs) -> int:
    for i, d in enumerate(docs):
        if d.min() <= value <= d.max():
            return i
    raise AssertionError(value)


def first_windows(loader, n_batches):
    """The loader's first ``n_batches`` batches; a loader that ends sooner fails the test."""
    got = list(itertools.islice(iter(loader), n_batches))
    assert len(got) == n_batches, f"the loader gave {len(got)} of {n_batches} batches"
    return got


def test_training_is_seeded_and_reshuffled(folder):
    path, _ = folder
    a = first_windows(train_batches(path, 8, 4, seed=5), 6)
    b = first_windows(train_batches(path, 8, 4, seed=5), 6)
    c = first_windows(train_batches(path, 8, 4, seed=6), 6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert a[0].shape == (4, 9)


def test_training_streams_every_token_each_epoch(folder):
    """One slot, one epoch's worth of windows: every train token appears, in a permuted order."""
    path, splits = folder
    docs = splits["train"]
    total = sum(len(d) + 1 for d in docs)
    block = 4
    loader = train_batches(path, block, 1, seed=0)
    windows = [b[0].numpy() for b in itertools.islice(iter(loader), -(-total // block))]
    seen = np.concatenate([w[1:] for w in windows])[:total]  # stream positions 1..total: epoch 0
    tokens = seen[seen != EOS]
    assert sorted(tokens.tolist()) == sorted(np.concatenate(docs).tolist())
    assert loader.state_dict()["epoch"] in (0, 1)
    order = [doc_of(int(t), docs) for t in tokens]
    starts = [k for k, _ in itertools.groupby(order)]
    assert starts != sorted(starts)  # shuffled
    assert len(starts) == len(docs)  # each document whole and contiguous


@pytest.mark.parametrize("world,workers,mode",
                         [(2, 0, "shards"), (5, 2, "documents"), (4, 2, "shards"), (2, 2, "shards")])
def test_ranks_and_workers_see_disjoint_documents(folder, world, workers, mode):
    path, splits = folder
    docs = splits["train"]
    loaders = [train_batches(path, 4, 2, seed=1, rank=r, world_size=world, num_workers=workers) for r in range(world)]
    assert loaders[0].mode == mode
    slots = world * max(1, workers)
    plan = loaders[0].plan
    owned = [set() for _ in range(slots)]
    for slot in range(slots):
        shard_idx, doc_idx = plan.order(0, plan.stream_of(slot))
        for i, j in zip(shard_idx, doc_idx):
            owned[slot].add(int(i) * 3 + int(j))
    assert sum(len(o) for o in owned) == len(docs) and set().union(*owned) == set(range(len(docs)))
    # The first batch of each rank only holds tokens of that rank's documents.
    for rank, loader in enumerate(loaders):
        batch = next(iter(loader)).numpy()
        values = batch[batch != EOS]
        rank_docs = set().union(*owned[rank * max(1, workers):(rank + 1) * max(1, workers)])
        assert {doc_of(int(v), docs) for v in values} <= rank_docs


def test_few_documents_fall_back_to_windows_without_starving(tmp_path):
    docs = unique_docs(2, lengths=[10, 3])
    write_shards(tmp_path, {"train": docs}, docs_per_shard=2)
    world = 3
    firsts = []
    for rank in range(world):
        loader = train_batches(tmp_path, 4, 2, seed=0, rank=rank, world_size=world, num_workers=2)
        assert loader.mode == "windows"
        got = first_windows(loader, 3)
        assert len(got) == 3
        firsts.append(got[0][0].numpy())
    # The first windows of the slots are distinct windows of one stream.
    assert len({w.tobytes() for w in firsts}) == world


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_gives_the_uninterrupted_batches(folder, workers):
    path, _ = folder
    args = dict(block_size=8, batch_size=3, seed=11, rank=1, world_size=2, num_workers=workers)
    whole = first_windows(train_batches(path, **args), 25)
    first = train_batches(path, **args)
    head = first_windows(first, 9)
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint
    assert state["batches"] == 9 and state["windows"] == 27
    tail = first_windows(train_batches(path, **args, state=state), 16)
    assert all(torch.equal(x, y) for x, y in zip(head + tail, whole, strict=True))
    with pytest.raises(ValueError, match="seed"):
        train_batches(path, **{**args, "seed": 12}, state=state)
    # Rank 0's saved state resumes rank 0 (DDP checkpoints are written by one rank).
    rank0 = {**args, "rank": 0}
    assert all(torch.equal(x, y) for x, y in zip(first_windows(train_batches(path, **rank0, state=state), 4),
                                                 first_windows(train_batches(path, **rank0), 13)[9:], strict=True))


def test_resume_across_many_epochs(tmp_path):
    docs = unique_docs(4, lengths=[5, 6, 7, 8])
    write_shards(tmp_path, {"train": docs}, docs_per_shard=1)
    whole = first_windows(train_batches(tmp_path, 5, 2, seed=3), 40)
    loader = train_batches(tmp_path, 5, 2, seed=3)
    first_windows(loader, 23)
    state = loader.state_dict()
    assert state["epoch"] > 5
    assert all(torch.equal(x, y) for x, y in zip(first_windows(train_batches(tmp_path, 5, 2, seed=3, state=state), 17),
                                                 whole[23:], strict=True))


def test_bad_shards_are_named(tmp_path):
    docs = unique_docs(6, seed=4)
    write_shards(tmp_path, {"train": docs, "valid": docs}, docs_per_shard=3)
    victim = tmp_path / "valid-000001.tar"
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="valid-000001.tar.*checksum"):
        list(eval_batches(tmp_path, "valid", 8, 2))
    # A tar whose checksum matches the manifest but whose structure is broken.
    manifest = read_manifest(tmp_path)
    victim.write_bytes(b"not a tar at all" * 100)
    import hashlib
    for record in manifest["shards"]:
        if record["name"] == victim.name:
            record["sha256"] = hashlib.sha256(victim.read_bytes()).hexdigest()
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="valid-000001.tar"):
        list(eval_batches(tmp_path, "valid", 8, 2))
    (tmp_path / "train-000000.tar").unlink()
    with pytest.raises(ShardError, match="train-000000.tar.*missing"):
        next(iter(train_batches(tmp_path, 8, 2, seed=0)))


def test_unknown_split_and_unfinished_manifest(folder, tmp_path):
    path, _ = folder
    with pytest.raises(ValueError, match="no shards for split 'test'"):
        eval_batches(path, "test", 8, 2)
    write_shards(tmp_path, {"train": unique_docs(2)}, 1)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["complete"] = False
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="did not finish"):
        train_batches(tmp_path, 8, 2, seed=0)
