"""Paired documents end to end: pairs from the embedded chorales and from a LibriSpeech layout written
here, a tiny paired model trained on targets only, the source's worth computed from the same target
both ways, each ``--task`` generated, and each task scored beside chance and its ceiling."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import symusic
import torch

pytest.importorskip("mir_eval")
pytest.importorskip("jiwer")

from shortcutlm.artifacts.checkpoint import load_folder  # noqa: E402
from shortcutlm.artifacts.manifest import ShardManifest  # noqa: E402
from shortcutlm.artifacts.sidecar import read_sidecar  # noqa: E402
from shortcutlm.core.config_schema import from_dict  # noqa: E402
from shortcutlm.datasets.shards import read_shard  # noqa: E402
from shortcutlm.run.generation import PromptError  # noqa: E402
from shortcutlm.models import SamplingSettings  # noqa: E402
from shortcutlm.models.lightning import LitGPT  # noqa: E402
from shortcutlm.pairs.generate import generate_task  # noqa: E402
from shortcutlm.pairs.prepare import prepare_pairs  # noqa: E402
from shortcutlm.pairs.records import BAD_PAIR, UNPAIRED  # noqa: E402
from shortcutlm.pairs.scores import score_tasks  # noqa: E402
from shortcutlm.pairs.sequences import target_spans  # noqa: E402
from shortcutlm.pairs.tasks import PairError  # noqa: E402
from shortcutlm.pairs.worth import source_worth  # noqa: E402
from shortcutlm.run.recipe import Recipe  # noqa: E402
from shortcutlm.tokenizers import load_tokenizer  # noqa: E402
from shortcutlm.run.training import train  # noqa: E402

from tests.cli_lines import one_line  # noqa: E402
from tests.datasets.published import make_librispeech, write_flac  # noqa: E402

pytestmark = pytest.mark.slow  # each module fixture prepares real pairs (a minute at most)

MIDI = {"vocab_size": 600, "use_tempos": True, "num_tempos": 211, "tempo_range": [40, 250]}
AUDIO = {"bandwidth": 1.5, "layout": "flatten", "weights": "mel_kmeans", "kmeans_iters": 3}
TEXT = {"vocab_size": 300}  # byte fallback: every transcript comes back whole


def paired_recipe(block: int, steps: int = 4) -> Recipe:
    return from_dict(Recipe, {
        "name": "pairs", "source": {"name": "pairs"}, "tokenizer": {"domain": "joint"},
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": block}, "variants": {"baseline": {}},
        "train": {"max_steps": steps, "batch_size": 2, "warmup_steps": 1, "val_every": steps, "val_batches": 1,
                  "log_every": 1, "lr": 3e-3, "min_lr": 3e-4, "accelerator": "cpu", "target_only": True}})


@pytest.fixture(scope="module")
def chorales(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chorale_pairs")
    prepare_pairs({"name": "chorales", "limit": 5, "segments": 3, "workers": 1, "cache": str(root / "cache")},
                  {"midi": MIDI, "acoustic": AUDIO}, root / "pairs", workers=0, progress=False)
    return root / "pairs"


@pytest.fixture(scope="module")
def chorale_model(chorales, tmp_path_factory) -> Path:
    return train(paired_recipe(512), "baseline", chorales, tmp_path_factory.mktemp("chorale_model") / "ckpt",
                 progress=False)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Path, Path]:
    """A LibriSpeech layout as published (three subsets, transcript lines and FLACs) with the faults a
    real copy can hold, prepared into pairs: ``(LibriSpeech root, pairs folder)``."""
    top = tmp_path_factory.mktemp("libri")
    root = make_librispeech(top, {"train-clean-100": [("19", "198", 6), ("26", "495", 6)],
                                  "dev-clean": [("84", "121", 2)], "test-clean": [("61", "70968", 3)]}, seconds=3.0)
    chapter = root / "train-clean-100" / "19" / "198"
    write_flac(chapter / "19-198-0777.flac", 2.0, seed=99)  # audio whose line is missing: unpaired
    rushed = chapter / "19-198-0006.flac"  # the chapter's line without audio gets a tenth of a second: absurd
    write_flac(rushed, 0.1, seed=98)
    lines = (chapter / "19-198.trans.txt").read_text().replace("THIS LINE HAS NO AUDIO FILE",
                                                              "THIS LINE IS FAR TOO LONG FOR A TENTH OF A SECOND")
    (chapter / "19-198.trans.txt").write_text(lines)
    out = top / "pairs"
    prepare_pairs({"name": "librispeech", "path": str(root)}, {"text": TEXT, "acoustic": AUDIO}, out, workers=0,
                  progress=False)
    return root, out


@pytest.fixture(scope="module")
def speech_model(speech, tmp_path_factory) -> Path:
    return train(paired_recipe(1024, steps=2), "baseline", speech[1], tmp_path_factory.mktemp("speech") / "ckpt",
                 progress=False)


def documents(folder: Path) -> dict[str, list[tuple[str, np.ndarray, dict]]]:
    manifest = ShardManifest.read(folder)
    return {split: [doc for shard in info.shards for doc in read_shard(folder / shard)]
            for split, info in manifest.splits.items()}


# ------------------------------------------------------------------------------ pairs

def test_chorale_pairs_keep_their_splits_and_hold_both_directions(chorales):
    manifest = ShardManifest.read(chorales)
    assert manifest.raw["pairs"]["tasks"] == ["synthesize", "transcribe"]
    tok = load_tokenizer(chorales / "tokenizer")
    parts = {name: {key: ids for split in documents(chorales / "parts" / name).values() for key, ids, _ in split}
             for name in ("midi", "acoustic")}
    split_of: dict[str, set[str]] = {}
    for split, docs in documents(chorales).items():
        tasks_of_pair: dict[str, set[str]] = {}
        for _key, ids, meta in docs:
            split_of.setdefault(meta["pair_id"], set()).add(split)
            assert meta["source_file"].startswith("halves/") and f"/{split}/" in meta["source_file"]
            assert f"/{split}/" in meta["target_file"]
            if meta.get("alone"):
                assert split == "train" and ids[0] == tok.special_ids[f"task_{meta['task']}"]
                continue
            tasks_of_pair.setdefault(meta["pair_id"], set()).add(meta["task"])
            # <source marker> source <task marker> target, each half the ids its part wrote for it
            src, tgt = ("midi", "acoustic") if meta["task"] == "synthesize" else ("acoustic", "midi")
            source = parts[src][f"{split}__{Path(meta['source_file']).name.replace('.', '_')}"]
            target = parts[tgt][f"{split}__{Path(meta['target_file']).name.replace('.', '_')}"]
            expected = np.concatenate([[tok.markers[src]], source + tok.offsets[src],
                                       [tok.special_ids[f"task_{meta['task']}"]], target + tok.offsets[tgt]])
            assert np.array_equal(ids, expected)
        assert all(t == {"synthesize", "transcribe"} for t in tasks_of_pair.values())
    assert all(len(s) == 1 for s in split_of.values())  # a pair never straddles splits
    # windows of one chorale share its split
    chorale_split: dict[str, set[str]] = {}
    for pair, splits in split_of.items():
        chorale_split.setdefault(pair.rsplit("-s", 1)[0], set()).update(splits)
    assert all(len(s) == 1 for s in chorale_split.values())
    assert set(manifest.splits) == {"train", "valid", "test"}


def test_librispeech_pairs_list_leftovers_and_skip_bad_pairs(speech):
    root, folder = speech
    with pytest.raises(PairError, match="holds the pairs of another source"):  # never mixed with other pairs
        prepare_pairs({"name": "librispeech", "path": str(root), "limit": 1}, {"text": TEXT, "acoustic": AUDIO},
                      folder, workers=0, progress=False)
    manifest = ShardManifest.read(folder)
    pairs = manifest.raw["pairs"]
    assert pairs["tasks"] == ["speak", "transcribe-speech"]
    left = {(x["kind"], x["pair_id"]): x["reason"] for x in pairs["leftovers"]}
    assert left[(UNPAIRED, "19-198-0777")] == "no transcript line for this utterance"
    assert "characters in 0.10 s of audio" in left[(BAD_PAIR, "19-198-0006")]
    for missing in ("26-495-0006", "84-121-0002", "61-70968-0003"):
        assert left[(BAD_PAIR, missing)] == "listed in the transcript but the flac is missing"
    assert len(pairs["leftovers"]) == 5
    assert pairs["pairs_per_split"] == {"train": 12, "valid": 2, "test": 3}  # the subsets' splits
    for split, docs in documents(folder).items():
        for _key, _ids, meta in docs:
            assert f"/{split}/" in meta["source_file"] and f"/{split}/" in meta["target_file"]
    # the text half of a pair is its transcript line, as published
    text = next(d for d in documents(folder)["test"] if d[2]["task"] == "speak")[2]["source_file"]
    line = (folder / text).read_text()
    trans = (root / "test-clean" / "61" / "70968" / "61-70968.trans.txt").read_text()
    assert f" {line}\n" in trans


# ------------------------------------------------------------------------------ training and worth

def test_training_on_targets_only_reads_the_source_and_predicts_the_target(chorales, chorale_model):
    manifest = ShardManifest.read(chorales)
    ckpt = load_folder(chorale_model, torch.device("cpu"))
    assert json.loads((chorale_model / "hparams.json").read_text())["train"]["target_only"] is True
    _key, ids, meta = documents(chorales)["test"][0]
    batch = torch.as_tensor(np.concatenate([[manifest.special_ids["eos"]], ids, [manifest.special_ids["eos"]]]))[None]
    lit = LitGPT(ckpt.model.config, {}, manifest.ignored_ids, None, target_spans(manifest.special_ids))
    lit.model.load_state_dict(ckpt.model.state_dict())
    _sums, counts = lit._losses(batch.long())
    assert int(counts.sum()) == meta["target_tokens"] + 1  # the target and its EOS; never the source
    everything = LitGPT(ckpt.model.config, {}, manifest.ignored_ids, None)
    assert int(everything._losses(batch.long())[1].sum()) == len(ids) + 1


def test_the_source_worth_is_computed_from_the_same_target_with_and_without_its_source(chorales, chorale_model):
    ckpt = load_folder(chorale_model, torch.device("cpu"))
    tok = ckpt.tokenizer
    eos = tok.eos_id
    results = source_worth(ckpt)
    hand = {name: [0, 0.0, 0.0] for name in results}
    model = ckpt.model.eval()
    for _key, ids, meta in documents(chorales)["test"]:
        marker = tok.special_ids[f"task_{meta['task']}"]
        at = int(np.flatnonzero(ids == marker)[0])
        target = ids[at + 1:]
        assert len(target) == meta["target_tokens"]
        with_source = torch.as_tensor(np.concatenate([[eos], ids, [eos]]))
        without = torch.as_tensor(np.concatenate([[eos], ids[at:], [eos]]))
        scored = []
        for seq, first in ((with_source, at + 2), (without, 2)):
            with torch.no_grad():
                logits = model(seq[None, :-1])[0].double()
            nats = torch.nn.functional.cross_entropy(logits, seq[1:], reduction="none")[first - 1:]
            scored.append((seq[first:].tolist(), float(nats.sum())))
        assert scored[0][0] == scored[1][0] == [*target.tolist(), eos]  # the same targets both ways
        entry = hand[meta["task"]]
        entry[0] += len(scored[0][0])
        entry[1] += scored[0][1]
        entry[2] += scored[1][1]
    for name, result in results.items():
        tokens, with_nats, without_nats = hand[name]
        assert result.target_tokens == tokens and result.documents > 0 and not result.skipped
        assert result.nats_with == pytest.approx(with_nats, rel=1e-6)
        assert result.nats_without == pytest.approx(without_nats, rel=1e-6)
        assert result.worth == pytest.approx((without_nats - with_nats) / tokens, rel=1e-6)
    with pytest.raises(PairError, match="not trained on pairs"):
        source_worth(load_folder(chorale_model, torch.device("cpu")).__class__(
            ckpt.folder, ckpt.model, ckpt.tokenizer.parts["midi"], ckpt.recipe, ckpt.hparams, ckpt.data))


def test_evaluate_reports_the_source_worth_of_a_paired_checkpoint(chorale_model, tmp_path, capsys):
    from shortcutlm.cli import main as cli

    assert cli(["evaluate", str(chorale_model), "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "### ckpt: what the source is worth" in out and "| synthesize |" in out and "| transcribe |" in out
    worth = json.loads((tmp_path / "eval" / "pairs.json").read_text())["ckpt"]["worth"]
    assert worth["transcribe"]["target_tokens"] == source_worth(chorale_model)["transcribe"].target_tokens


# ------------------------------------------------------------------------------ generation and scores

def _source(folder: Path, task: str) -> Path:
    meta = next(d[2] for d in documents(folder)["test"] if d[2]["task"] == task)
    return folder / meta["source_file"]


def test_each_task_writes_its_kind_of_file_with_a_sidecar_naming_task_and_source(chorales, chorale_model, speech,
                                                                                  speech_model, tmp_path, capsys):
    settings = SamplingSettings(temperature=1.0, top_k=20, seed=3)
    score = _source(chorales, "synthesize")
    wav = generate_task(chorale_model, "synthesize", score, tmp_path, settings)
    assert wav.suffix == ".wav"
    assert sf.info(str(wav)).duration == pytest.approx(symusic.Score(str(score)).to("second").end(), abs=0.05)
    midi = generate_task(chorale_model, "transcribe", _source(chorales, "transcribe"), tmp_path, settings, render=False)
    assert midi.suffix == ".mid"
    symusic.Score(str(midi))  # a MIDI file symusic reads
    said = generate_task(speech_model, "speak", _source(speech[1], "speak"), tmp_path, settings)
    assert said.suffix == ".wav" and sf.info(str(said)).frames > 0
    text = generate_task(speech_model, "transcribe-speech", _source(speech[1], "transcribe-speech"), tmp_path,
                         settings)
    assert text.suffix == ".txt"
    for path, task in ((wav, "synthesize"), (midi, "transcribe"), (said, "speak"), (text, "transcribe-speech")):
        record = read_sidecar(path)
        assert record.tokenizer["task"] == task and record.prompt == record.tokenizer["task_source"]
    # Mistakes are one line: a task the checkpoint was not trained on, a prompt the task does not read.
    line = one_line(capsys, ["generate", str(chorale_model), "--task", "speak", "--prompt", str(score),
                             "--out", str(tmp_path / "x")])
    assert "was not trained on the task speak (its tasks: synthesize, transcribe)" in line
    line = one_line(capsys, ["generate", str(chorale_model), "--task", "transcribe", "--prompt", str(score),
                             "--out", str(tmp_path / "x")])
    assert f"prompt file {score}: the task transcribe reads acoustic" in line and "not a .mid file" in line
    with pytest.raises(PromptError, match="give it with --prompt"):  # --debug: the error itself
        from shortcutlm.cli import main
        main(["generate", str(chorale_model), "--task", "transcribe", "--out", str(tmp_path / "x"), "--debug"])
    # The CLI writes the target too.
    from shortcutlm.cli import main as cli
    assert cli(["generate", str(chorale_model), "--task", "synthesize", "--prompt", str(score), "--out",
                str(tmp_path / "cli"), "--seed", "1", "--quiet"]) == 0
    assert (tmp_path / "cli" / f"{score.stem}-synthesize-seed1.wav").is_file()


def test_each_task_is_scored_beside_chance_and_its_ceiling(chorale_model, speech_model, tmp_path):
    scores = score_tasks(chorale_model, tmp_path / "chorales", per_task=2)
    transcribe = scores["transcribe"].means()
    assert transcribe["ceiling"]["onset_f1"] == pytest.approx(1.0)  # REMI with fine tempos holds the notes
    assert 0.0 <= transcribe["chance"]["onset_f1"] < 1.0
    assert 0.0 <= transcribe.get("model", {"onset_f1": 0.0})["onset_f1"] <= 1.0
    synth = scores["synthesize"].means()
    assert synth["ceiling"]["log_mel_cosine"] > synth["chance"]["log_mel_cosine"]
    speech = score_tasks(speech_model, tmp_path / "speech", per_task=2)
    words = speech["transcribe-speech"].means()
    assert words["ceiling"] == {"wer": 0.0, "cer": 0.0}  # SentencePiece gives the transcript back whole
    assert words["chance"]["wer"] > 0
    assert set(speech["speak"].means()) >= {"chance", "ceiling"}


# ------------------------------------------------------------------------------ the recipe

def test_the_recipe_runs_end_to_end_and_reports_each_task(tmp_path, capsys):
    from shortcutlm.cli import main as cli
    from shortcutlm.run.layout import RunLayout

    argv = ["recipe", "recipes/chorales_pairs.yaml", "--preset", "tiny", "--out", str(tmp_path / "run"),
            "--no-progress", "--variant", "baseline"]
    for item in ("pairs.source.limit=4", "pairs.source.segments=2", "pairs.per_task=2",
                 "pairs.tokenizers.acoustic.kmeans_iters=2", "pairs.tokenizers.midi.vocab_size=600",
                 "train.max_steps=2", "train.val_every=2", "train.val_batches=1", "train.batch_size=2",
                 "evaluate.max_batches=2"):
        argv += ["--set", item]
    assert cli(argv) == 0
    layout = RunLayout(tmp_path / "run")
    results = json.loads((layout.root / "pairs.json").read_text())["baseline"]
    assert set(results["worth"]) == set(results["scores"]) == {"synthesize", "transcribe"}
    assert all(w["target_tokens"] > 0 for w in results["worth"].values())
    transcribe = results["scores"]["transcribe"]["means"]
    assert transcribe["ceiling"]["onset_f1"] == pytest.approx(1.0) and "chance" in transcribe
    tasks = {read_sidecar(p).tokenizer.get("task") for p in layout.samples("baseline").glob("*.json")}
    assert tasks == {"synthesize", "transcribe"}
    report = layout.report.read_text()
    pairs = report[report.index("## Pairs: source → target"):]
    for words in ("what the source is worth", "| note F1 (onset) |", "| log-mel cosine |", "| pair | source | "
                  "generated | reference |"):
        assert words in pairs
    assert_pairs_heard_and_seen(layout)
    # a second run keeps the prepared pairs; one with other tokenizer settings is refused in one line
    assert cli([*argv, "--stage", "prepare"]) == 0
    capsys.readouterr()
    line = one_line(capsys, [*argv, "--stage", "prepare", "--set", "pairs.tokenizers.midi.vocab_size=700"])
    assert "vocab_size" in line and str(tmp_path / "run") in line


def assert_pairs_heard_and_seen(layout) -> None:
    """The page shows each task's pairs side by side: source, generated target and reference, each a
    player and a picture of a file inside the run folder, with the pair's scores."""
    from html.parser import HTMLParser

    page = layout.report_html.read_text()
    assert 'id="pairs"' in page
    for task in ("synthesize", "transcribe"):
        assert f"baseline: {task}, heard and seen" in page

    class Media(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.sources: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag in ("audio", "img"):
                self.sources.append(dict(attrs)["src"])

    table = page[page.index("heard and seen"):]
    parser = Media()
    parser.feed(table)
    assert len([s for s in parser.sources if s.endswith(".wav")]) >= 2 * 2 * 3  # 2 tasks x 2 pairs x 3 roles
    assert any(s.endswith(".png") for s in parser.sources)
    for src in parser.sources:
        assert (layout.root / src).is_file() and (layout.root / src).resolve().is_relative_to(layout.root.resolve())
    assert "note F1 (onset): <strong>" in table and "(chance " in table


def test_the_librispeech_pairs_recipe_reads_the_published_layout_from_path(tmp_path, capsys):
    from shortcutlm.cli import main as cli
    from shortcutlm.run.layout import RunLayout

    make_librispeech(tmp_path / "data", {"train-clean-100": [("19", "198", 6)], "dev-clean": [("84", "121", 2)],
                                         "test-clean": [("61", "70968", 2)]}, seconds=3.0)
    argv = ["recipe", "recipes/librispeech_pairs.yaml", "--preset", "tiny", "--path", str(tmp_path / "data"),
            "--out", str(tmp_path / "run"), "--no-progress", "--variant", "baseline"]
    for item in ("pairs.per_task=1", "pairs.tokenizers.text.vocab_size=300", "pairs.tokenizers.acoustic.kmeans_iters=2",
                 "model.block_size=1024", "train.max_steps=2", "train.val_every=2", "train.val_batches=1",
                 "evaluate.max_batches=2"):
        argv += ["--set", item]
    assert cli(argv) == 0
    layout = RunLayout(tmp_path / "run")
    manifest = json.loads((layout.data / "manifest.json").read_text())
    assert manifest["pairs"]["pairs_per_split"] == {"train": 6, "valid": 2, "test": 2}
    assert sum(x["kind"] == BAD_PAIR for x in manifest["pairs"]["leftovers"]) == 3  # each chapter's line without audio
    results = json.loads((layout.root / "pairs.json").read_text())["baseline"]
    words = results["scores"]["transcribe-speech"]["means"]
    assert words["ceiling"] == {"wer": 0.0, "cer": 0.0} and words["chance"]["wer"] > 0
    assert "WER (lower is better)" in layout.report.read_text()
    capsys.readouterr()  # what the run printed
    line = one_line(capsys, ["recipe", "recipes/chorales_pairs.yaml", "--preset", "tiny", "--path", str(tmp_path),
                             "--out", str(tmp_path / "other")])
    assert "pair source 'chorales' reads no path" in line


def test_the_gpu_check_runs_the_paired_recipe_and_keeps_its_figures(tmp_path):
    """``bench gpu``'s pairs section (CUDA only in the check itself), here at its dry-run sizes on the CPU."""
    from shortcutlm.bench import gpu

    check = gpu.Check(tmp_path, dry_run=True, device="cpu", size=gpu.TINY)
    result = gpu.section_pairs(check)
    assert result["status"] == "ok", result["output_tail"]
    assert set(result["results"]["source_worth_nats_per_token"]) == {"synthesize", "transcribe"}
    assert result["results"]["scores"]["transcribe"]["ceiling"]["onset_f1"] == pytest.approx(1.0)
    assert "pairs" in {s.name for s in gpu.SECTIONS if s.needs_cuda}
