"""The ablation grid: config loading, the statistics on numbers, and a micro grid end to end."""
from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from shortcutlm import ablation as ab
from shortcutlm.artifacts.checkpoint import WEIGHTS, CheckpointFolder
from shortcutlm.core.config_schema import ConfigError
from tests.conftest import write_text8
from tests.pages import html_numbers, markdown_numbers, markdown_tables, read_html

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ numbers

def test_matched_multiple_interpolates_the_baseline_curve():
    curve = [(1.0, 3.0), (1.25, 2.9), (1.5, 2.85)]
    value, label = ab.matched_multiple(2.95, curve)
    assert value == pytest.approx(1.125) and label.endswith("×")
    value, _ = ab.matched_multiple(2.875, curve)
    assert value == pytest.approx(1.375)
    assert ab.matched_multiple(2.9, curve)[0] == pytest.approx(1.25)
    assert ab.matched_multiple(3.0, curve) == (1.0, "1.00×")
    assert ab.matched_multiple(3.1, curve) == (None, "< 1×")  # worse than the baseline at equal tokens
    assert ab.matched_multiple(2.8, curve) == (None, "> 1.5×")  # better than the baseline ever gets here
    assert ab.matched_multiple(2.9, [(1.0, 3.0)]) == (None, "pending")
    assert ab.matched_multiple(None, curve) == (None, "pending")
    # Order does not matter; a noisy (non-monotone) curve uses the first crossing.
    assert ab.matched_multiple(2.95, list(reversed(curve)))[0] == pytest.approx(1.125)
    assert ab.matched_multiple(2.92, [(1.0, 3.0), (1.25, 2.9), (1.5, 2.95)])[0] == pytest.approx(1.2)


def test_narrowed_command():
    assert ab.narrowed_command("shortcutlm ablate a.yaml --datasets x,y --set seeds=[0]", "y") == \
        "shortcutlm ablate a.yaml --set 'seeds=[0]' --datasets y"


def test_verdict_says_worse_when_a_variant_loses():
    assert ab.verdict(-0.05, 0.01) == "better"
    assert ab.verdict(0.05, 0.01) == "worse"
    assert ab.verdict(0.005, 0.01) == "within spread"
    assert ab.verdict(-0.01, 0.01) == "within spread"
    assert ab.verdict(0.02, None) == "worse (one seed, no spread)"
    assert ab.verdict(-0.02, None).startswith("better")
    assert ab.verdict(None, None) == "pending"


def test_compare_pairs_by_seed_else_combines_spreads():
    base = {0: 3.0, 1: 3.2, 2: 3.1}
    paired = ab.compare({0: 2.9, 1: 3.1, 2: 3.0}, base)  # exactly 0.1 better on every seed
    assert paired["method"] == "paired" and paired["n"] == 3
    assert paired["delta"] == pytest.approx(-0.1) and paired["spread"] == pytest.approx(0.0, abs=1e-12)
    assert ab.verdict(paired["delta"], paired["spread"]) == "better" == paired["verdict"]
    unpaired = ab.compare({3: 2.9, 4: 3.1}, {0: 3.0, 1: 3.2})
    assert unpaired["method"] == "unpaired"
    assert unpaired["delta"] == pytest.approx(-0.1)
    assert unpaired["spread"] == pytest.approx(math.sqrt(0.02 + 0.02))
    single = ab.compare({0: 3.3}, {0: 3.0})
    assert single["delta"] == pytest.approx(0.3) and single["spread"] is None
    assert ab.compare({}, base)["delta"] is None


