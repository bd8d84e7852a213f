"""The MFU denominator: a per-machine cached matmul peak that only grows, so logged MFU <= 1."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from shortcutlm.core import peak
from shortcutlm.core.cache_dir import CACHE_ENV
from shortcutlm.core.config_schema import from_dict
from shortcutlm.run.recipe import Recipe
from shortcutlm.run.training import train
from tests.conftest import tiny_recipe_dict


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The peak cache lives in tmp_path: tests never touch the real home."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / peak.CACHE_FILE


def test_cache_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert peak.cache_path() == tmp_path / "xdg" / "shortcutlm" / "peak_flops.json"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert peak.cache_path() == tmp_path / "mine" / "peak_flops.json"


def test_every_cache_of_the_suite_sits_under_one_root(tmp_path, monkeypatch):
    """Converted corpora, remote shards' views, the peak and the C++ operator's build follow the same
    variables (the embedded corpora once ignored ``$XDG_CACHE_HOME``)."""
    from shortcutlm.artifacts.remote import _cache_root
    from shortcutlm.datasets.embedded import cache_root
    from shortcutlm.models.native import build_directory

    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "xdg" / "shortcutlm"
    for path in (cache_root(), _cache_root(), peak.cache_path(), build_directory()):
        assert root in path.parents or path == root
    assert cache_root(tmp_path / "given") == tmp_path / "given"


def test_cache_round_trips_and_only_grows(cache):
    key = peak.device_key("cpu", torch.float32)
    assert "float32" in key and torch.__version__ in key and f"{torch.get_num_threads()} threads" in key
    assert peak.cached_peak(key) is None
    assert peak.record_peak(key, 5e9, "matmul") == 5e9
    assert peak.cached_peak(key) == 5e9
    assert peak.record_peak(key, 3e9, "matmul") == 5e9  # a slower measurement never lowers it
    assert peak.cached_peak(key) == 5e9
    assert peak.record_peak(key, 7e9, "training step") == 7e9
    body = json.loads(cache.read_text())
    assert body[key]["flops"] == 7e9 and body[key]["source"] == "training step"
    other = peak.device_key("cpu", torch.bfloat16)
    assert other != key and peak.cached_peak(other) is None


def test_an_unreadable_cache_is_rewritten(cache):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    key = peak.device_key("cpu", torch.float32)
    assert peak.cached_peak(key) is None
    assert peak.record_peak(key, 2e9, "matmul") == 2e9
    assert json.loads(cache.read_text())[key]["flops"] == 2e9


def test_a_fresh_measurement_is_the_best_of_its_trials(cache, one_thread):
    rates = peak.matmul_rates("cpu", torch.float32, sizes=(64, 128), trials=3)
    assert len(rates) == 6 and all(r > 0 for r in rates)

    flops = peak.machine_peak_flops("cpu", torch.float32)
    entry = json.loads(cache.read_text())[peak.device_key("cpu", torch.float32)]
    assert entry["source"] == "matmul" and entry["flops"] == flops
    assert len(entry["rates"]) == len(entry["sizes"]) * entry["trials"] == len(peak.default_sizes("cpu")) * peak.TRIALS
    assert flops == pytest.approx(max(entry["rates"]), abs=1)
    assert flops > 1e8  # any CPU multiplies faster than 0.1 GFLOP/s


def test_a_cached_peak_above_the_measurement_is_kept(cache, one_thread):
    key = peak.device_key("cpu", torch.float32)
    peak.record_peak(key, 1e18, "matmul")
    assert peak.machine_peak_flops("cpu", torch.float32) == 1e18


def test_logged_mfu_stays_at_most_one_against_a_tiny_peak(tmp_path, cache, text8_shards, one_thread):
    """A deliberately tiny peak (1 FLOP/s): the first timed step beats it, becomes the peak and is
    cached; MFU is then achieved / peak, never above 1, and no value is clamped."""
    data = tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"}, max_steps=4, val_every=4,
                            peak_flops=1.0, accelerator="cpu")
    data["variants"] = {"baseline": {}}
    out = train(from_dict(Recipe, data), "baseline", text8_shards, tmp_path / "run", progress=False)
    with (out / "metrics.csv").open() as fh:
        mfu = [float(r["train/mfu"]) for r in csv.DictReader(fh) if r.get("train/mfu")]
    assert len(mfu) >= 2
    assert all(0 < m <= 1.0 for m in mfu), mfu
    assert max(mfu) == 1.0  # the step that raised the peak
    entry = json.loads(cache.read_text())[peak.device_key("cpu", torch.float32)]
    assert entry["source"] == "training step" and entry["flops"] > 1e3
    hparams = json.loads((out / "hparams.json").read_text())
    assert hparams["peak_flops"] >= entry["flops"] * (1 - 1e-12)
