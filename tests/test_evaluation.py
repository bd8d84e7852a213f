"""evaluate: exact per-domain losses on real tiny shards, checked against hand computations."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from shortcutlm.artifacts.checkpoint import load_folder
from shortcutlm.cli import main as cli_main
from shortcutlm.datasets.loader import read_manifest
from shortcutlm.datasets.batches import eval_batches
from shortcutlm.artifacts.results import EvaluationResults
from shortcutlm.run.evaluation import EvaluationError, evaluate_checkpoint, evaluate_checkpoints, write_report
from shortcutlm.tokenizers import FingerprintMismatch

pytestmark = pytest.mark.usefixtures("one_thread")


def hand_loss(folder, split="test", batch_size=3):
    """Sum of cross-entropies over valid targets / their count, straight from the model and the loader."""
    ckpt = load_folder(folder)
    tok, model = ckpt.tokenizer, ckpt.model
    masked = [tok.pad_id] + ([tok.special_ids["empty"]] if tok.n_streams > 1 else [])
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in eval_batches(ckpt.data["shard_dir"], split, model.config.block_size, batch_size):
            logits = model(batch[..., :-1])
            targets = batch[..., 1:]
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), targets.reshape(-1), reduction="none")
            keep = ~torch.isin(targets.reshape(-1), torch.tensor(masked))
            total += float(ce[keep].sum())
            count += int(keep.sum())
    return total, count


def recombine(groups):
    tokens = sum(g.tokens for g in groups.values())
    return sum(g.loss_nats * g.tokens for g in groups.values() if g.tokens) / tokens, tokens


def test_text_loss_is_sum_over_count_and_bits_per_byte_uses_manifest_bytes(text_ckpt, text_data):
    result = evaluate_checkpoint(text_ckpt, progress=False)
    total, count = hand_loss(text_ckpt)
    split = read_manifest(text_data)["splits"]["test"]
    assert result.tokens == count == split["tokens"] + split["documents"]  # every token plus one EOS per document
    assert result.loss_nats == pytest.approx(total / count, rel=1e-6)
    assert result.loss_bits == pytest.approx(total / count / math.log(2), rel=1e-6)
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-6)
    assert result.bytes == split["bytes"]
    assert result.bits_per_byte == pytest.approx(total / math.log(2) / split["bytes"], rel=1e-6)
    assert result.eos.tokens == split["documents"]
    eos_nats = result.eos.loss_nats * result.eos.tokens
    assert result.bits_per_byte_excl_eos == pytest.approx((total - eos_nats) / math.log(2) / split["bytes"], rel=1e-6)
    assert result.complete and not result.approximate
    assert result.shard_dir == str(text_data)  # the checkpoint's own shards by default


def test_batch_size_does_not_change_the_result(text_ckpt):
    one = evaluate_checkpoint(text_ckpt, batch_size=1, progress=False)
    many = evaluate_checkpoint(text_ckpt, batch_size=16, progress=False)
    assert one.tokens == many.tokens
    assert one.loss_nats == pytest.approx(many.loss_nats, rel=1e-6)


def test_text_families_recombine(text_ckpt):
    result = evaluate_checkpoint(text_ckpt, split="valid", progress=False)
    loss, tokens = recombine(result.groups)
    assert tokens == result.tokens
    assert loss == pytest.approx(result.loss_nats, rel=1e-9)


def test_midi_per_family_losses_recombine(midi_ckpt):
    result = evaluate_checkpoint(midi_ckpt, progress=False)
    total, count = hand_loss(midi_ckpt)
    assert result.loss_nats == pytest.approx(total / count, rel=1e-6)
    families = result.groups
    for name in ("Pitch", "Velocity", "Duration", "Position", "Bar"):
        assert families[name].tokens > 0, name
    assert families["Pitch"].tokens == families["Velocity"].tokens == families["Duration"].tokens
    assert families["special"].tokens == result.eos.tokens
    loss, tokens = recombine(families)
    assert tokens == result.tokens
    assert loss == pytest.approx(result.loss_nats, rel=1e-9)
    assert result.bits_per_second == pytest.approx(total / math.log(2) / result.seconds, rel=1e-6)
    assert result.bits_per_byte is None and result.group_kind == "family"


def test_delay_audio_per_codebook_masks_empty(audio_delay_ckpt, audio_delay_data):
    result = evaluate_checkpoint(audio_delay_ckpt, progress=False)
    total, count = hand_loss(audio_delay_ckpt)
    assert result.loss_nats == pytest.approx(total / count, rel=1e-6)
    split = read_manifest(audio_delay_data)["splits"]["test"]
    codebooks = result.groups
    assert list(codebooks) == ["codebook_0", "codebook_1"]
    for stats in codebooks.values():  # every frame's code once per stream, plus the EOS after each document
        assert stats.tokens == split["frames"] + split["documents"]
    loss, tokens = recombine(codebooks)
    assert tokens == count == result.tokens
    assert loss == pytest.approx(result.loss_nats, rel=1e-9)
    assert (result.tokenizer["layout"] == "delay" and result.tokenizer["n_codebooks"] == 2
            and result.group_kind == "codebook")


def test_flatten_audio_per_codebook_by_id_family(audio_flatten_ckpt, audio_flatten_data):
    result = evaluate_checkpoint(audio_flatten_ckpt, progress=False)
    total, count = hand_loss(audio_flatten_ckpt)
    assert result.loss_nats == pytest.approx(total / count, rel=1e-6)
    split = read_manifest(audio_flatten_data)["splits"]["test"]
    codebooks = result.groups
    assert codebooks["codebook_0"].tokens == codebooks["codebook_1"].tokens == split["frames"]
    assert codebooks["special"].tokens == split["documents"]
    loss, tokens = recombine(codebooks)
    assert tokens == result.tokens
    assert loss == pytest.approx(result.loss_nats, rel=1e-9)


def test_two_checkpoints_side_by_side(text_ckpt, text_ckpt_b, tmp_path):
    results = evaluate_checkpoints([text_ckpt, text_ckpt_b], progress=False)
    md_path, json_path = write_report(results, tmp_path / "report")
    md = md_path.read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| checkpoint |") and "bits/byte" in table[0]
    rows = [line for line in table if line.startswith("| text_a |") or line.startswith("| text_b |")]
    assert len(rows) == 4  # one row each in the main table and in the per-family table
    assert "## Per token family — text" in md
    data = json.loads(json_path.read_text())
    assert [r["name"] for r in data["checkpoints"]] == ["text_a", "text_b"]
    assert data["checkpoints"][0]["loss_nats"] != data["checkpoints"][1]["loss_nats"]


def test_cli_writes_report(text_ckpt, midi_ckpt, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["evaluate", str(text_ckpt), str(midi_ckpt), "--split", "valid", "--batch-size", "2",
                     "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| text_a |" in printed and "| midi_a |" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["split"] == "valid" and len(data["checkpoints"]) == 2
    assert "## Per token family — midi" in (out / "results.md").read_text()


def test_partial_pass_is_marked(text_ckpt):
    result = evaluate_checkpoint(text_ckpt, split="train", batch_size=1, max_batches=2, progress=False)
    assert not result.complete and result.approximate
    assert result.batches == 2 < result.batches_total
    assert result.tokens == 2 * 64
    assert 0 < result.bits_per_byte < 50


def test_fingerprint_mismatch_is_refused(text_ckpt, text_data_other_vocab, tmp_path, capsys):
    ours = load_folder(text_ckpt).tokenizer.fingerprint()
    theirs = read_manifest(text_data_other_vocab)["tokenizer"]["fingerprint"]
    assert ours != theirs
    with pytest.raises(FingerprintMismatch) as err:
        evaluate_checkpoint(text_ckpt, shard_dir=text_data_other_vocab, progress=False)
    assert ours in str(err.value) and theirs in str(err.value) and str(text_data_other_vocab) in str(err.value)
    assert cli_main(["evaluate", str(text_ckpt), "--data", str(text_data_other_vocab), "--no-progress",
                     "--out", str(tmp_path / "x")]) == 2
    assert theirs in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_split_or_shards_are_clear_errors(text_ckpt, tmp_path):
    with pytest.raises(EvaluationError, match="no 'nope' split"):
        evaluate_checkpoint(text_ckpt, split="nope", progress=False)
    with pytest.raises(EvaluationError, match="does not exist"):
        evaluate_checkpoint(text_ckpt, shard_dir=tmp_path / "absent", progress=False)


def test_results_and_run_report_name_the_split(text_ckpt, text_data, tmp_path):
    import shutil

    from shortcutlm.core.config_schema import from_dict
    from shortcutlm.run.recipe import Recipe
    from shortcutlm.run.layout import RunLayout
    from shortcutlm.report.recipe_report import write_run_report
    from tests.conftest import tiny_recipe_dict

    layout = RunLayout(tmp_path / "run")
    shutil.copytree(text_data, layout.data)
    md, _ = write_report(evaluate_checkpoints([text_ckpt], split="valid", progress=False), layout.evaluation)
    assert md.read_text().splitlines()[0] == "# Evaluation: next-token loss on the valid split"
    recipe = from_dict(Recipe, tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}))
    report = write_run_report(recipe, layout, ["baseline"]).read_text().splitlines()
    assert "## Evaluation: next-token loss on the valid split" in report
    assert "### Per token family — text" in report  # results.md's sections sit one level below
    assert not [line for line in report if line.startswith("# Evaluation")]


def test_two_runs_of_one_variant_are_told_apart_by_folder(text_ckpt, tmp_path):
    from shortcutlm.artifacts.checkpoint import save_folder

    ck = load_folder(text_ckpt)
    folders = [save_folder(tmp_path / name, ck.model, {"variant": "baseline"}, ck.hparams, ck.folder / "tokenizer",
                           ck.data) for name in ("run_a", "run_b")]
    results = evaluate_checkpoints(folders, max_batches=1, progress=False)
    md = write_report(results, tmp_path / "report")[0].read_text()
    assert "| baseline (run_a) |" in md and "| baseline (run_b) |" in md


def test_results_round_trip_through_the_artifact_layer(tmp_path):
    """results.json is strict JSON (no NaN/Infinity); an overflowed perplexity comes back as inf,
    a group without targets stays null."""
    from shortcutlm.artifacts.results import read_results, read_results_or_none, results_json_path

    assert read_results_or_none(tmp_path) is None
    record = {"name": "x", "domain": "text", "shard_dir": "data", "complete": True, "params": 1000,
              "tokens_per_s": 5.0, "tokens": 10, "loss_nats": 800.0, "loss_bits": 800 / math.log(2),
              "perplexity": math.inf,
              "per_family": {"piece": {"tokens": 10, "loss_nats": 800.0, "perplexity": math.inf},
                             "byte": {"tokens": 0, "loss_nats": math.nan, "perplexity": math.nan}}}
    results = EvaluationResults.from_dict({"split": "test", "checkpoints": [record]}, "test record")
    md, js = write_report(results, tmp_path)
    assert md.read_text().startswith("# Evaluation") and "| inf |" in md.read_text()
    text = results_json_path(tmp_path).read_text()
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text)  # strict
    back = read_results(tmp_path).checkpoints[0]
    assert back.perplexity == math.inf and back.groups["piece"].perplexity == math.inf
    assert back.groups["byte"].perplexity is None and back.groups["byte"].loss_nats is None
    assert back.group_kind == "family"


def test_results_json_keeps_its_layout_and_names_a_wrong_field(text_ckpt, tmp_path):
    """The record written is the record read: the same keys in the same order, and a malformed field
    is refused naming the file and the field."""
    from shortcutlm.artifacts.files import ArtifactError
    from shortcutlm.artifacts.results import read_results, results_json_path

    results = evaluate_checkpoints([text_ckpt], split="valid", progress=False)
    write_report(results, tmp_path)
    written = json.loads(results_json_path(tmp_path).read_text())
    row = written["checkpoints"][0]
    assert list(row)[:6] == ["name", "folder", "shard_dir", "split", "domain", "fingerprint"]
    assert list(row)[-2:] == ["approximate", "per_family"] and "bits_per_byte" in row
    assert read_results(tmp_path).to_dict() == written

    row["tokens"] = "many"
    results_json_path(tmp_path).write_text(json.dumps(written))
    with pytest.raises(ArtifactError, match=r"results.json: checkpoints\[0\]: field 'tokens' should be an integer, "
                                            r"not str 'many'"):
        read_results(tmp_path)
    row["tokens"] = 5
    del row["device"], row["elapsed_s"]  # an older file without them still reads
    results_json_path(tmp_path).write_text(json.dumps(written))
    back = read_results(tmp_path).checkpoints[0]
    assert back.device is None and back.elapsed_s is None and back.tokens == 5


def test_token_losses_mask_and_match_cross_entropy():
    from shortcutlm.run.evaluation import token_losses

    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    targets[0, -1] = 6
    nats, valid = token_losses(logits, targets, [6])
    assert nats.shape == valid.shape == (2, 1, 5) and nats.dtype == torch.float64
    keep = targets != 6
    expected = F.cross_entropy(logits[keep], targets[keep], reduction="sum")
    assert float(nats[valid].sum()) == pytest.approx(float(expected), rel=1e-6)
    streams, _ = token_losses(torch.randn(2, 3, 5, 7), torch.randint(0, 7, (2, 3, 5)))
    assert streams.shape == (2, 3, 5)