def test_diagnostic_sentences_come_from_the_numbers():
    results = {
        "baseline": {"entropy": [2.0, 1.0], "entropy_normalised": [0.9, 0.5], "first_token_value_ratio": [3.0, 5.0],
                     "first_token_attention": [0.4, 0.6], "first_token_attention_uniform_causal": 0.1,
                     "hidden_norm": [1.0, 2.0, 4.0], "token_similarity": [0.1, 0.5, 0.7], "shortcut": None},
        "resformer": {"entropy": [2.0, 1.24], "first_token_value_ratio": [1.0, 1.0],
                      "first_token_attention": [0.3, 0.3],
                      "hidden_norm": [1.0, 2.0, 3.0], "token_similarity": [0.1, 0.4, 0.4], "shortcut": None},
        "shortcut_depth": {"entropy": [2.0, 1.0], "hidden_norm": [1, 2, 4], "token_similarity": [0.1, 0.5, 0.7],
                           "shortcut": {"depth_labels": ["emb", "L1"], "depth_weights": [0.25, 0.75],
                                        "depth_map": [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]]}},
    }
    out = ab.diagnostic_sentences(results, list(results), "baseline")
    assert "baseline 1.500 nats; resformer 1.620 (+0.120: less concentrated)" in out["entropy"]
    assert "resformer 1.000 (−3.000: the first token's values stand out less)" in out["first_token_value_norm"]
    assert "less of an attention sink" in out["first_token_attention"] and "0.100" in out["first_token_attention"]
    assert "resformer 3.000 (−1.000: smaller)" in out["hidden_norm"]
    assert "shortcut_depth 4.000 (about the same)" in out["hidden_norm"]
    assert "hidden states more distinct" in out["token_similarity"]
    assert "emb 0.25, L1 0.75" in out["depth_weights"] and "most on L1" in out["depth_weights"]
    flat = {"depth_labels": ["emb", "L1", "L2"], "depth_weights": [0.34, 0.33, 0.33]}
    even = ab.diagnostic_sentences({"base": results["baseline"], "sc": {"shortcut": flat}}, ["base", "sc"], "base")
    assert "no depth is preferred" in even["depth_weights"] and "most on" not in even["depth_weights"]
    assert "varies with the token: L1 for 75%, emb for 25%" in out["depth_map_shortcut_depth"]


# ------------------------------------------------------------------------------------ config

def test_the_ablation_recipe_states_the_grid():
    a = ab.load_ablation(ROOT / "recipes" / "ablation.yaml")
    assert a.datasets == ["bach_chorales", "chorales_audio", "shakespeare"]
    assert list(a.config.variants) == ["baseline", "resformer", "learnable", "svformer", "shortcut_depth",
                                       "shortcut_full", "shortcut_depth_resformer"]
    assert a.config.seeds == [0, 1, 2] and a.config.baseline_steps == [1.0, 1.25, 1.5]
    runs = ab.plan_runs(a, Path("runs/ablation"))
    assert len(runs) == 81 == 3 * (7 * 3 + 2 * 3)
    assert len({r.folder for r in runs}) == 81
    assert {r.steps for r in runs} == {150, 188, 225}
    for recipe in a.recipes.values():  # equal steps, tokens and model on every dataset
        assert recipe.train.max_steps == 150 and recipe.train.batch_size == 8 and recipe.train.accelerator == "cpu"
        assert recipe.model["n_layer"] == 4 and recipe.model["n_embd"] == 128 and recipe.model["block_size"] == 256
        assert recipe.evaluate.split == "test"
        assert recipe.model_config("svformer", 10, 1).value_residual == "svformer"
    assert a.recipes["bach_chorales"].source == {"name": "bach_chorales", "limit": 200}  # from the tiny preset
    assert a.recipes["shakespeare"].tokenizer["vocab_size"] == 2000  # the dataset's override
    gpu = ab.load_ablation(ROOT / "recipes" / "ablation.yaml", preset="gpu")
    for recipe in gpu.recipes.values():
        assert recipe.train.accelerator == "gpu" and recipe.train.precision == "bf16-mixed"
        assert recipe.model["n_embd"] == 512 and recipe.train.max_steps > 150
    assert "limit" not in gpu.recipes["bach_chorales"].source
    assert ab.command_line(gpu, datasets=["shakespeare"]).endswith(
        "recipes/ablation.yaml --preset gpu --datasets shakespeare")


