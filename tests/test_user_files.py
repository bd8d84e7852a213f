"""A user's files are sacred: ``--fresh`` removes only what a run wrote, one run at a time writes a
folder (and ``kill -9`` leaves no lock behind), and a resume refuses shards of another tokenizer.
Real runs, real processes, real signals."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from shortcutlm.artifacts.lock import LOCK, FolderBusy, folder_lock
from tests.cli_lines import one_line
from shortcutlm.datasets.prepare import prepare
from shortcutlm.run.recipe import Recipe, from_dict
from shortcutlm.run.training import train
from tests.conftest import tiny_recipe_dict, write_text8

REPO = Path(__file__).resolve().parents[1]


def recipe(**train_settings) -> Recipe:
    return from_dict(Recipe, tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"},
                                              **train_settings))


def recipe_file(path: Path, **train_settings) -> Path:
    path.write_text(yaml.safe_dump(tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"},
                                                    **train_settings)))
    return path


def test_fresh_refuses_a_folder_holding_the_users_files(tmp_path, text8_shards, capsys):
    out = tmp_path / "run"
    train(recipe(), "baseline", text8_shards, out, progress=False)
    (out / "thesis.txt").write_text("three years of work")
    (out / "sub").mkdir()
    (out / "sub" / "notes.md").write_text("notes")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    line = one_line(capsys, ["train", str(recipe_file(tmp_path / "r.yaml", max_steps=4)), "--data", str(text8_shards),
                             "--out", str(out), "--fresh", "--no-progress"])
    assert "holds files no shortcutlm run wrote (sub/, thesis.txt)" in line and "--fresh" in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing touched
    assert (out / "thesis.txt").read_text() == "three years of work"


def test_fresh_replaces_a_runs_own_files_and_records_the_new_settings(tmp_path, text8_shards):
    out = tmp_path / "run"
    train(recipe(), "baseline", text8_shards, out, progress=False)
    old_rows = (out / "metrics.csv").read_text()
    assert max(float(r.split(",")[0]) for r in old_rows.splitlines()[1:]) == 6
    train(recipe(max_steps=3, lr=1e-3), "baseline", text8_shards, out, progress=False, fresh=True)
    hparams = json.loads((out / "hparams.json").read_text())
    assert hparams["step"] == 3 and hparams["train"]["max_steps"] == 3 and hparams["train"]["lr"] == 1e-3
    steps = [float(r.split(",")[0]) for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert max(steps) <= 3 and len(list((out / "logs").glob("version_*"))) == 1  # the old sittings are gone
    assert not (out / LOCK).exists()


def test_a_second_run_into_the_same_folder_is_refused_and_kill_9_leaves_no_lock(tmp_path, text8_shards, capsys):
    out = tmp_path / "run"
    long_recipe = recipe_file(tmp_path / "long.yaml", max_steps=100_000, val_every=100_000)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "shortcutlm.cli", "train", str(long_recipe), "--data",
                              str(text8_shards), "--out", str(out), "--no-progress"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "logs").exists() and time.monotonic() < deadline:  # training has started
            assert first.poll() is None, first.stderr.read().decode()
            time.sleep(0.2)
        line = one_line(capsys, ["train", str(long_recipe), "--data", str(text8_shards), "--out", str(out),
                                 "--no-progress"])
        assert f"{out} is in use by another shortcutlm run (train, PID {first.pid} on {socket.gethostname()}" in line
        # prepare and a recipe take the same kind of lock on their folders
        with pytest.raises(FolderBusy, match=f"PID {first.pid}"):
            with folder_lock(out, "test"):
                pass
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / LOCK).exists()  # kill -9 left the file, but not the lock
    train(recipe(), "baseline", text8_shards, out, progress=False, fresh=True)
    assert json.loads((out / "hparams.json").read_text())["step"] == 6 and not (out / LOCK).exists()


def test_two_prepares_into_one_folder(tmp_path):
    write_text8(tmp_path / "text8")
    out = tmp_path / "shards"
    with folder_lock(out, "prepare"):
        with pytest.raises(FolderBusy, match=f"PID {os.getpid()}"):
            prepare({"name": "text8", "path": str(tmp_path / "text8")}, {"domain": "text", "vocab_size": 300}, out,
                    workers=0, progress=False)
    assert [p.name for p in out.iterdir()] == []  # the refused prepare wrote nothing


def test_resuming_on_shards_of_another_tokenizer_is_refused(tmp_path, text8_shards, capsys):
    other = tmp_path / "other"
    write_text8(tmp_path / "text8", seed=7)
    prepare({"name": "text8", "path": str(tmp_path / "text8"), "chunk_chars": 10_000_000},
            {"domain": "text", "vocab_size": 300}, other, workers=0, progress=False)
    out = tmp_path / "run"
    train(recipe(), "baseline", text8_shards, out, progress=False, stop_after=2)
    data_record = (out / "data.json").read_text()
    line = one_line(capsys, ["train", str(recipe_file(tmp_path / "r.yaml")), "--data", str(other), "--out", str(out),
                             "--no-progress"])
    assert "tokenizer fingerprint" in line and str(other) in line and "ids mean other things" in line
    assert (out / "data.json").read_text() == data_record


@pytest.mark.parametrize("env, first", [({}, True), ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
                                        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False), ({"LOCAL_RANK": "1"}, False),
                                        ({"SLURM_PROCID": "3"}, False), ({"RANK": "0", "SLURM_NODEID": "0"}, True)])
def test_only_the_first_process_of_a_distributed_run_takes_the_lock(monkeypatch, env, first):
    from shortcutlm.artifacts.lock import _RANK_VARIABLES, first_process

    for name in _RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert first_process() is first
