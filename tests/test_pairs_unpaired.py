"""Single-domain documents mixed into a pairs folder's train split, pairs too long for the context, and
a pairs folder's shards closing at prepare's sizes.

The mixed folder is prepared from the embedded chorales (pairs) and the embedded ``bach_chorales``
(unpaired MIDI) with the real tokenizers; what is asserted: the unpaired documents are the pairs' own
MIDI ids (same tokenizer), written as targets without a source so a loss on targets counts all of them,
only in train, never the chorale of a held-out pair, and valid and test are exactly the pairs'.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.datasets.shards import read_shard
from shortcutlm.models.losses import IGNORE, targets_only
from shortcutlm.pairs.prepare import prepare_pairs
from shortcutlm.pairs.records import TOO_LONG, Half, Pair
from shortcutlm.pairs.sequences import target_spans
from shortcutlm.pairs.shards import SplitShards
from shortcutlm.pairs.tasks import TASKS, PairError
from shortcutlm.pairs.unpaired import check_unpaired, unpaired_documents
from shortcutlm.tokenizers import load_tokenizer

MIDI = {"vocab_size": 600, "use_tempos": True, "num_tempos": 211, "tempo_range": [40, 250]}
AUDIO = {"bandwidth": 1.5, "layout": "flatten", "weights": "mel_kmeans", "kmeans_iters": 3}
SOURCE = {"name": "chorales", "limit": 5, "segments": 2, "workers": 1}
WANTED = [TASKS["synthesize"], TASKS["transcribe"]]


def documents(folder: Path) -> dict[str, list[tuple[str, np.ndarray, dict]]]:
    manifest = ShardManifest.read(folder)
    return {split: [doc for record in manifest.shards_of(split) for doc in read_shard(folder / record.name)]
            for split in manifest.splits}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """The same pairs prepared twice, without and with unpaired chorales: ``(plain, mixed)``."""
    root = tmp_path_factory.mktemp("mixing")
    source = {**SOURCE, "cache": str(root / "cache")}
    prepare_pairs(source, {"midi": MIDI, "acoustic": AUDIO}, root / "plain", workers=0, progress=False)
    prepare_pairs(source, {"midi": MIDI, "acoustic": AUDIO}, root / "mixed", workers=0, progress=False,
                  unpaired=[{"domain": "midi", "source": {"name": "bach_chorales", "limit": 5,
                                                           "cache": str(root / "cache")}}])
    return root / "plain", root / "mixed"


@pytest.mark.slow
def test_unpaired_documents_join_train_as_targets_without_a_source(folders):
    plain, mixed = folders
    tok = load_tokenizer(mixed / "tokenizer")
    report = ShardManifest.read(mixed).raw["pairs"]["unpaired"]
    assert len(report) == 1 and report[0]["domain"] == "midi" and report[0]["documents"] > 0
    unpaired_folder = mixed / report[0]["folder"]
    # encoded with the pairs' own MIDI tokenizer: a score alone and a score as a half share their ids
    assert (ShardManifest.read(unpaired_folder).fingerprint
            == load_tokenizer(mixed / "parts" / "midi" / "tokenizer").fingerprint())
    originals = {key: ids for key, ids, _ in documents(unpaired_folder)["train"]}
    written = [(key, ids, meta) for key, ids, meta in documents(mixed)["train"] if meta.get("unpaired")]
    assert len(written) == report[0]["documents"]
    assert sum(meta["target_tokens"] for *_, meta in written) == report[0]["tokens"]
    marker = tok.special_ids["task_transcribe"]  # the task whose target is MIDI
    for _key, ids, meta in written:
        expected = np.concatenate([[marker], originals[meta["doc_id"]] + tok.offsets["midi"]])
        assert np.array_equal(ids, expected)
    # a loss on targets only counts every token of an unpaired document and its EOS
    manifest = ShardManifest.read(mixed)
    opens, closes = target_spans(manifest.special_ids)
    ids = written[0][1]
    row = torch.as_tensor(np.concatenate([[tok.eos_id], ids, [tok.eos_id]]))[None]
    targets = targets_only(row, opens, closes)
    assert int((targets != IGNORE).sum()) == len(ids)  # all but the marker's own prediction, plus the EOS
    # valid and test are exactly the pairs', so runs with and without unpaired data are measured alike
    for split in ("valid", "test"):
        a, b = documents(plain)[split], documents(mixed)[split]
        assert [k for k, *_ in a] == [k for k, *_ in b]
        assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not any(meta.get("unpaired") for split in ("valid", "test") for *_, meta in documents(mixed)[split])


@pytest.mark.slow
def test_an_unpaired_document_from_a_held_out_pair_is_left_out(folders, tmp_path):
    _plain, mixed = folders
    joint = load_tokenizer(mixed / "tokenizer")
    report = ShardManifest.read(mixed).raw["pairs"]["unpaired"][0]
    chorale = documents(mixed / report["folder"])["train"][0][0]
    held = Pair(f"{chorale}-s00", "test", (Half("midi", Path("a.mid")), Half("acoustic", Path("a.wav"))),
                {"chorale": chorale})
    reports: list = []
    out = tmp_path / "again"
    out.mkdir()
    keys = [meta["doc_id"] for _k, _ids, meta in unpaired_documents(
        check_unpaired([{"domain": "midi", "source": report["source"]}], {"midi", "acoustic"}, WANTED), out, joint,
        [held], mixed / "parts", 0, False, reports)]
    assert chorale not in keys and keys
    assert reports[0].held_out == [chorale] and reports[0].documents == len(keys)


@pytest.mark.slow
def test_pairs_longer_than_max_tokens_are_left_over_with_their_length(folders, tmp_path):
    plain, _mixed = folders
    lengths = sorted(meta["source_tokens"] + meta["target_tokens"] + 3
                     for docs in documents(plain).values() for *_, meta in docs if not meta.get("alone"))
    limit = lengths[len(lengths) // 2]
    out = tmp_path / "short"
    manifest = prepare_pairs({**SOURCE, "cache": str(plain.parent / "cache")}, {"midi": MIDI, "acoustic": AUDIO},
                             out, workers=0, progress=False, max_tokens=limit)
    long = [x for x in manifest["pairs"]["leftovers"] if x["kind"] == TOO_LONG]
    assert long and all("more than pairs.max_tokens" in x["reason"] for x in long)
    assert manifest["pairs"]["longest_sequence"] <= limit
    kept = sum(manifest["pairs"]["pairs_per_split"].values())
    assert kept + len(long) == sum(ShardManifest.read(plain).raw["pairs"]["pairs_per_split"].values())
    with pytest.raises(PairError, match="pairs.max_tokens"):
        prepare_pairs({**SOURCE, "cache": str(plain.parent / "cache")}, {"midi": MIDI, "acoustic": AUDIO},
                      tmp_path / "bad", workers=0, progress=False, max_tokens=0)


def test_a_pairs_folder_closes_its_shards_at_the_sizes_given(tmp_path):
    shards = SplitShards(tmp_path, np.dtype(np.uint16), shard_tokens=1000, shard_documents=3)
    for n in range(7):
        shards.add("train", f"t{n}", np.arange(n + 1), {"n": n})
    shards.add("test", "x", np.arange(2000), {})  # one document over the token size: a shard of its own
    shards.add("test", "y", np.arange(5), {})
    records = shards.finish()
    assert [r["name"] for r in records] == ["test-000000.tar", "test-000001.tar", "train-000000.tar",
                                            "train-000001.tar", "train-000002.tar"]
    read = [key for r in records if r["split"] == "train" for key, _ids, _m in read_shard(tmp_path / r["name"])]
    assert read == [f"t{n}" for n in range(7)]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("entries, message", [
    ("bach_chorales", "give a list"),
    ([{"domain": "midi"}], r"pairs.unpaired\[0\]: give"),
    ([{"domain": "midi", "source": {"name": "x"}, "weight": 2}], r"pairs.unpaired\[0\]: give"),
    ([{"domain": "text", "source": {"name": "shakespeare"}}], "not one the pairs hold"),
])
def test_unpaired_entries_are_checked_in_one_line(entries, message):
    with pytest.raises(PairError, match=message):
        check_unpaired(entries, {"midi", "acoustic"}, WANTED)


def test_unpaired_documents_need_a_task_whose_target_is_their_domain():
    with pytest.raises(PairError, match="no task of this recipe writes midi as its target"):
        check_unpaired([{"domain": "midi", "source": {"name": "bach_chorales"}}], {"midi", "acoustic"},
                       [TASKS["synthesize"]])