def test_inline_datasets_overrides_and_errors(tmp_path):
    cfg = {"datasets": {"inline": {"source": {"name": "folder", "path": str(tmp_path)},
                                   "tokenizer": {"domain": "text", "vocab_size": 300}},
                        "file": {"recipe": str(ROOT / "recipes" / "shakespeare.yaml"), "preset": "tiny",
                                 "source": {"limit": 3}, "overrides": {"train": {"lr": 1e-3}}}},
           "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
           "train": {"max_steps": 4, "lr": 3e-3, "min_lr": 3e-4},
           "variants": {"baseline": {}, "svformer": {"value_residual": "svformer"}}, "seeds": [0, 1],
           "baseline_steps": [1.0, 1.5]}
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    a = ab.load_ablation(path, overrides=["seeds=[5]"])
    assert a.config.seeds == [5]
    assert a.recipes["inline"].source["name"] == "folder" and a.recipes["inline"].train.max_steps == 4
    assert a.recipes["file"].source == {"name": "shakespeare", "limit": 3}
    assert a.recipes["file"].tokenizer["domain"] == "text" and a.recipes["file"].train.lr == 1e-3
    assert a.recipes["file"].model["n_embd"] == 32 and list(a.recipes["file"].variants) == ["baseline", "svformer"]
    names = [r.name for r in ab.plan_runs(a, tmp_path / "runs", ["inline"])]
    assert names == ["baseline-s5", "svformer-s5", "baseline-x1.5-s5"]
    assert ab.run_recipe_for(a.recipes["inline"], ab.plan_runs(a, tmp_path, ["inline"])[2]).train.max_steps == 6
    assert ab.load_ablation(path, datasets=["file"]).datasets == ["file"]
    for bad, match in ((["variants.broken={shortcut: sideways}"], "sideways"), (["baseline=nothing"], "baseline"),
                       (["baseline_steps=[1.25]"], "1.0"), (["datasets.inline.colour=red"], "colour"),
                       (["train.seed=3"], "seed"), (["datasets.inline.preset=tiny"], "recipe")):
        with pytest.raises(ConfigError, match=match):
            ab.load_ablation(path, overrides=bad)


def test_a_variant_may_train_at_its_own_learning_rate(tmp_path):
    """``variants.<name>.train`` changes that variant's runs only; steps and seeds stay shared."""
    cfg = {"datasets": {"inline": {"source": {"name": "folder", "path": str(tmp_path)},
                                   "tokenizer": {"domain": "text", "vocab_size": 300}}},
           "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
           "train": {"max_steps": 4, "lr": 3e-3, "min_lr": 3e-4},
           "variants": {"baseline": {}, "svformer": {"value_residual": "svformer"},
                        "svformer_lr1e-3": {"value_residual": "svformer", "train": {"lr": 1e-3, "min_lr": 1e-4}}},
           "seeds": [0], "baseline_steps": [1.0, 1.5]}
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    a = ab.load_ablation(path)
    recipe = a.recipes["inline"]
    assert recipe.variants["svformer_lr1e-3"] == {"value_residual": "svformer"}  # the model sees model fields only
    assert recipe.model_config("svformer_lr1e-3", 10, 1) == recipe.model_config("svformer", 10, 1)
    trains = {r.name: ab.run_recipe_for(recipe, r).train for r in ab.plan_runs(a, tmp_path / "runs")}
    assert (trains["svformer_lr1e-3-s0"].lr, trains["svformer_lr1e-3-s0"].min_lr) == (1e-3, 1e-4)
    assert trains["svformer-s0"].lr == trains["baseline-s0"].lr == trains["baseline-x1.5-s0"].lr == 3e-3
    assert {t.max_steps for n, t in trains.items() if "x1.5" not in n} == {4}
    assert a.config.out == "runs/ablation" and a.config.docs == "docs"  # the page's default folders
    for bad, match in ((["variants.svformer.train.max_steps=8"], "shared by every variant"),
                       (["variants.svformer.train.lrr=0.1"], "lrr"), (["variants.svformer.train=fast"], "mapping")):
        with pytest.raises(ConfigError, match=match):
            ab.load_ablation(path, overrides=bad)


