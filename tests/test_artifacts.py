"""The artifact layer: typed accessors of a real checkpoint folder and shard manifest, durable
writes, and the rule that no other module names those files or renames temporary files itself."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import shortcutlm
from shortcutlm.artifacts import files
from shortcutlm.artifacts.files import ArtifactError
from shortcutlm.artifacts.ablation import (evaluation_cache_path, read_cache, read_run_error, read_run_record,
                                           write_cache, write_run_error, write_run_record)
from shortcutlm.artifacts.checkpoint import (DATA, HPARAMS, METRICS, MODEL_CONFIG, TRAINER_STATE, WEIGHTS,
                                             CheckpointData, CheckpointError, CheckpointFolder, ShardFolderError,
                                             load_folder, save_folder)
from shortcutlm.artifacts.manifest import (MANIFEST, ShardError, ShardManifest, read_manifest, read_manifest_or_none,
                                           write_manifest)
from shortcutlm.core.config_schema import from_dict
from shortcutlm.run.recipe import Recipe
from shortcutlm.tokenizers import FingerprintMismatch
from shortcutlm.run.training import train
from tests.conftest import tiny_recipe_dict

PACKAGE = Path(shortcutlm.__file__).parent

# ------------------------------------------------------------------------------ one owner of the names

# The files the artifact layer owns; no module outside shortcutlm/artifacts/ may spell them in code
# (docstrings may describe a layout; messages and help texts use the layer's constants).
OWNED_NAMES = ("model.safetensors", "model.pt", "hparams.json", "model_config.json", "data.json", "manifest.json",
               "last.ckpt", "metrics.csv", "recipe.yaml", "ablation.json", "error.json", "eval.json",
               "step_timing.json", "ablation_cache.json")

# Writes that rename a temporary file themselves, and why they are not artifacts.
OWN_WRITERS = {
    # Shards are streamed into a tar document by document (webdataset's TarWriter), fsynced and
    # renamed by ShardWriter.finish; the manifest that lists them is the artifact layer's.
    "shortcutlm/datasets/shards.py",
    # Renders the package's corpora (music21 writes the MIDI to a path) into a cache of inputs for
    # prepare, with a marker for a chorale that failed: inputs, not what a run produced.
    "shortcutlm/datasets/embedded.py",
    # Cuts the embedded chorales into windows (symusic writes a window's MIDI only to a path) and
    # renders each: a cache of pair inputs beside embedded.py's, not what a run produced.
    "shortcutlm/pairs/collect.py",
    # Writes /proc/self/clear_refs (a kernel control, not a file) to reset the peak RSS counter.
    "shortcutlm/bench/peer/memory.py",
    # The same kernel control, before the long-audio memory probe's step.
    "shortcutlm/bench/long_audio.py",
}


def package_modules() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
                  if "artifacts" not in p.relative_to(PACKAGE).parts)


def code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant of the module (f-string parts included) except docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def own_renames(tree: ast.AST) -> list[tuple[int, str]]:
    """Writes done by hand: ``tmp.replace(...)``/``.rename``, ``os.replace``, ``mkstemp``,
    ``Path.write_text``/``write_bytes`` and ``json.dump`` to a file."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, owner = node.func.attr, node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        if attr in ("replace", "rename") and (owner_name == "os" or re.search(r"tmp|temp|staging", owner_name)):
            found.append((node.lineno, f"{owner_name}.{attr}"))
        elif attr in ("mkstemp", "write_text", "write_bytes") or (owner_name == "json" and attr == "dump"):
            found.append((node.lineno, f"{owner_name}.{attr}"))
    return found


@pytest.mark.parametrize("module", package_modules())
def test_only_the_artifact_layer_names_its_files(module):
    tree = ast.parse((PACKAGE.parent / module).read_text(encoding="utf-8"))
    named = [f"line {line}: {name}" for line, text in code_strings(tree) for name in OWNED_NAMES if name in text]
    assert not named, f"{module} names artifact files itself ({'; '.join(named)}): use shortcutlm.artifacts"


@pytest.mark.parametrize("module", package_modules())
def test_every_artifact_writer_goes_through_the_layer(module):
    tree = ast.parse((PACKAGE.parent / module).read_text(encoding="utf-8"))
    writes = [f"line {line}: {what}" for line, what in own_renames(tree)]
    if module in OWN_WRITERS:
        assert writes, f"{module} no longer writes files itself: drop it from OWN_WRITERS"
        return
    assert not writes, (f"{module} writes files by hand ({'; '.join(writes)}): use shortcutlm.artifacts.files "
                        "(or, for something that is not an artifact, add it to OWN_WRITERS saying why)")


