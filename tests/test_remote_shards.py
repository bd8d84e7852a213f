"""Shards from a server: a prepared folder served over HTTP on 127.0.0.1 by a server this test starts,
read through ``pipe:`` and fsspec too; training, resuming, evaluating and generating from it, and the
same one-line errors as local shards for a corrupt or missing one."""
from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.artifacts.manifest import MANIFEST, ShardManifest
from shortcutlm.artifacts.remote import open_view, remote_location
from shortcutlm.cli import main as cli_main
from shortcutlm.datasets.batches import eval_batches, train_batches
from shortcutlm.run.evaluation import evaluate_checkpoint
from shortcutlm.run.recipe import Recipe, from_dict
from shortcutlm.run.training import train
from tests.conftest import tiny_recipe_dict


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def served(tmp_path, text8_shards, monkeypatch):
    """A copy of a prepared folder (so the test may break it) and its URL on a local HTTP server."""
    monkeypatch.setenv("SHORTCUTLM_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "www" / "text8"
    shutil.copytree(text8_shards, folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/text8"
    server.shutdown()
    server.server_close()


@pytest.fixture
def recipe() -> Recipe:
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"})
    data["model"]["dropout"] = 0.1  # so a resume must restore the RNG too
    return from_dict(Recipe, data)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return CheckpointFolder(folder).read_weights()


def test_a_served_folder_reads_as_the_local_one(served):
    folder, url = served
    view = open_view(url)
    assert remote_location(view) == url and not list(view.glob("*.tar"))  # shards stay on the server
    assert ShardManifest.read(view).raw == ShardManifest.read(folder).raw
    for split in ("valid", "test"):
        for a, b in zip(eval_batches(folder, split, 32, 4), eval_batches(view, split, 32, 4), strict=True):
            assert torch.equal(a, b)
    a, b = iter(train_batches(folder, 32, 4, seed=1)), iter(train_batches(view, 32, 4, seed=1))
    for _ in range(3):
        assert torch.equal(next(a), next(b))


def test_pipe_and_fsspec_locations(served):
    folder, _ = served
    local = list(eval_batches(folder, "valid", 32, 4))
    for location in (f"pipe:cat {folder}/{{name}}", f"file://{folder}"):
        assert [torch.equal(a, b) for a, b in zip(local, eval_batches(open_view(location), "valid", 32, 4),
                                                    strict=True)] == [True] * len(local)


def test_train_resume_evaluate_and_generate_from_a_server(served, recipe, tmp_path, capsys):
    folder, url = served
    local = train(recipe, "shortcut_resformer", folder, tmp_path / "local", progress=False)
    remote = tmp_path / "remote"
    train(recipe, "shortcut_resformer", url, remote, progress=False, stop_after=3)
    assert not CheckpointFolder(remote).is_finished(recipe.train.max_steps)
    train(recipe, "shortcut_resformer", url, remote, progress=False)  # resumes, reading the server again
    a, b = weights(local), weights(remote)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert CheckpointFolder(remote).data().shard_dir == url  # evaluate and generate find the server again

    mine = evaluate_checkpoint(remote, split="valid", progress=False)
    theirs = evaluate_checkpoint(local, split="valid", progress=False)
    assert mine.shard_dir == url and mine.tokens == theirs.tokens
    assert mine.loss_nats == pytest.approx(theirs.loss_nats, abs=1e-6)
    assert cli_main(["evaluate", str(remote), "--data", url, "--split", "valid", "--no-progress",
                     "--out", str(tmp_path / "eval")]) == 0
    assert cli_main(["generate", str(remote), "--tokens", "8", "--seed", "0", "--out", str(tmp_path / "gen")]) == 0


def one_error(capsys, command: list[str]) -> str:
    assert cli_main(command) != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_corrupt_or_missing_remote_shard_is_the_error_a_local_one_gives(served, recipe, tmp_path, capsys):
    folder, url = served
    remote = tmp_path / "remote"
    train(recipe, "baseline", url, remote, progress=False)
    shard = sorted(folder.glob("valid-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    command = ["evaluate", str(remote), "--split", "valid", "--no-progress", "--out", str(tmp_path / "e")]
    served_line = one_error(capsys, [*command, "--data", url])
    local_line = one_error(capsys, [*command, "--data", str(folder)])
    assert f"shard {url}/{shard.name} fails its checksum against {url}/{MANIFEST}" in served_line
    assert served_line.replace(url, str(folder)) == local_line

    shard.unlink()
    served_line = one_error(capsys, [*command, "--data", url])
    assert f"shard {url}/{shard.name} is missing (listed in the manifest)" in served_line
    assert served_line.replace(url, str(folder)) == one_error(capsys, [*command, "--data", str(folder)])

    line = one_error(capsys, [*command, "--data", f"{url}-not-here"])
    assert f"{url}-not-here/{MANIFEST}: not found (HTTP 404)" in line and "prepared shard folder" in line