def test_a_variants_learning_rate_reaches_its_checkpoint_and_stays_its_own(tmp_path):
    """Trained, the variant's own lr is recorded in its checkpoint; a second sitting keeps both runs."""
    from shortcutlm.artifacts.checkpoint import CheckpointFolder

    path = micro_config(tmp_path, tmp_path / "texts", seeds=[0], baseline_steps=[1.0],
                        variants={"baseline": {}, "slow": {"train": {"lr": 1e-4, "min_lr": 1e-5}}},
                        diagnostics={"enabled": False})
    lines: list[str] = []
    ab.run_ablation(ab.load_ablation(path), tmp_path / "runs", None, progress=False, echo=lines.append)
    saved = {name: CheckpointFolder(tmp_path / "runs" / "tinytext" / name).train_settings()["lr"]
             for name in ("baseline-s0", "slow-s0")}
    assert saved == {"baseline-s0": 3e-3, "slow-s0": 1e-4}
    again: list[str] = []
    ab.run_ablation(ab.load_ablation(path), tmp_path / "runs", None, progress=False, echo=again.append)
    assert "2 already trained, 0 to train" in again[0] and not any("FAILED" in line for line in again)


def test_the_deep_ablation_has_its_own_page_and_runs(tmp_path, monkeypatch):
    """``shortcutlm ablate recipes/ablation_deep.yaml`` never writes over docs/results.md or runs/ablation."""
    from shortcutlm.ablation import cli

    deep = ab.load_ablation(ROOT / "recipes" / "ablation_deep.yaml")
    assert (deep.config.out, deep.config.docs) == ("runs/ablation_deep", "docs/deep")
    assert deep.datasets == ["bach_chorales", "shakespeare", "chorales_audio"] and deep.config.seeds == [0, 1, 2]
    assert list(deep.config.variants) == ["baseline", "resformer", "svformer", "shortcut_full", "shortcut_last_layer",
                                          "shortcut_depth_resformer", "baseline_lr1e-3", "svformer_lr1e-3"]
    runs = ab.plan_runs(deep, Path(deep.config.out))
    assert len(runs) == 90 == 3 * (8 * 3 + 2 * 3) and sum(r.steps for r in runs) == 38_700
    for recipe in deep.recipes.values():
        assert recipe.model["n_layer"] >= 8 and recipe.train.precision == "bf16-mixed"
        assert (recipe.train.accelerator == "cpu"
                and recipe.model_config("shortcut_last_layer", 10, 1).shortcut == "last_layer")
    lrs = {r.variant: ab.run_recipe_for(deep.recipes[r.dataset], r).train.lr for r in runs}
    assert lrs["baseline_lr1e-3"] == lrs["svformer_lr1e-3"] == lrs["baseline"] / 2 == lrs["svformer"] / 2
    seen = {}
    monkeypatch.setattr(cli, "run_ablation", lambda ablation, out, docs, **kw: seen.update(out=out, docs=docs)
                        or {"datasets": {}})
    args = argparse.Namespace(recipe=str(ROOT / "recipes" / "ablation_deep.yaml"), preset=None, overrides=[],
                              datasets=None, out=None, docs=None, plan=False, report_only=True, no_progress=True)
    assert cli.run(args) == 0 and seen == {"out": Path("runs/ablation_deep"), "docs": Path("docs/deep")}
    args.recipe = str(ROOT / "recipes" / "ablation.yaml")
    args.preset = "gpu"
    cli.run(args)
    assert seen == {"out": Path("runs/ablation-gpu"), "docs": Path("docs/gpu")}  # the first ablation's as before


def test_tokens_per_run_use_the_models_default_block_size(tmp_path):
    from shortcutlm.models import GPTConfig

    cfg = {"datasets": {"inline": {"source": {"name": "folder", "path": str(tmp_path)},
                                   "tokenizer": {"domain": "text", "vocab_size": 300}}},
           "model": {"n_layer": 2, "n_head": 2, "n_embd": 32},  # no block_size: the model's default applies
           "train": {"max_steps": 4, "batch_size": 3, "accumulate": 2},
           "variants": {"baseline": {}}, "seeds": [0], "baseline_steps": [1.0]}
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    a = ab.load_ablation(path)
    section = ab.summarize("inline", a.recipes["inline"], [], a.config)
    assert section["tokens_per_run"] == 4 * 3 * 2 * GPTConfig().block_size > 0
    a = ab.load_ablation(path, overrides=["model.block_size=16"])
    assert ab.summarize("inline", a.recipes["inline"], [], a.config)["tokens_per_run"] == 4 * 3 * 2 * 16