def test_the_scan_sees_what_it_looks_for():
    tree = ast.parse('"""model.pt in a docstring is fine."""\n'
                     'x = out / "hparams.json"\ny = f"{out}/metrics.csv"\n'
                     'tmp.replace(path)\nos.replace(a, b)\npath.write_text("x")\n')
    assert [text for _, text in code_strings(tree)] == ["hparams.json", "/metrics.csv", "x"]
    assert [what for _, what in own_renames(tree)] == ["tmp.replace", "os.replace", "path.write_text"]


# ------------------------------------------------------------------------------ durable writes

def test_durable_write_syncs_file_and_folder(tmp_path, monkeypatch):
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    files.write_json(tmp_path / "a.json", {"x": float("nan")})
    assert synced == []  # not durable: no fsync
    files.write_json(tmp_path / "b.json", {"x": 1}, durable=True)
    assert len(synced) == 2  # the data, then the folder entry of the rename
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None}
    synced.clear()
    files.write_with(tmp_path / "c.pt", lambda fh: torch.save({"w": torch.ones(2)}, fh), durable=True)
    assert len(synced) == 2 and torch.load(tmp_path / "c.pt", weights_only=True)["w"].sum() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.pt"]  # no temporary left


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = files.write_text(tmp_path / "keep.txt", "old")

    def fail(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    for shared in (False, True):
        with pytest.raises(RuntimeError):
            files.write_with(target, fail, shared=shared)
        assert target.read_text() == "old"
        assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_shared_writers_use_their_own_temporary_files(tmp_path):
    target = tmp_path / "cache.json"
    seen: list[list[str]] = []

    def inner(fh):  # a second writer starts while the first is half-way
        fh.write(b"{}")
        files.write_with(target, lambda fh2: (seen.append(sorted(p.name for p in tmp_path.iterdir())),
                                              fh2.write(b"[]")), shared=True)

    files.write_with(target, inner, shared=True)
    temporaries = [n for n in seen[0] if n.endswith(".tmp")]
    assert len(temporaries) == 2 and all(n.startswith("cache.json.") for n in temporaries)
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["cache.json"]


# ------------------------------------------------------------------------------ a real checkpoint

@pytest.fixture(scope="module")
def run(tmp_path_factory, text8_shards) -> Path:
    """A finished 3-step run of the tiny baseline on text8."""
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, max_steps=3, val_every=3)
    data["variants"] = {"baseline": {}}
    out = tmp_path_factory.mktemp("artifacts") / "run"
    with pytest.MonkeyPatch.context() as env, torch.random.fork_rng():
        env.setenv("SHORTCUTLM_CACHE", str(out.parent / "cache"))
        train(from_dict(Recipe, data), "baseline", text8_shards, out, progress=False)
    return out


def test_checkpoint_folder_accessors(run, text8_shards):
    folder = CheckpointFolder(run)
    assert folder.has_weights and folder.has_trainer_state and folder.has_metrics and folder.has_model_config
    assert folder.weights_path == run / WEIGHTS and folder.trainer_state_path == run / TRAINER_STATE
    hparams = folder.hparams()
    assert hparams.step == folder.step == 3 and hparams.finished
    assert hparams.parameters == load_folder(run).model.num_params() and hparams.world_size == 1
    assert hparams.tokens_seen == (3 * hparams.train["batch_size"] * hparams.train["accumulate"]
                                   * folder.gpt_config().block_size)
    assert folder.train_settings()["max_steps"] == 3
    assert folder.is_finished(3) and not folder.is_finished(4)
    assert folder.model_config()["n_layer"] == 2 and folder.gpt_config().n_embd == 32
    assert folder.recipe()["variant"] == "baseline"
    data = folder.data()
    manifest = ShardManifest.read(text8_shards)
    assert data.fingerprint == manifest.fingerprint and data.domain == "text"
    assert Path(data.shard_dir) == text8_shards.resolve() and data.vocab_size == manifest.vocab_size
    assert data.splits["train"] == manifest.split("train").sizes() and "shards" not in data.splits["train"]
    rows = folder.metrics_rows()
    assert sorted({float(r["opt_step"]) for r in rows if r.get("train/loss")}) == [0.0, 1.0, 2.0]
    assert folder.sitting_logs() and folder.run_traces()
    stamp = folder.weights_stamp()
    assert stamp["step"] == 3 and stamp["size"] == (run / WEIGHTS).stat().st_size
    assert folder.shard_folder() == text8_shards.resolve()
    assert folder.shard_folder(text8_shards) == text8_shards
    ck = load_folder(run)
    assert ck.files == folder and ck.trained_on == data and ck.shard_folder() == text8_shards.resolve()


