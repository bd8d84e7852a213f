"""The mixture folder and its loader on a prepared text8 (fast; the three-domain runs are in
``tests/test_joint.py``): shares, markers, an exact evaluation pass, exact resume, the refusals."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.datasets.batches import eval_batches, train_batches
from shortcutlm.datasets.mixture import MixtureError, MixturePart, build_mixture, domain_folder
from shortcutlm.datasets.prepare import prepare
from shortcutlm.tokenizers import load_tokenizer
from tests.conftest import write_text8

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mix(text8_shards, tmp_path_factory) -> Path:
    """text8 twice (one tokenizer, so one part), weighted 1 : 3."""
    out = tmp_path_factory.mktemp("mix") / "mix"
    return build_mixture([MixturePart(text8_shards, 1.0), MixturePart(text8_shards, 3.0)], out)


def test_the_mixture_folder_describes_itself(mix, text8_shards):
    manifest = ShardManifest.read(mix)
    parts = manifest.raw["mixture"]["parts"]
    assert [p["probability"] for p in parts] == [0.25, 0.75] and {p["domain"] for p in parts} == {"text"}
    joint = load_tokenizer(manifest.tokenizer_dir)
    part = load_tokenizer(ShardManifest.read(text8_shards).tokenizer_dir)
    assert joint.domains == ["text"] and joint.vocab_size == part.vocab_size + 4  # pad, bos, eos, one marker
    assert manifest.fingerprint == joint.fingerprint() and manifest.vocab_size == joint.vocab_size
    train = ShardManifest.read(text8_shards).split("train")
    assert manifest.split("train").tokens == 2 * (train.tokens + train.documents)  # each document one marker longer
    view = ShardManifest.read(domain_folder(mix, "text"))
    assert view.split("test").bytes == 2 * ShardManifest.read(text8_shards).split("test").bytes
    # Building it again keeps it; another mixture into the same folder is refused.
    assert build_mixture([MixturePart(text8_shards, 1.0), MixturePart(text8_shards, 3.0)], mix) == mix
    with pytest.raises(MixtureError, match="holds another mixture"):
        build_mixture([MixturePart(text8_shards)], mix)


def test_an_evaluation_pass_scores_each_document_token_and_eos_once(mix, text8_shards):
    joint = load_tokenizer(mix / "tokenizer")
    batches = eval_batches(domain_folder(mix, "text"), "test", 32, 4)
    test = ShardManifest.read(text8_shards).split("test")
    targets = torch.cat([b[:, 1:].reshape(-1) for b in batches])
    scored = ~torch.isin(targets, torch.tensor([joint.pad_id, *joint.markers.values()]))
    assert batches.targets == int(scored.sum()) == 2 * (test.tokens + test.documents)
    assert int((targets == joint.eos_id).sum()) == 2 * test.documents
    assert int((targets == joint.markers["text"]).sum()) == 2 * test.documents


def test_batches_are_deterministic_and_resume_exactly(mix):
    first = [b for _, b in zip(range(10), train_batches(mix, 32, 4, seed=7))]
    again = [b for _, b in zip(range(10), train_batches(mix, 32, 4, seed=7))]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    loader = train_batches(mix, 32, 4, seed=7)
    stream = iter(loader)
    for _ in range(6):
        next(stream)
    state = loader.state_dict()
    assert state["batches"] == 6 and state["mixture"][1][1] == 0.75
    resumed = [b for _, b in zip(range(4), train_batches(mix, 32, 4, seed=7, state=state))]
    assert all(torch.equal(a, b) for a, b in zip(first[6:], resumed, strict=True))
    joint = load_tokenizer(mix / "tokenizer")
    ids = torch.cat(first).reshape(-1)
    assert int(ids.min()) >= 0 and int(ids.max()) < joint.vocab_size and joint.pad_id not in ids.tolist()


def test_folders_that_cannot_be_mixed_are_refused_in_one_line(text8_shards, tmp_path):
    def refused(parts: list[MixturePart], match: str, folder: Path) -> None:
        with pytest.raises(MixtureError, match=match) as err:
            build_mixture(parts, tmp_path / f"out{len(list(tmp_path.iterdir()))}")
        assert "\n" not in str(err.value) and str(folder) in str(err.value)

    refused([MixturePart(text8_shards, 0.0)], "do not sum to something positive", text8_shards)
    refused([MixturePart(text8_shards, -2.0)], "weight -2.0 is not a number >= 0", text8_shards)
    refused([MixturePart(tmp_path / "nowhere")], "no prepared folder here", tmp_path / "nowhere")

    unfinished = tmp_path / "unfinished"
    shutil.copytree(text8_shards, unfinished)
    body = json.loads((unfinished / "manifest.json").read_text())
    body["complete"] = False
    (unfinished / "manifest.json").write_text(json.dumps(body))
    refused([MixturePart(unfinished)], "prepare did not finish", unfinished)

    empty = tmp_path / "empty"
    shutil.copytree(text8_shards, empty)
    body["complete"] = True
    body["splits"]["train"] = {"documents": 0, "tokens": 0, "shards": []}
    body["shards"] = [s for s in body["shards"] if s["split"] != "train"]
    (empty / "manifest.json").write_text(json.dumps(body))
    refused([MixturePart(empty)], "train split is empty", empty)

    other = tmp_path / "other_text"
    write_text8(tmp_path / "text8_b", chars=30_000, seed=3)
    prepare({"name": "text8", "path": str(tmp_path / "text8_b"), "chunk_chars": 10_000_000},
            {"domain": "text", "vocab_size": 320}, other, workers=1, progress=False)
    refused([MixturePart(text8_shards), MixturePart(other)], "a second text folder made with another tokenizer",
            other)
    assert np.isclose(sum(p["probability"] for p in ShardManifest.read(
        build_mixture([MixturePart(text8_shards)], tmp_path / "fine")).raw["mixture"]["parts"]), 1.0)