def test_a_run_is_trained_when_training_finished_its_steps(tmp_path):
    run = ab.Run("d", "baseline", 0, 1.0, 3, tmp_path / "baseline-s0", 3)
    assert not ab.is_trained(run)
    run.folder.mkdir()
    (run.folder / "hparams.json").write_text(json.dumps({"finished": True, "step": 3}))
    assert not ab.is_trained(run)  # no weights
    CheckpointFolder(run.folder).weights_path.write_bytes(b"")
    assert ab.is_trained(run)
    assert not ab.is_trained(ab.Run("d", "baseline", 0, 1.5, 5, run.folder, 3))  # fewer steps than the run's
    (run.folder / "hparams.json").write_text(json.dumps({"finished": False, "step": 3}))
    assert not ab.is_trained(run)


# ------------------------------------------------------------------------------------ a micro grid

def micro_config(root: Path, texts: Path, **changes) -> Path:
    if not texts.is_dir():
        texts.mkdir(parents=True)
        for i in range(8):
            write_text8(texts / f"doc{i}.txt", chars=4000, seed=i)
    cfg = {"name": "micro",
           "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
           "train": {"max_steps": 3, "batch_size": 2, "warmup_steps": 1, "val_every": 100, "val_batches": 1,
                     "log_every": 1, "lr": 3e-3, "min_lr": 3e-4, "accelerator": "cpu"},
           "evaluate": {"split": "test", "batch_size": 8},
           "variants": {"baseline": {}, "shortcut_depth": {"shortcut": "depth"}},
           "seeds": [0, 1], "baseline_steps": [1, 1.5],
           "diagnostics": {"variants": ["baseline", "shortcut_depth"]},
           "findings": [{"variant": "shortcut_depth", "claim": "shortcuts lower the loss", "expect": "better"}],
           "datasets": {"tinytext": {"source": {"name": "folder", "path": str(texts)},
                                     "tokenizer": {"domain": "text", "vocab_size": 300}}}}
    cfg.update(changes)
    if "shortcut_depth" not in cfg["variants"]:
        cfg.pop("findings")
    path = root / "ablation.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    lines: list[str] = []
    a = ab.load_ablation(micro_config(root, root / "texts"))
    results = ab.run_ablation(a, root / "runs", root / "docs", progress=False, command="shortcutlm ablate micro.yaml",
                              echo=lines.append)
    return root, a, results, lines


