"""One decoder, three domains: the mixture of prepared folders, its loader, and a joint model
trained on the three embedded datasets, evaluated and sampled per domain from one checkpoint.

The parts are the suite's embedded datasets, prepared for real (tiny ``limit``s): Bach chorales as
MIDI, the same chorales rendered to audio (offline codec, flatten layout), Shakespeare as text.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.artifacts.sidecar import read_sidecar
from shortcutlm.core.config_schema import ConfigError, from_dict
from shortcutlm.datasets.batches import train_batches
from shortcutlm.datasets.mixture import MixtureError, MixturePart, build_mixture
from shortcutlm.datasets.prepare import prepare
from shortcutlm.datasets.shards import read_shard
from shortcutlm.run.evaluation import evaluate_checkpoints
from shortcutlm.run.generation import PromptError, generate_from_checkpoint
from shortcutlm.models import SamplingSettings
from shortcutlm.artifacts.checkpoint import load_folder
from shortcutlm.run.recipe import Recipe, load_recipe
from shortcutlm.tokenizers import load_tokenizer
from shortcutlm.run.training import train

pytestmark = pytest.mark.slow  # each test needs the three prepared parts (about a minute once)

BLOCK = 64


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("joint_parts")
    cache = str(root / "cache")
    prepare({"name": "bach_chorales", "limit": 8, "cache": cache}, {"domain": "midi"}, root / "midi",
            workers=1, progress=False)
    prepare({"name": "chorales_audio", "limit": 6, "cache": cache},
            {"domain": "acoustic", "bandwidth": 1.5, "layout": "flatten", "weights": "mel_kmeans", "kmeans_iters": 3},
            root / "audio", workers=1, progress=False)
    prepare({"name": "shakespeare", "limit": 3}, {"domain": "text", "vocab_size": 400}, root / "text",
            workers=1, progress=False)
    return {"midi": root / "midi", "acoustic": root / "audio", "text": root / "text"}


def joint_recipe(folders: dict[str, Path], max_steps: int = 4, **mixture) -> Recipe:
    data = {"name": "joint", "mixture": {"parts": {name: {"data": str(f)} for name, f in folders.items()},
                                         **({"temperature": 0.5} if not mixture else mixture)},
            "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": BLOCK},
            "variants": {"baseline": {}},
            "train": {"max_steps": max_steps, "batch_size": 4, "warmup_steps": 1, "val_every": 2, "val_batches": 1,
                      "log_every": 1, "lr": 3e-3, "min_lr": 3e-4, "accelerator": "cpu"}}
    from shortcutlm.run.recipe import check_mixture_recipe

    recipe = from_dict(Recipe, data)
    check_mixture_recipe(recipe)
    return recipe


@pytest.fixture(scope="module")
def joint_run(parts, tmp_path_factory) -> tuple[Path, Path]:
    """A joint checkpoint trained on the three parts: ``(mixture folder, checkpoint folder)``."""
    root = tmp_path_factory.mktemp("joint_run")
    ckpt = train(joint_recipe(parts), "baseline", root / "mix", root / "ckpt", progress=False)
    return root / "mix", ckpt


# ------------------------------------------------------------------------------ the mixed loader

def test_the_mixed_loader_is_deterministic_opens_documents_with_markers_and_resumes_exactly(parts, tmp_path):
    mix = build_mixture([MixturePart(f) for f in parts.values()], tmp_path / "mix", temperature=0.5)
    tok = load_tokenizer(mix / "tokenizer")
    first = list(zip(range(12), train_batches(mix, BLOCK, 4, seed=3)))
    again = list(zip(range(12), train_batches(mix, BLOCK, 4, seed=3)))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again, strict=True))
    other = next(iter(train_batches(mix, BLOCK, 4, seed=4)))
    assert not torch.equal(first[0][1], other)

    # Resume after 7 batches: exactly the batches the uninterrupted loader gave next.
    loader = train_batches(mix, BLOCK, 4, seed=3)
    stream = iter(loader)
    for _ in range(7):
        next(stream)
    resumed = train_batches(mix, BLOCK, 4, seed=3, state=loader.state_dict())
    assert loader.state_dict()["batches"] == 7
    assert all(torch.equal(a, b) for a, b in zip([next(stream) for _ in range(5)],
                                                 [b for _, b in zip(range(5), resumed)], strict=True))
    with pytest.raises(ValueError, match="saved with seed=3"):
        train_batches(mix, BLOCK, 4, seed=5, state=loader.state_dict())

    # Every id after a marker, up to the next EOS, is that marker's domain's.
    by_marker = {tok.markers[d]: tok.part_range(d) for d in tok.domains}
    seen = set()
    for _, batch in first:
        for row in batch.numpy():
            current = None
            for value in row.tolist():
                if value in by_marker:
                    current = by_marker[value]
                    seen.add(value)
                elif value == tok.eos_id:
                    current = None
                elif current is not None:
                    assert current[0] <= value < current[1]
    # The documents the stream is made of: each is a marker, its domain's ids, the joint EOS.
    for j in range(40):
        doc = loader.plan.document(0, j)
        low, high = by_marker[int(doc[0])]
        assert doc[-1] == tok.eos_id and ((doc[1:-1] >= low) & (doc[1:-1] < high)).all()
        seen.add(int(doc[0]))
    assert seen == set(by_marker)

    # The stream's tokens follow the shares the temperature gave (p ∝ train tokens ** 0.5), whatever
    # the parts' document lengths (a play is a hundred times a chorale).
    manifest = ShardManifest.read(mix).raw["mixture"]["parts"]
    tokens = np.array([p["train_tokens"] for p in manifest], dtype=float)
    assert [p["probability"] for p in manifest] == pytest.approx((tokens ** 0.5 / (tokens ** 0.5).sum()).tolist())
    plan = loader.plan
    plan.locate(0, 40_000_000)  # draws enough documents for the shares to show
    state = plan._slot(0)
    lengths = np.diff(np.concatenate([[0], state["cum"]]))
    shares = np.bincount(state["choice"], weights=lengths, minlength=len(manifest)) / lengths.sum()
    assert shares == pytest.approx([p["probability"] for p in manifest], abs=0.03)


def test_ranks_read_disjoint_documents(parts, tmp_path):
    mix = build_mixture([MixturePart(parts["midi"]), MixturePart(parts["acoustic"])], tmp_path / "mix",
                        temperature=1.0)
    ranks = [train_batches(mix, BLOCK, 2, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for part in range(2):
        mine = [set(zip(*(a.tolist() for a in loader.plan.plans[part].order(0, r)))) for r, loader in enumerate(ranks)]
        split = ranks[0].plan.plans[part].data
        assert not mine[0] & mine[1] and len(mine[0] | mine[1]) == split.n_docs
    assert not torch.equal(next(iter(ranks[0])), next(iter(ranks[1])))
    # DataLoader workers read slots of their own and resume where they were, as the one-domain loader does.
    loader = train_batches(mix, BLOCK, 2, seed=1, num_workers=2)
    stream = iter(loader)
    for _ in range(5):
        next(stream)
    expected = [next(stream) for _ in range(4)]
    del stream
    resumed = train_batches(mix, BLOCK, 2, seed=1, num_workers=2, state={"batches": 5})
    assert all(torch.equal(a, b) for a, b in zip(expected, [b for _, b in zip(range(4), resumed)], strict=True))
    # A part with fewer train documents than there are data slots cannot be split: one line.
    text_mix = build_mixture([MixturePart(parts["text"]), MixturePart(parts["midi"])], tmp_path / "mix2")
    small = f"mixture part {parts['text'].resolve()}: 1 train documents, fewer than the 2"
    with pytest.raises(ValueError, match=small):
        train_batches(text_mix, BLOCK, 2, seed=1, rank=0, world_size=2)


# ------------------------------------------------------------------------------ refusals

def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_folders_that_cannot_be_mixed_are_refused_in_one_line_naming_the_folder(parts, text8_shards, tmp_path):
    # The same domain twice with different tokenizers.
    with pytest.raises(MixtureError) as err:
        build_mixture([MixturePart(parts["text"]), MixturePart(text8_shards)], tmp_path / "a")
    assert str(text8_shards) in one_line(err) and "another tokenizer" in str(err.value)
    # The same domain twice with the same tokenizer is one vocabulary: allowed.
    build_mixture([MixturePart(parts["midi"]), MixturePart(parts["midi"])], tmp_path / "same")

    # A prepare that did not finish.
    unfinished = tmp_path / "unfinished"
    shutil.copytree(parts["midi"], unfinished)
    manifest = json.loads((unfinished / "manifest.json").read_text())
    manifest["complete"] = False
    (unfinished / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MixtureError) as err:
        build_mixture([MixturePart(parts["text"]), MixturePart(unfinished)], tmp_path / "b")
    assert str(unfinished) in one_line(err) and "did not finish" in str(err.value)

    # An empty train split.
    empty = tmp_path / "empty"
    shutil.copytree(parts["midi"], empty)
    manifest["complete"] = True
    manifest["splits"]["train"] = {"documents": 0, "tokens": 0, "shards": []}
    manifest["shards"] = [s for s in manifest["shards"] if s["split"] != "train"]
    (empty / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MixtureError) as err:
        build_mixture([MixturePart(empty)], tmp_path / "c")
    assert str(empty) in one_line(err) and "train split is empty" in str(err.value)

    # Weights that do not sum to something positive, or a negative one.
    with pytest.raises(MixtureError) as err:
        build_mixture([MixturePart(parts["text"], 0.0), MixturePart(parts["midi"], 0.0)], tmp_path / "d")
    assert str(parts["text"]) in one_line(err) and "do not sum to something positive" in str(err.value)
    with pytest.raises(MixtureError) as err:
        build_mixture([MixturePart(parts["text"], 1.0), MixturePart(parts["midi"], -1.0)], tmp_path / "e")
    assert str(parts["midi"]) in one_line(err)
    # A folder that holds something else is never written over.
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "notes.txt").write_text("mine")
    with pytest.raises(MixtureError, match="not empty and not a mixture folder"):
        build_mixture([MixturePart(parts["text"])], tmp_path / "f")
    # A recipe states weights or a temperature, not both.
    both = tmp_path / "both.yaml"
    weighted = {"a": {"data": str(parts["text"]), "weight": 1}}
    both.write_text(yaml.safe_dump({"name": "x", "mixture": {"temperature": 1.0, "parts": weighted}}))
    with pytest.raises(ConfigError, match="mixture.parts.a.weight: give weights or mixture.temperature, not both"):
        load_recipe(both)


# ------------------------------------------------------------------------------ the joint model

def _hand_loss(ckpt_folder: Path, mix: Path, part: Path, domain: str) -> tuple[float, int]:
    """A domain's test loss computed by hand: that domain's test documents alone, remapped and
    opened with their marker, packed as training packs them, through the same model."""
    ckpt = load_folder(ckpt_folder, torch.device("cpu"))
    tok = load_tokenizer(mix / "tokenizer")
    stream = [tok.eos_id]
    manifest = ShardManifest.read(part)
    for shard in manifest.split("test").shards:
        for _key, tokens, _meta in read_shard(part / shard):
            stream += [tok.markers[domain], *(np.asarray(tokens, dtype=np.int64) + tok.offsets[domain]).tolist(),
                       tok.eos_id]
    ids = torch.tensor(stream)
    nats, count = 0.0, 0
    model = ckpt.model.eval()
    with torch.no_grad():
        for start in range(0, len(stream) - 1, BLOCK):
            window = ids[start:start + BLOCK + 1]
            logits = model(window[None, :-1])
            targets = window[1:]
            losses = torch.nn.functional.cross_entropy(logits[0].double(), targets, reduction="none")
            keep = targets != tok.markers[domain]
            nats += float(losses[keep].sum())
            count += int(keep.sum())
    return nats / count, count


def test_each_domain_is_evaluated_on_its_own_test_split(joint_run, parts):
    mix, ckpt = joint_run
    results = evaluate_checkpoints([ckpt], split="test", batch_size=3, progress=False)
    records = {r.domain: r for r in results.checkpoints}
    assert set(records) == {"text", "midi", "acoustic"}
    for domain, record in records.items():
        loss, count = _hand_loss(ckpt, mix, parts[domain], domain)
        split = ShardManifest.read(parts[domain]).split("test")
        assert record.tokens == count == split.tokens + split.documents  # what a single-domain pass scores
        assert record.loss_nats == pytest.approx(loss, rel=1e-5)
        assert record.complete and record.documents == split.documents
    assert records["text"].bits_per_byte > 0 and records["midi"].bits_per_second > 0
    acoustic = records["acoustic"]
    assert acoustic.group_kind == "codebook" and set(acoustic.groups) >= {"codebook_0", "codebook_1"}
    assert records["acoustic"].tokenizer["layout"] == "flatten"
    assert records["midi"].group_kind == "family" and "Pitch" in records["midi"].groups


def test_joint_and_single_domain_checkpoints_line_up_by_domain(joint_run, parts, tmp_path):
    _, joint = joint_run
    single = from_dict(Recipe, {"name": "midi_only", "source": {"name": "bach_chorales"},
                                "tokenizer": {"domain": "midi"},
                                "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": BLOCK},
                                "variants": {"separate": {}},
                                "train": {"max_steps": 2, "batch_size": 4, "warmup_steps": 1, "val_every": 2,
                                          "val_batches": 1, "accelerator": "cpu", "lr": 3e-3, "min_lr": 3e-4}})
    separate = train(single, "separate", parts["midi"], tmp_path / "separate", progress=False)
    results = evaluate_checkpoints([joint, separate], split="test", batch_size=4, progress=False)
    rows = [(r.domain, r.name) for r in results.checkpoints]
    assert rows == [("acoustic", "baseline"), ("midi", "baseline"), ("midi", "separate"), ("text", "baseline")]
    midi = [r for r in results.checkpoints if r.domain == "midi"]
    assert midi[0].tokens == midi[1].tokens  # the same targets, so the losses compare


def test_one_checkpoint_samples_every_domain(joint_run, parts, tmp_path):
    mix, ckpt = joint_run
    import soundfile as sf
    import symusic

    prompts = {}
    for domain, folder in parts.items():
        part = load_tokenizer(folder / "tokenizer")
        shard = ShardManifest.read(folder).split("test").shards[0]
        _key, tokens, _meta = next(read_shard(folder / shard))
        prompts[domain] = part.decode(tokens[:24], tmp_path / f"prompt{part.artifact_suffix}")
    settings = SamplingSettings(temperature=1.0, top_k=20, seed=1)
    outputs = {}
    for domain, prompt in prompts.items():
        [path] = generate_from_checkpoint(ckpt, tmp_path / "out" / domain, prompt=prompt, max_new_tokens=12,
                                          settings=settings, render=False)
        sidecar = read_sidecar(path)
        assert sidecar.domain == domain and sidecar.tokens_generated == 12
        outputs[domain] = path
    assert outputs["text"].suffix == ".txt" and outputs["text"].read_text().startswith(
        prompts["text"].read_text()[:20])
    assert symusic.Score(str(outputs["midi"])).note_num() > 0
    assert outputs["acoustic"].suffix == ".wav" and sf.info(str(outputs["acoustic"])).duration > 0
    # No prompt: the domain's marker alone starts the sample.
    [path] = generate_from_checkpoint(ckpt, tmp_path / "free", domain="midi", max_new_tokens=16, settings=settings,
                                      render=False)
    assert path.suffix == ".mid" and read_sidecar(path).domain == "midi"


def test_a_prompt_of_a_domain_it_was_not_trained_on_is_one_line(parts, tmp_path):
    two = {"text": parts["text"], "midi": parts["midi"]}
    ckpt = train(joint_recipe(two, max_steps=1), "baseline", tmp_path / "mix", tmp_path / "ckpt", progress=False)
    wav = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(str(wav), np.zeros(2400, dtype=np.float32), 24000)
    with pytest.raises(PromptError) as err:
        generate_from_checkpoint(ckpt, tmp_path / "out", prompt=wav, max_new_tokens=4)
    assert "trained on text, midi only" in one_line(err) and str(wav) in str(err.value)
    with pytest.raises(PromptError, match="not on acoustic"):
        generate_from_checkpoint(ckpt, tmp_path / "out", domain="acoustic", max_new_tokens=4)


def test_the_recipe_writes_a_text_a_midi_and_an_audio_continuation_from_one_checkpoint(parts, tmp_path):
    from shortcutlm.stages import run_recipe

    recipe = joint_recipe(parts, max_steps=2)
    recipe.generate.prompt_tokens, recipe.generate.max_new_tokens, recipe.generate.seconds = 16, 16, 0.5
    layout = run_recipe(recipe, tmp_path / "run", progress=False)
    samples = {read_sidecar(p).domain: read_sidecar(p) for p in sorted(layout.samples("baseline").glob("*.json"))}
    assert set(samples) == {"text", "midi", "acoustic"}
    assert {s.checkpoint for s in samples.values()} == {str(layout.checkpoint("baseline"))}
    assert Path(str(samples["midi"].rendering)).is_file()  # the MIDI sample is heard through its rendering
    report = layout.report.read_text()
    listening = report[report.index("## Samples"):]
    for name in ("prompt-text-seed0.txt", "prompt-midi-seed0.mid", "prompt-acoustic-seed0.wav"):
        assert name in listening
    html = layout.report_html.read_text()
    assert "samples/baseline/prompt-acoustic-seed0.wav" in html and "samples/baseline/prompt-midi-seed0.wav" in html
    assert "Reading (midi)" in report and "Reading (text)" in report


def test_a_joint_run_stopped_and_resumed_ends_as_the_uninterrupted_one(parts, tmp_path):
    from tests.test_resume import assert_same_run

    recipe = joint_recipe(parts, max_steps=4)
    whole = train(recipe, "baseline", tmp_path / "mix", tmp_path / "whole", progress=False)
    split = train(recipe, "baseline", tmp_path / "mix", tmp_path / "split", progress=False, stop_after=2)
    assert json.loads((split / "hparams.json").read_text())["step"] == 2
    train(recipe, "baseline", tmp_path / "mix", split, progress=False)  # resumes weights, optimiser and mixed data
    assert_same_run(whole, split)
