"""Exact resume: a run stopped by Ctrl-C at any moment, or killed after a periodic save, and run
again ends with the uninterrupted run's weights (bit for bit) and metrics rows."""
from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.run.recipe import Recipe, from_dict
from shortcutlm.core.stopping import Interrupted
from shortcutlm.run.training import train
from tests.conftest import shipped_recipes, tiny_recipe_dict

TIMING = {"train/tokens_per_s", "train/mfu"}  # wall-clock figures differ between any two runs


def rows(folder: Path) -> list[dict[str, str]]:
    """metrics.csv without the timing columns, in file order."""
    with (folder / "metrics.csv").open() as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = (CheckpointFolder(f).read_weights() for f in (a, b))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different}"
    assert rows(a) == rows(b)


def recipe_dict(accumulate: int) -> dict:
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, accumulate=accumulate,
                            max_steps=8, val_every=3, log_every=2, ckpt_minutes=0)
    data["model"]["dropout"] = 0.1  # so the RNG state matters
    return data


class SigintAt(L.Callback):
    """Sends this process a real SIGINT at one moment of the run (once)."""

    def __init__(self, moment: str, step: int) -> None:
        self.moment, self.step, self.sent = moment, step, False

    def _send(self, trainer: L.Trainer, moment: str) -> None:
        if moment == self.moment and trainer.global_step == self.step and not self.sent:
            self.sent = True
            signal.raise_signal(signal.SIGINT)

    def on_before_optimizer_step(self, trainer, lit, optimizer) -> None:
        self._send(trainer, "training step")

    def on_train_batch_end(self, trainer, lit, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            self._send(trainer, "gradient accumulation")

    def on_validation_batch_start(self, trainer, lit, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 1:
            self._send(trainer, "validation")


_whole: dict[int, Path] = {}


def uninterrupted(accumulate: int, shards: Path, tmp_path_factory) -> Path:
    if accumulate not in _whole:
        out = tmp_path_factory.mktemp(f"whole{accumulate}") / "run"
        _whole[accumulate] = train(from_dict(Recipe, recipe_dict(accumulate)), "shortcut_resformer", shards, out,
                                   progress=False)
    return _whole[accumulate]


@pytest.mark.parametrize("accumulate,moment,step", [
    (1, "training step", 1), (1, "validation", 3),
    (2, "training step", 1), (2, "gradient accumulation", 4), (2, "validation", 3)])  # accumulation needs 2
def test_ctrl_c_at_any_moment_resumes_to_the_uninterrupted_run(tmp_path, tmp_path_factory, text8_shards, one_thread,
                                                               accumulate, moment, step):
    whole = uninterrupted(accumulate, text8_shards, tmp_path_factory)
    recipe = from_dict(Recipe, recipe_dict(accumulate))
    out = tmp_path / "run"
    handler_before = signal.getsignal(signal.SIGINT)  # Python's default, or "ignore" in a background job
    with pytest.raises(Interrupted) as stopped:
        train(recipe, "shortcut_resformer", text8_shards, out, progress=False, callbacks=[SigintAt(moment, step)])
    # Saved at the next step boundary: the step in progress completes; validation after step N
    # completes and the state of step N is saved.
    boundary = step if moment == "validation" else step + 1
    assert stopped.value.step == boundary
    assert yaml.safe_load((out / "hparams.json").read_text())["step"] == boundary
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handler is put back
    train(recipe, "shortcut_resformer", text8_shards, out, progress=False)
    assert_same_run(whole, out)


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_save(tmp_path, tmp_path_factory, text8_shards, one_thread):
    whole = uninterrupted(2, text8_shards, tmp_path_factory)
    data = recipe_dict(2)
    data["train"]["ckpt_every"] = 2
    recipe = from_dict(Recipe, data)
    out = tmp_path / "run"

    class TwoSigints(SigintAt):
        def _send(self, trainer, moment):
            if moment == self.moment and trainer.global_step == self.step and not self.sent:
                self.sent = True
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)

    with pytest.raises(SystemExit):  # Lightning's exit after a raw KeyboardInterrupt
        train(recipe, "shortcut_resformer", text8_shards, out, progress=False,
              callbacks=[TwoSigints("gradient accumulation", 5)])
    assert yaml.safe_load((out / "hparams.json").read_text())["step"] == 4  # the last periodic save
    recipe.train.ckpt_every = 0  # the cadence of saves is not part of the run's result
    train(recipe, "shortcut_resformer", text8_shards, out, progress=False)
    assert_same_run(whole, out)


def test_a_partial_run_without_trainer_state_says_so_and_starts_again(tmp_path, text8_shards, one_thread, capfd):
    recipe = from_dict(Recipe, recipe_dict(1))
    out = train(recipe, "baseline", text8_shards, tmp_path / "run", progress=False, stop_after=2)
    (out / "trainer" / "last.ckpt").unlink()  # as a crash before the first save leaves it
    capfd.readouterr()
    train(recipe, "baseline", text8_shards, out, progress=False)
    assert "partial run without trainer state" in capfd.readouterr().err
    steps = [float(r["opt_step"]) for r in rows(out) if r.get("train/loss")]
    assert steps == sorted(set(steps)) and steps[0] == 1.0  # one clean curve (log_every=2: steps 1, 3, ...)


def test_every_shipped_recipe_saves_by_time_by_default():
    from shortcutlm.run.recipe import load_recipe

    checked = []
    for path in shipped_recipes():
        raw = yaml.safe_load(path.read_text())
        if "datasets" in raw:
            continue
        for preset in [None, *raw.get("presets", {})]:
            train_settings = load_recipe(path, preset).train
            assert 0 < train_settings.ckpt_minutes <= 10 or 0 < train_settings.ckpt_every, (path, preset)
            checked.append(path.name)
    assert len(set(checked)) >= 3, checked


# ------------------------------------------------------------------ real processes, real signals
def cli_recipe(tmp_path: Path) -> Path:
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, accumulate=2,
                            max_steps=300, val_every=25, log_every=3, ckpt_minutes=0, ckpt_every=50, val_batches=2)
    data["model"]["dropout"] = 0.1
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(recipe: Path, shards: Path, out: Path, devices: int, workers: int = 0) -> list[str]:
    args = [sys.executable, "-m", "shortcutlm.cli", "train", str(recipe), "--data", str(shards), "--out", str(out),
            "--variant", "shortcut_resformer", "--no-progress", "--set", "train.accelerator=cpu",
            "--set", f"train.num_workers={workers}"]
    if devices > 1:
        args += ["--set", f"train.devices={devices}", "--set", "train.strategy=ddp",
                 "--set", f"train.batch_size={4 // devices}"]
    return args


