"""Prepare across jobs: a tokenizer step, two jobs and a merge give what one prepare gives.

Real text files (one that is not UTF-8, so the tokenizer's fitting rejects it, and one that is
empty, so encoding rejects it), a real SentencePiece tokenizer, real shards read back by the
loader. Refusals are checked through the CLI, as one line each.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from shortcutlm.artifacts.manifest import (part_manifest_path, read_manifest, read_part_manifest,
                                           write_manifest, write_part_manifest)
from shortcutlm.cli import main as cli_main
from shortcutlm.datasets.batches import eval_batches
from shortcutlm.datasets.parallel import Job, merge
from shortcutlm.datasets.prepare import prepare, prepare_tokenizer
from shortcutlm.datasets.shards import read_shard

TEXT = {"domain": "text", "vocab_size": 300}
WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards box and judge "
         "how vexingly quick daft zebras jump in the pale moonlight").split()
SHARD_TOKENS = 1500  # several shards per split and per job


def text_folder(root):
    """24 text files of different lengths, one not UTF-8 and one empty, all listed in train (the bad
    one is then rejected while fitting) or spread over the splits (``fractions``)."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        lines = [" ".join(rng.choice(WORDS, size=10)) for _ in range(8 + 2 * i)]
        (root / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n")
    (root / "doc05b.txt").write_bytes(b"valid start \xff\xfe\xfa not utf-8\n")
    (root / "doc17b.txt").write_bytes(b"")
    return {"name": "folder", "path": str(root), "fractions": "70,15,15"}


def streams(out) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per split: the document ids and the concatenated tokens, in the order the loader reads shards."""
    manifest = read_manifest(out)
    found = {}
    for split in manifest["splits"]:
        records = sorted((r for r in manifest["shards"] if r["split"] == split), key=lambda r: r["name"])
        docs = [(key, tokens) for r in records for key, tokens, _ in read_shard(out / r["name"])]
        found[split] = ([k for k, _ in docs], np.concatenate([t for _, t in docs]))
    return found


def sizes(manifest) -> dict:
    return {split: {k: v for k, v in entry.items() if k != "shards"} for split, entry in manifest["splits"].items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One ordinary prepare and the same data prepared by a tokenizer step, 2 jobs and a merge."""
    tmp = tmp_path_factory.mktemp("parallel")
    source = text_folder(tmp / "in")
    one = prepare(source, TEXT, tmp / "one", workers=1, shard_tokens=SHARD_TOKENS, progress=False)
    step = prepare_tokenizer(source, TEXT, tmp / "par", workers=1, progress=False)
    parts = [prepare(source, TEXT, tmp / "par", workers=1, shard_tokens=SHARD_TOKENS, progress=False, job=Job(i, 2))
             for i in range(2)]
    merged = merge(tmp / "par")
    return source, tmp, one, step, parts, merged


def test_the_fixture_has_rejections_of_both_kinds(runs):
    _, _, one, step, _, _ = runs
    reasons = {r["doc_id"]: r["reason"] for r in one["rejected"]}
    assert set(reasons) == {"doc05b_txt", "doc17b_txt"}
    assert [r["doc_id"] for r in step["plan"]["training_rejected"]] == ["doc05b_txt"]  # rejected while fitting
    assert "empty" in reasons["doc17b_txt"]  # rejected while encoding, by a job


def test_two_jobs_and_a_merge_equal_one_prepare(runs):
    _, tmp, one, _, parts, merged = runs
    assert [p["job"]["documents"] for p in parts] == [[0, 13], [13, 26]]  # 26 documents listed
    assert all(p["shards"] for p in parts)  # each job wrote shards of its own
    assert merged["complete"] and merged["tokenizer"] == one["tokenizer"]
    assert sizes(merged) == sizes(one)
    assert merged["rejected"] == one["rejected"]
    assert merged["inputs"] == one["inputs"] == {"total": 26, "documents": 24, "rejected": 2, "skipped": 0}
    assert merged["warnings"] == one["warnings"]
    a, b = streams(tmp / "one"), streams(tmp / "par")
    assert a.keys() == b.keys() == {"train", "valid", "test"}
    for split in a:
        assert a[split][0] == b[split][0], split  # same documents in the same order
        assert np.array_equal(a[split][1], b[split][1]), split  # the same token stream
    # What training and evaluation read: the loader's exact pass over each split.
    for split in a:
        for x, y in zip(eval_batches(tmp / "one", split, 64, 4), eval_batches(tmp / "par", split, 64, 4),
                        strict=True):
            assert np.array_equal(x, y)


def test_a_job_resumes_and_a_repeated_step_keeps_everything(runs):
    source, tmp, _, _, parts, merged = runs
    shard = tmp / "par" / parts[1]["shards"][-1]["name"]
    shard.unlink()  # lost, as if the job had been killed before writing it
    again = prepare(source, TEXT, tmp / "par", workers=1, shard_tokens=SHARD_TOKENS, progress=False, job=Job(1, 2))
    assert again["last_run"]["encoded_documents"] == parts[1]["shards"][-1]["documents"]
    assert [r["sha256"] for r in again["shards"]] == [r["sha256"] for r in parts[1]["shards"]]
    assert prepare_tokenizer(source, TEXT, tmp / "par", workers=1, progress=False)["plan"] == merged["plan"]
    remerged = merge(tmp / "par")
    assert remerged["shards"] == merged["shards"] and remerged["rejected"] == merged["rejected"]


def error_line(capsys, *args) -> str:
    assert cli_main(["prepare", *map(str, args)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("shortcutlm prepare: error: ")
    return err[0]


def cli_args(source, out, *more) -> list[str]:
    return [str(a) for a in ["--source", "folder", "--path", source["path"],
            "--option", f"fractions={source['fractions']}",
            "--tokenizer", "text", "--set", f"vocab_size={TEXT['vocab_size']}", "--out", out, "--workers", "1",
            "--quiet", *more]]


def test_the_cli_runs_the_three_steps(runs, tmp_path, capsys):
    source, tmp, _, _, _, merged = runs
    out = tmp_path / "cli"
    assert cli_main(["prepare", *cli_args(source, out, "--tokenizer-only")]) == 0
    assert "tokenizer" in capsys.readouterr().out
    for job in ("1", "0"):  # any order
        assert cli_main(["prepare", *cli_args(source, out, "--num-jobs", "2", "--job", job,
                                              "--shard-tokens", SHARD_TOKENS)]) == 0
    assert "of 13 inputs" in capsys.readouterr().out
    assert cli_main(["prepare", "--out", str(out), "--merge"]) == 0
    assert "2 rejected of 26 inputs" in capsys.readouterr().out
    assert [r["sha256"] for r in read_manifest(out)["shards"]] == [r["sha256"] for r in merged["shards"]]


def test_jobs_and_merges_that_cannot_be_right_are_one_line(runs, tmp_path, capsys):
    source, _, _, _, _, _ = runs
    out = tmp_path / "bad"
    job0 = ["--num-jobs", "2", "--job", "0"]
    assert "--tokenizer-only" in error_line(capsys, *cli_args(source, out, *job0))
    assert not out.exists()  # the refused job left no folder behind
    assert "0 <= job < num-jobs" in error_line(capsys, *cli_args(source, out, "--num-jobs", "2", "--job", "2"))
    assert "separate steps" in error_line(capsys, *cli_args(source, out, "--merge", *job0))
    assert cli_main(["prepare", *cli_args(source, out, "--tokenizer-only")]) == 0
    other = cli_args(source, out, *job0)
    other[other.index(f"vocab_size={TEXT['vocab_size']}")] = "vocab_size=320"
    assert "tokenizer_settings" in error_line(capsys, *other)
    assert cli_main(["prepare", *cli_args(source, out, *job0)]) == 0
    assert "job(s) 1 of 2 have not written" in error_line(capsys, "--out", out, "--merge")

    part = read_part_manifest(part_manifest_path(out, 0, 2))
    write_part_manifest(out, 1, 2, {**part, "job": {**part["job"], "index": 1}, "complete": False})
    assert "job 1 of 2 did not finish" in error_line(capsys, "--out", out, "--merge")
    write_part_manifest(out, 1, 2, {**part, "tokenizer": {**part["tokenizer"], "fingerprint": "0" * 16}})
    assert f"job 1 of 2 ({part_manifest_path(out, 1, 2)}) used tokenizer fingerprint {'0' * 16}" in \
        error_line(capsys, "--out", out, "--merge")
    write_part_manifest(out, 0, 3, part)
    assert "parts of prepares in 2 and 3 jobs" in error_line(capsys, "--out", out, "--merge")

    step = read_manifest(out, require_complete=False)
    write_manifest(out, {**step, "plan": {**step["plan"], "fingerprint": "0" * 16}})
    assert "0" * 16 in error_line(capsys, *cli_args(source, out, *job0))  # the saved tokenizer is not the plan's


def test_a_job_whose_machine_sees_other_files_is_refused(runs, tmp_path, capsys):
    source, _, _, _, _, _ = runs
    copy = {**source, "path": str(tmp_path / "in")}
    shutil.copytree(source["path"], copy["path"])
    out = tmp_path / "out"
    assert cli_main(["prepare", *cli_args(copy, out, "--tokenizer-only")]) == 0
    (tmp_path / "in" / "doc99.txt").write_text("one more file that appeared after the tokenizer step\n")
    line = error_line(capsys, *cli_args(copy, out, "--num-jobs", "2", "--job", "0"))
    assert "lists 27 documents here" in line and "but 26" in line