def test_micro_grid_writes_the_page(micro):
    root, a, results, lines = micro
    runs = ab.plan_runs(a, root / "runs")
    assert [r.name for r in runs] == ["baseline-s0", "shortcut_depth-s0", "baseline-x1.5-s0",
                                      "baseline-s1", "shortcut_depth-s1", "baseline-x1.5-s1"]
    assert all(ab.is_trained(r) and (r.folder / ab.EVAL_FILE).is_file() for r in runs)
    assert json.loads((runs[2].folder / "hparams.json").read_text())["step"] == 5  # 1.5 × 3 steps, rounded half up
    assert any("[6/6] tinytext baseline-x1.5-s1" in line and "ETA" in line for line in lines)

    section = json.loads((root / "docs" / "results.json").read_text())["datasets"]["tinytext"]
    assert section == json.loads(json.dumps(ab.jsonable(results["datasets"]["tinytext"])))
    base, sc = section["variants"]["baseline"], section["variants"]["shortcut_depth"]
    assert base["n"] == sc["n"] == 2 and base["verdict"] == "reference"
    assert sc["delta"] == pytest.approx(statistics_mean([sc["losses"][s] - base["losses"][s] for s in ("0", "1")]))
    spread = sc["delta_spread"]
    assert spread > 0 and sc["delta_n"] == 2
    expected = "better" if sc["delta"] < -spread else "worse" if sc["delta"] > spread else "within spread"
    assert sc["verdict"] == expected  # the page's verdict follows its own numbers
    assert sc["params"] > base["params"] and sc["kv_ratio"] == 1.0 and base["bits_per_byte"]["n"] == 2
    assert base["sec_per_step"] > 0 and sc["step_time_ratio"] > 0
    # The valid split is evaluated beside the test split, cached apart, and shown in its own column.
    assert base["valid_loss"]["n"] == 2 and base["valid_loss"]["mean"] != base["loss_mean"]
    assert all((r.folder / "eval_valid.json").is_file() for r in runs)
    assert {r["run"]: r["valid_loss"] for r in section["runs"]}["baseline-s0"] == pytest.approx(
        json.loads((runs[0].folder / "eval_valid.json").read_text())["row"]["loss_nats"])
    # The table's step times are the side-by-side timing, not the runs' logged speed (kept apart).
    timing = section["step_timing"]
    assert set(timing["seconds"]) == {"baseline", "shortcut_depth"}
    assert all(len(t) == ab.STEP_TIMING_STEPS for t in timing["all_seconds"].values())
    assert sc["sec_per_step"] == timing["seconds"]["shortcut_depth"]
    assert sc["step_time_ratio"] == pytest.approx(timing["seconds"]["shortcut_depth"] / timing["seconds"]["baseline"])
    assert sc["sec_per_step_runs"] > 0 and sc["sec_per_step_runs"] != sc["sec_per_step"]
    assert [c["steps"] for c in section["baseline_curve"]] == [3, 5] and section["baseline_curve"][1]["n"] == 2
    assert sc["baseline_tokens_to_match"]["label"].endswith("×")
    assert len(section["runs"]) == 6 and all(r["status"] == "done" for r in section["runs"])

    md = (root / "docs" / "results.md").read_text()
    assert "Produced by: `shortcutlm ablate micro.yaml --datasets tinytext`" in md  # the command above the tables
    page = (root / "docs" / "results.html").read_text()  # the same page in HTML: the same tables and numbers
    assert read_html(page).tables == markdown_tables(md) and html_numbers(page) == markdown_numbers(md)
    assert "- command: `shortcutlm ablate micro.yaml`" in md
    assert md.count("| baseline | ") == 1  # the dataset's table
    assert md.count("| shortcut_depth | ") == 2  # the summary and the dataset's table
    assert "bits/byte" in md and "baseline tokens to match" in md and "(n=2)" in md
    assert "every variant in one process with steps interleaved" in md
    assert "| test loss | Δ vs baseline | verdict | valid loss |" in md
    assert f"**{sc['verdict']}**" in md if sc["verdict"] != "within spread" else "within spread" in md
    assert "![relative training loss](results/tinytext/relative_train_loss.png)" in md
    # The claim is checked by the same rule as the table, with the same numbers.
    finding = (f"- **shortcut_depth** against **baseline**: shortcuts lower the loss (expected: better). "
               f"Here: {sc['verdict']} on tinytext (")
    assert finding in md and md.index("## Findings") < md.index("## tinytext")
    assert ("it reproduces there" if sc["verdict"] == "better" else "it does not reproduce there") in md
    assert (root / "docs" / "results" / "tinytext" / "relative_train_loss.png").is_file()
    diag = section["diagnostics"]
    if diag["status"] == "done":  # compare_checkpoints is there: plots copied next to the page, sentences written
        assert (root / "docs" / "results" / "tinytext" / "diag_entropy.png").is_file()
        assert "](results/tinytext/diag_entropy.png)" in md and "Token-importance entropy" in md
        assert "shortcut_depth's shortcut spreads its attention over depth" in md
    else:
        assert diag["status"] == "unavailable" and "Skipped" in md


def statistics_mean(values):
    return sum(values) / len(values)


def test_a_second_invocation_trains_nothing(micro):
    root, a, _, _ = micro
    runs = ab.plan_runs(a, root / "runs")
    watched = [r.folder / name for r in runs for name in (WEIGHTS, ab.EVAL_FILE, "hparams.json")]
    before = {p: p.stat().st_mtime_ns for p in watched}
    lines: list[str] = []
    again = ab.run_ablation(ab.load_ablation(root / "ablation.yaml"), root / "runs", root / "docs", progress=False,
                            echo=lines.append)
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert "6 already trained, 0 to train" in lines[0]
    assert not any("side by side" in line for line in lines)  # the cached step timing is reused
    assert not any(": training" in line or ": evaluating" in line for line in lines)
    assert again["datasets"]["tinytext"]["variants"]["baseline"]["n"] == 2

    # A third seed in the YAML, not yet trained: the page renders with the runs marked pending.
    a3 = ab.load_ablation(root / "ablation.yaml", overrides=["seeds=[0,1,2]"])
    partial = ab.run_ablation(a3, root / "runs", root / "docs3", report_only=True, echo=lines.append)
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    section = partial["datasets"]["tinytext"]
    assert section["variants"]["shortcut_depth"]["n"] == 2 and section["variants"]["shortcut_depth"]["of"] == 3
    md = (root / "docs3" / "results.md").read_text()
    assert "(n=2/3)" in md and "pending (3 of 9 runs)" in md and "`shortcut_depth-s2`" in md