def run_and_signal(args: list[str], out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start training, wait for its first periodic save (step 50), then signal its whole process
    group at an arbitrary moment soon after (as a terminal does)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "trainer" / "last.ckpt").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.4))  # an arbitrary moment: in a step, accumulation or validation
    os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize("devices,workers", [(1, 0), (2, 0), (1, 1)])
def test_ctrl_c_from_a_terminal_then_the_same_command_resumes_exactly(tmp_path, text8_shards, devices, workers):
    recipe = cli_recipe(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    whole = tmp_path / "whole"
    command = cli(recipe, text8_shards, whole, devices, workers)
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    out = tmp_path / "split"
    command = cli(recipe, text8_shards, out, devices, workers)
    stopped = run_and_signal(command, out, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.count("Ctrl-C: saving at the end of this step") == 1  # one process answers
    assert stopped.stderr.count("run the same command again to resume") == 1
    step = yaml.safe_load((out / "hparams.json").read_text())["step"]
    assert 50 <= step < 300
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    assert_same_run(whole, out)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_periodic_save(tmp_path, text8_shards):
    recipe = cli_recipe(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    whole = tmp_path / "whole"
    subprocess.run(cli(recipe, text8_shards, whole, 1), check=True, env=env, capture_output=True, timeout=300)
    out = tmp_path / "killed"
    killed = run_and_signal(cli(recipe, text8_shards, out, 1), out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    saved = yaml.safe_load((out / "hparams.json").read_text())["step"]
    assert saved % 50 == 0 and 0 < saved < 300
    subprocess.run(cli(recipe, text8_shards, out, 1), check=True, env=env, capture_output=True, timeout=300)
    assert_same_run(whole, out)


@pytest.mark.slow
def test_the_clock_saves_so_a_kill_9_loses_at_most_the_interval(tmp_path, text8_shards):
    """``train.ckpt_minutes`` at a few seconds, no step-count saves and no signal but SIGKILL: every save in
    the folder is the clock's. Two saves come at least the interval apart; after ``kill -9`` the folder
    holds the last of them, and the same command resumes from it to the uninterrupted run's weights."""
    interval = 2.0
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, accumulate=2,
                            max_steps=100_000, val_every=25, log_every=1, ckpt_minutes=interval / 60, ckpt_every=0,
                            val_batches=2)
    data["model"]["dropout"] = 0.1
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "killed"
    state = out / "trainer" / "last.ckpt"
    proc = subprocess.Popen(cli(recipe, text8_shards, out, 1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    saves: list[int] = []  # modification times of each trainer state seen
    deadline = time.monotonic() + 150
    try:
        while len(saves) < 2 and time.monotonic() < deadline and proc.poll() is None:
            if state.is_file() and (not saves or state.stat().st_mtime_ns != saves[-1]):
                saves.append(state.stat().st_mtime_ns)
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.3))  # an arbitrary moment after the second save
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    assert len(saves) == 2, f"the clock made {len(saves)} save(s) in 150 s: {stderr[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert (saves[1] - saves[0]) / 1e9 >= interval  # the clock counts from the previous save
    saved = torch.load(state, weights_only=True, map_location="cpu")["global_step"]
    hparams = yaml.safe_load((out / "hparams.json").read_text())
    assert 0 < saved < 100_000 and not hparams["finished"]
    assert hparams["step"] == saved  # the folder describes that step (a third save is 2 s away)

    end = saved + 4
    subprocess.run(cli(recipe, text8_shards, out, 1) + ["--stop-after", str(end)], check=True, env=env,
                   capture_output=True, timeout=300)
    with (out / "logs" / "version_1" / "metrics.csv").open() as fh:
        resumed = [int(float(r["opt_step"])) for r in csv.DictReader(fh) if r.get("train/loss")]
    assert resumed == list(range(saved, end))  # the second sitting started from the clock's save
    assert yaml.safe_load((out / "hparams.json").read_text())["step"] == end
    whole = tmp_path / "whole"
    subprocess.run(cli(recipe, text8_shards, whole, 1) + ["--stop-after", str(end)], check=True, env=env,
                   capture_output=True, timeout=300)
    assert_same_run(whole, out)