def test_training_record_round_trips_and_names_a_wrong_field(run, tmp_path):
    """hparams.json is the TrainingRecord written, key for key (sorted on disk); an older file lacking fields reads with
    their defaults; a field of the wrong type is one line naming the file and the field."""
    import json

    from shortcutlm.artifacts.hparams import TrainingRecord

    copy = CheckpointFolder(shutil.copytree(run, tmp_path / "copy"))
    written = json.loads(copy.hparams_path.read_text())
    assert set(written) == {"train", "step", "finished", "parameters", "flops_per_token", "peak_flops",
                            "world_size", "tokens_seen"}
    assert copy.hparams().to_dict() == written
    copy.hparams_path.write_text(json.dumps({"finished": True, "step": 3}))  # an early layout
    assert copy.hparams() == TrainingRecord(step=3, finished=True) and copy.is_finished(3)
    copy.hparams_path.write_text(json.dumps({**written, "step": "three"}))
    with pytest.raises(CheckpointError, match="hparams.json: field 'step' should be an integer or null") as err:
        copy.hparams()
    assert "\n" not in str(err.value) and copy.step is None
    copy.hparams_path.write_text(json.dumps({**written, "schema": 2}))  # from a newer shortcutlm
    with pytest.raises(CheckpointError, match="hparams.json: field 'schema' is 2, newer than this version"):
        copy.hparams()


def test_missing_and_broken_checkpoint_files_are_one_line(run, tmp_path):
    empty = CheckpointFolder(tmp_path / "nothing")
    assert empty.step is None and not empty.is_finished(1) and empty.metrics_rows() == []
    assert empty.hparams_or_none() is None and empty.recipe() == {}
    with pytest.raises(CheckpointError, match=f"not a checkpoint folder \\({HPARAMS} is missing\\)"):
        empty.hparams()
    copy = CheckpointFolder(shutil.copytree(run, tmp_path / "copy"))
    copy.hparams_path.write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        copy.hparams()
    assert str(err.value).startswith(f"{copy.hparams_path}: ") and "\n" not in str(err.value)
    assert copy.step is None and not copy.is_finished(1)  # an unreadable record is not a finished run
    copy.model_config_path.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=f"{MODEL_CONFIG}: not a model config"):
        copy.model_config()


def test_shard_folder_is_found_and_checked(run, tmp_path, text8_shards):
    copy = CheckpointFolder(shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns("logs", "trainer")))
    data = copy.data()
    # A relative shard_dir is found beside the checkpoint folder when the working directory lacks it.
    shutil.copytree(text8_shards, copy.path / "shards")
    files.write_json(copy.data_path, {**data.to_dict(), "shard_dir": "shards"})
    assert copy.shard_folder() == copy.path / "shards"
    files.write_json(copy.data_path, {**data.to_dict(), "shard_dir": str(tmp_path / "gone")})
    with pytest.raises(ShardFolderError, match=f"its {DATA} names shard folder .*gone, which does not exist"):
        copy.shard_folder()
    with pytest.raises(ShardFolderError, match="shard folder .*absent does not exist"):
        copy.shard_folder(tmp_path / "absent")
    # Shards of another tokenizer are refused, naming both fingerprints and the manifest.
    other = Path(shutil.copytree(text8_shards, tmp_path / "other"))
    raw = read_manifest(other)
    raw["tokenizer"]["fingerprint"] = "f" * 16
    write_manifest(other, raw)
    with pytest.raises(FingerprintMismatch) as err:
        copy.shard_folder(other)
    assert data.fingerprint in str(err.value) and "f" * 16 in str(err.value) and MANIFEST in str(err.value)
    assert copy.shard_folder(other, check=False) == other


def test_save_folder_writes_every_file_durably(run, tmp_path, monkeypatch):
    ck = load_folder(run)
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    out = save_folder(tmp_path / "saved", ck.model, ck.recipe, ck.hparams, ck.files.tokenizer_dir,
                      CheckpointData.from_dict(ck.data))
    assert len(synced) >= 10  # five files, each with its data and its folder entry
    again = load_folder(out)
    assert again.hparams == ck.hparams and again.data == ck.data and again.recipe == ck.recipe
    for key, value in ck.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key
    folder = CheckpointFolder(out)
    folder.write_metrics(["opt_step", "train/loss"], [{"opt_step": "0", "train/loss": "1.5", "extra": "x"}])
    assert folder.metrics_rows() == [{"opt_step": "0", "train/loss": "1.5"}]
    assert folder.metrics_path.name == METRICS


# ------------------------------------------------------------------------------ the shard manifest