def test_a_page_rebuilt_without_the_run_folders_keeps_its_sections(micro, tmp_path):
    """``--report-only`` on a machine without the runs keeps the previous page's finished sections."""
    root, a, _, _ = micro
    docs = tmp_path / "docs"
    shutil.copytree(root / "docs", docs)
    written = json.loads((docs / "results.json").read_text())["created"]
    lines: list[str] = []
    rebuilt = ab.run_ablation(a, tmp_path / "no-runs", docs, report_only=True, echo=lines.append)
    section = rebuilt["datasets"]["tinytext"]
    assert section["kept_from"] == written and section["variants"]["baseline"]["n"] == 2
    assert any("its section is kept from the page written" in line for line in lines)
    assert "Kept from the page written" in (docs / "results.md").read_text()


def test_a_failing_run_is_recorded_and_the_others_go_on(micro, tmp_path, monkeypatch):
    from shortcutlm.run import training

    root, _, _, _ = micro
    out = tmp_path / "runs"
    shutil.copytree(root / "runs" / "tinytext" / "data", out / "tinytext" / "data")  # prepared once, reused
    path = micro_config(tmp_path, root / "texts", seeds=[0], baseline_steps=[1.0], diagnostics={"enabled": False},
                        variants={"svformer": {"value_residual": "svformer"}, "baseline": {}})
    real = training.train

    def flaky(recipe, variant, *args, **kwargs):
        if variant == "svformer":
            raise RuntimeError("out of luck")
        return real(recipe, variant, *args, **kwargs)

    monkeypatch.setattr(training, "train", flaky)
    lines: list[str] = []
    results = ab.run_ablation(ab.load_ablation(path), out, tmp_path / "docs", progress=False, echo=lines.append)
    section = results["datasets"]["tinytext"]
    failed = [r for r in section["runs"] if r["status"] == "failed"]
    assert [r["run"] for r in failed] == ["svformer-s0"] and "out of luck" in failed[0]["error"]
    assert section["variants"]["baseline"]["n"] == 1  # trained after the failure
    assert json.loads((out / "tinytext" / "svformer-s0" / ab.ERROR_FILE).read_text())["error"].endswith("out of luck")
    md = (tmp_path / "docs" / "results.md").read_text()
    assert "| svformer | – | failed (n=0/1) |" in md and "failed: `svformer-s0` — RuntimeError: out of luck" in md
    assert any("FAILED" in line for line in lines)

    # Changed settings: the finished run is not silently kept or overwritten; the page says what to do.
    changed = ab.run_ablation(ab.load_ablation(path, overrides=["train.lr=0.001"]), out, None, echo=lines.append)
    error = next(r for r in changed["datasets"]["tinytext"]["runs"] if r["run"] == "baseline-s0")["error"]
    assert "train.lr: 0.003 -> 0.001" in error and "delete that folder to retrain it" in error

    # A later report (no training) still shows the failure.
    assert ab.run_ablation(ab.load_ablation(path), out, None, report_only=True,
                           echo=lines.append)["datasets"]["tinytext"]["runs"][0]["status"] == "failed"

    # Ctrl-C stops the grid, but the page of what is finished is written first.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    (tmp_path / "docs" / "results.md").unlink()
    with pytest.raises(KeyboardInterrupt):
        ab.run_ablation(ab.load_ablation(path), out, tmp_path / "docs", progress=False, echo=lines.append)
    assert "| baseline | " in (tmp_path / "docs" / "results.md").read_text()
