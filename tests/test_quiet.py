"""The training terminal shows what a user needs: Lightning's noise is filtered by its exact text,
other Lightning lines still show, and a DDP run prints its checkpoint line once."""
from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from shortcutlm.core import quiet
from tests.conftest import tiny_recipe_dict

NOISE = ("`weights_only` was not set", "litlogger", "Tip:", "sync_dist", "GPU available: False",
         "TPU available: False", "Initializing distributed", "-" * 100)


def train_cli(tmp_path: Path, shards: Path, *extra: str) -> str:
    """A tiny training through the command line; its whole terminal output (stdout + stderr)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"},
                                                      max_steps=4, val_every=2)))
    done = subprocess.run([sys.executable, "-m", "shortcutlm.cli", "train", str(recipe), "--data", str(shards),
                           "--out", str(tmp_path / "run"), "--no-progress", "--set", "train.accelerator=cpu", *extra],
                          capture_output=True, text=True, cwd=Path.cwd(), timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def assert_quiet(output: str) -> None:
    found = [n for n in NOISE if n in output]
    assert not found, f"noise {found} in:\n{output}"


def test_one_process_terminal_is_quiet(tmp_path, text8_shards):
    output = train_cli(tmp_path, text8_shards)
    assert_quiet(output)
    assert output.count("checkpoint: ") == 1
    assert len(output.strip().splitlines()) <= 3, output


@pytest.mark.slow
def test_two_process_ddp_terminal_is_quiet_and_prints_the_checkpoint_once(tmp_path, text8_shards):
    output = train_cli(tmp_path, text8_shards, "--set", "train.devices=2", "--set", "train.strategy=ddp",
                       "--set", "train.batch_size=2")
    assert_quiet(output)
    assert output.count("checkpoint: ") == 1, output
    assert "distributed: 2 processes (gloo)" in output


def records(logger_name: str, message: str) -> list[str]:
    """What reaches a handler on ``logger_name`` when ``message`` is logged there."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info(message)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return seen


def test_filters_drop_exact_messages_only():
    quiet.quiet_training_output()
    quiet.quiet_training_output()  # a second call adds nothing
    rank_zero = quiet.RANK_ZERO_LOGGERS[0]
    assert sum(isinstance(f, quiet.DropMessages) for f in logging.getLogger(rank_zero).filters) == 1
    assert records(quiet.CHECKPOINT_LOGGER, "`weights_only` was not set, defaulting to `False`.") == []
    assert records(rank_zero, "GPU available: False, used: False") == []
    assert records(rank_zero, "TPU available: False, using: 0 TPU cores") == []
    assert records(quiet.DISTRIBUTED_LOGGER, "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") == []
    # Lines that carry information still show.
    for line in ("GPU available: True (cuda), used: True", "`Trainer.fit` stopped: `max_steps=4` reached."):
        assert records(rank_zero, line) == [line]
    assert records(quiet.CHECKPOINT_LOGGER, "Restoring states from the checkpoint path at x") != []
    banner = f"{'-' * 100}\ndistributed_backend=gloo\nAll distributed processes registered. " \
             f"Starting with 2 processes\n{'-' * 100}\n"
    assert records(rank_zero, banner) == ["distributed: 2 processes (gloo)"]


def test_sync_dist_warning_filtered_only_for_our_reduced_metrics():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.quiet_training_output()
        for name in ("val/loss", "val/loss_stream1", "opt_step", "train/other"):
            warnings.warn(f"It is recommended to use `self.log({name!r}, ..., sync_dist=True)` when logging on "
                          "epoch level in distributed setting to accumulate the metric across devices.", stacklevel=1)
    assert [str(w.message).split("'")[1] for w in caught] == ["train/other"]
