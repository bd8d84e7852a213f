"""A full disk is one line naming the folder, what was being written and the free space; what was
saved before stays usable and the same command resumes. The disk is a real one: a small tmpfs
mounted for the test (it needs root, as CI has; elsewhere the test skips and says why)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import lightning as L

from shortcutlm.artifacts.checkpoint import CheckpointFolder, load_folder
from shortcutlm.artifacts.files import DiskFull
from shortcutlm.cli import main as cli_main
from shortcutlm.run.recipe import Recipe, from_dict
from shortcutlm.run.training import train
from tests.conftest import tiny_recipe_dict, write_text8


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs at ``tmp_path/disk``."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with a file of zeros until ``leave`` bytes (about) are free."""
    import shutil

    filler = disk / "filler.bin"
    free = shutil.disk_usage(disk).free - leave
    with open(filler, "wb") as fh:
        try:
            while free > 0:
                fh.write(b"\0" * min(free, 1 << 16))
                free -= 1 << 16
            fh.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_during_prepare_is_one_line_and_a_rerun_resumes(small_disk, tmp_path, capsys):
    write_text8(tmp_path / "text8")
    out = small_disk / "shards"
    filler = fill(small_disk, leave=40_000)  # room for the tokenizer and the manifest, not the train shard
    command = ["prepare", "--source", "text8", "--path", str(tmp_path / "text8"), "--option", "chunk_chars=10000000",
               "--tokenizer", "text", "--set", "vocab_size=300", "--out", str(out), "--workers", "0", "--quiet"]
    assert cli_main(command) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"{out}: no space left on the device while writing" in lines[0] and "MiB free" in lines[0]
    assert "run the same command again to resume" in lines[0]
    filler.unlink()
    assert cli_main(command) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["inputs"]["documents"] > 0 and not list(out.glob("*.tmp"))


class FillTheDisk(L.Callback):
    """At the start of ``step``, fill the disk: the next save meets a full device, as a long run would."""

    def __init__(self, disk: Path, step: int) -> None:
        self.disk, self.step, self.filler = disk, step, None

    def on_train_batch_start(self, trainer, lit, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.filler is None:
            self.filler = fill(self.disk)


def test_a_full_disk_during_training_keeps_the_last_save_and_resumes_exactly(small_disk, tmp_path, text8_shards):
    recipe = from_dict(Recipe, tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"},
                                                ckpt_every=2))
    whole = train(recipe, "baseline", text8_shards, tmp_path / "whole", progress=False)
    out = small_disk / "run"
    filling = FillTheDisk(small_disk, step=3)
    with pytest.raises(DiskFull) as failed:
        train(recipe, "baseline", text8_shards, out, progress=False, callbacks=[filling])
    message = str(failed.value)
    assert "\n" not in message and message.startswith(f"{out}: no space left on the device while writing")
    assert load_folder(out).hparams.step == 2  # the last good save loads
    filling.filler.unlink()
    train(recipe, "baseline", text8_shards, out, progress=False)
    a, b = CheckpointFolder(whole).read_weights(), CheckpointFolder(out).read_weights()
    assert all(torch.equal(a[k], b[k]) for k in a)