def test_manifest_accessors(text8_shards):
    manifest = ShardManifest.read(text8_shards)
    raw = read_manifest(text8_shards)
    assert manifest.path == text8_shards / MANIFEST and manifest.complete
    assert manifest.fingerprint == raw["tokenizer"]["fingerprint"] and manifest.domain == "text"
    assert manifest.vocab_size == raw["tokenizer"]["vocab_size"] == 300
    assert manifest.special_ids == raw["tokenizer"]["special_ids"]
    assert manifest.ignored_ids == sorted({v for k, v in manifest.special_ids.items() if k in ("pad", "empty")})
    assert manifest.tokenizer_dir.is_dir()
    assert list(manifest.splits) == list(raw["splits"])
    train = manifest.split("train")
    assert (train.documents, train.tokens, list(train.shards)) == (
        raw["splits"]["train"]["documents"], raw["splits"]["train"]["tokens"], raw["splits"]["train"]["shards"])
    assert train.bytes and train.seconds is None and manifest.train_tokens_per_second is None  # text has no seconds
    assert manifest.split("nope").tokens == 0 and not manifest.has_split("nope") and manifest.has_split("train")
    assert manifest.split_sizes()["train"] == {k: v for k, v in raw["splits"]["train"].items() if k != "shards"}


def test_shard_records_round_trip_and_name_a_wrong_field(tmp_path, text8_shards):
    """Every shard entry prepare wrote reads as a typed record that writes back the same dictionary;
    a wrong field is refused in one line naming the file, the entry and the field."""
    raw = read_manifest(text8_shards)
    manifest = ShardManifest.read(text8_shards)
    assert [r.to_dict() for r in manifest.shards] == raw["shards"]
    train = manifest.shards_of("train")
    assert [r.name for r in train] == sorted(raw["splits"]["train"]["shards"])
    assert sum(r.documents for r in train) == manifest.split("train").documents
    assert all(len(r.doc_ids) == len(r.doc_tokens) == r.documents and sum(r.doc_tokens) == r.tokens for r in train)
    for change, field_name in [(lambda e: e.update(tokens="many"), "tokens"),
                               (lambda e: e.update(sha256=None), "sha256"),
                               (lambda e: e.pop("split"), "split"),
                               (lambda e: e.update(doc_tokens=e["doc_tokens"][:-1] or [1, 2]), "doc_tokens")]:
        broken = read_manifest(text8_shards)
        change(broken["shards"][1])
        write_manifest(tmp_path, broken)
        with pytest.raises(ArtifactError) as err:
            ShardManifest.read(tmp_path).shards_of("train")
        message = str(err.value)
        assert "\n" not in message and str(tmp_path / MANIFEST) in message and "shards[1]" in message
        assert field_name in message


def test_tokens_per_second_of_timed_splits(tmp_path, text8_shards):
    raw = read_manifest(text8_shards)
    raw["splits"]["train"]["seconds"] = 4.0
    write_manifest(tmp_path, raw)
    manifest = ShardManifest.read(tmp_path)
    assert manifest.train_tokens_per_second == raw["splits"]["train"]["tokens"] / 4.0
    assert CheckpointData.from_manifest(manifest).tokens_per_second() == manifest.train_tokens_per_second


def test_unusable_manifests(tmp_path):
    with pytest.raises(FileNotFoundError, match="shortcutlm prepare"):
        read_manifest(tmp_path)
    assert read_manifest_or_none(tmp_path) is None and ShardManifest.read_or_none(tmp_path) is None
    (tmp_path / MANIFEST).write_text("{half")
    with pytest.raises(ShardError, match="not valid JSON"):
        read_manifest(tmp_path)
    assert read_manifest_or_none(tmp_path) is None
    write_manifest(tmp_path, {"format": "shortcutlm-shards", "complete": False, "splits": {}})
    with pytest.raises(ShardError, match="prepare did not finish"):
        read_manifest(tmp_path)
    assert read_manifest_or_none(tmp_path)["complete"] is False


# ------------------------------------------------------------------------------ ablation records

def test_ablation_records_and_caches(tmp_path):
    write_run_record(tmp_path, 12.5, {"cpu": "x"}, "2026-01-01T00:00:00", 6, 1)
    assert read_run_record(tmp_path) == {"wall_s": 12.5, "machine": {"cpu": "x"}, "trained": "2026-01-01T00:00:00",
                                         "steps": 6, "seed": 1}
    assert read_run_record(tmp_path / "none") == {} and read_run_error(tmp_path) is None
    write_run_error(tmp_path, "RuntimeError: boom", "Traceback ...", "now")
    assert read_run_error(tmp_path) == "RuntimeError: boom"
    path = evaluation_cache_path(tmp_path, None, "test")
    assert path == evaluation_cache_path(tmp_path, "test", "test") != evaluation_cache_path(tmp_path, "valid", "test")
    key = {"weights": (1, 2.0), "nan": float("nan")}
    write_cache(path, key, "row", {"loss": 1.0})
    assert read_cache(path, key, "row") == {"loss": 1.0}  # the key survives the round trip through JSON
    assert read_cache(path, {**key, "weights": (1, 3.0)}, "row") is None
