"""``shortcutlm ablate`` on a mixture recipe: the joint model against single-domain models trained on
the same tokens of their domain, and on the same total tokens (the experiment "does sharing help?").

The fast tests check the planning: which runs, and how many steps each single-domain run gets from
the joint run's token counts. The slow test runs the whole mode at a toy size and checks that the
page and its JSON are made from the runs' own artifacts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from shortcutlm.ablation.sharing import (ARMS, count_window, domain_steps, is_mixture_recipe, load_sharing,
                                         plan_sharing)
from shortcutlm.core.config_schema import ConfigError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "multimodal.yaml"
PARTS = {"chorales": {"domain": "midi"}, "chorales_audio": {"domain": "acoustic"},
         "shakespeare": {"domain": "text"}}


def tiny_count(seed: int) -> dict:
    """What counting the tiny preset's joint run of seed 0 gave (200 steps × 8 windows × 256 targets
    = 409,600 targets), with seed 1 and 2 moved by a few hundred tokens, as another seed's draws move them."""
    shift = 300 * seed
    return {"targets": 409_600, "domains": {"midi": {"tokens": 83_189 + shift, "markers": 238},
                                            "acoustic": {"tokens": 142_565 - shift, "markers": 23},
                                            "text": {"tokens": 183_582, "markers": 3}}}


def test_the_plan_matches_each_single_domain_model_to_the_joint_runs_counted_tokens(tmp_path):
    sharing = load_sharing(RECIPE, "tiny")
    assert sharing.seeds == [0, 1, 2] and sharing.variants == ["baseline", "shortcut", "value_residual"]
    plan = plan_sharing(sharing, tmp_path, tiny_count, PARTS)
    assert len(plan) == 3 * 3 * (1 + 3 + 3)  # seeds × variants × (joint, 3 domains × 2 arms)
    assert [p.arm for p in plan[:3]] == ["joint"] * 3  # a seed's joint runs come first
    steps = {(p.arm, p.part, p.run.seed): p.run.steps for p in plan if p.run.variant == "baseline"}
    # 83,189 / 2,048 = 40.6 -> 41; 142,565 / 2,048 = 69.6 -> 70; 183,582 / 2,048 = 89.6 -> 90
    assert steps[("domain_tokens", "chorales", 0)] == 41
    assert steps[("domain_tokens", "chorales_audio", 0)] == 70
    assert steps[("domain_tokens", "shakespeare", 0)] == 90
    # seed 2: 83,789 / 2,048 = 40.9 -> 41; 141,965 / 2,048 = 69.3 -> 69 (each seed its own count)
    assert steps[("domain_tokens", "chorales", 2)] == 41
    assert steps[("domain_tokens", "chorales_audio", 2)] == 69
    assert all(steps[("total_tokens", part, s)] == 200 for part in PARTS for s in (0, 1, 2))
    assert all(steps[("joint", None, s)] == 200 for s in (0, 1, 2))
    by_folder = {p.run.folder.relative_to(tmp_path).as_posix(): p for p in plan}
    audio = by_folder["chorales_audio/shortcut-domain-s0"]
    assert (audio.tokens, audio.matched, audio.run.variant) == (70 * 2048, 142_565, "shortcut")
    assert by_folder["shakespeare/value_residual-total-s1"].tokens == 409_600
    assert by_folder["joint/baseline-s2"].matched == 409_600
    assert len(by_folder) == len(plan)  # every run has its own folder


def test_domain_steps_round_to_the_nearest_step_and_never_reach_zero():
    recipe = load_sharing(RECIPE, "tiny").recipe  # batch 8 × block 256 = 2,048 targets per step
    assert [domain_steps(n, recipe) for n in (0, 1023, 1025, 2048, 3071, 3073)] == [1, 1, 1, 1, 1, 2]


def test_the_total_tokens_arm_can_be_narrowed_and_seeds_chosen(tmp_path):
    sharing = load_sharing(RECIPE, "tiny", ["seeds=[0, 1]", "same_total=[baseline]", "train.max_steps=100"])
    plan = plan_sharing(sharing, tmp_path, tiny_count, PARTS)
    assert sharing.recipe.train.max_steps == 100
    assert len(plan) == 2 * (3 + 3 * 3 + 3 * 1)
    assert {p.run.variant for p in plan if p.arm == "total_tokens"} == {"baseline"}
    assert {p.run.steps for p in plan if p.arm == "total_tokens"} == {100}
    assert set(ARMS) == {p.arm for p in plan}


@pytest.mark.parametrize("override, message", [
    ("seeds=[0, 0]", "seeds must be distinct"),
    ("seeds=3", "give a non-empty list"),
    ("same_total=[nope]", "no variant(s) ['nope']"),
])
def test_bad_settings_are_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        load_sharing(RECIPE, "tiny", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_mixture_recipe_selects_the_sharing_experiment():
    assert is_mixture_recipe(RECIPE)
    assert not is_mixture_recipe(RECIPE.parent / "ablation.yaml")
    assert not is_mixture_recipe(RECIPE.parent / "shakespeare.yaml")


def test_each_target_counts_for_its_domain_and_an_eos_for_the_document_it_closes():
    # ids 0-9: domain 0, ids 10-19: domain 1; 20 = EOS (no domain); 21, 22 = the markers of domains 0 and 1
    owner = np.array([0] * 10 + [1] * 10 + [-1, 0, 1])
    markers_ids = np.array([21, 22])
    tokens, markers = np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64)
    #          input only | d0 body | EOS | marker 1, d1 body | EOS | marker 0 | d0 body
    window = np.array([3, 4, 5, 20, 22, 11, 12, 13, 20, 21, 7])
    left = count_window(window, owner, markers_ids, tokens, markers)
    assert left == 0
    assert tokens.tolist() == [2 + 1 + 1, 3 + 1]  # d0: 4, 5, its EOS, 7; d1: 11, 12, 13, its EOS
    assert markers.tolist() == [1, 1]
    assert tokens.sum() + markers.sum() == len(window) - 1  # every target counted once
    # an EOS with no domain before it in the window stays unattributed
    assert count_window(np.array([20, 20, 21, 1]), owner, markers_ids, tokens, markers) == 1


# ------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_the_mode_trains_the_grid_and_writes_the_page_from_the_runs(tmp_path, monkeypatch):
    from shortcutlm.artifacts.checkpoint import CheckpointFolder
    from shortcutlm.cli import main

    recipe = {
        "name": "toymix", "description": "three domains, toy size",
        "mixture": {"temperature": 0.5, "parts": {
            "chorales": {"source": {"name": "bach_chorales", "limit": 8}, "tokenizer": {"domain": "midi"}},
            "chorales_audio": {"source": {"name": "chorales_audio", "limit": 6},
                               "tokenizer": {"domain": "acoustic", "bandwidth": 1.5, "layout": "flatten",
                                             "weights": "mel_kmeans", "kmeans_iters": 3}},
            "shakespeare": {"source": {"name": "shakespeare", "limit": 3},
                            "tokenizer": {"domain": "text", "vocab_size": 400}}}},
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64, "dropout": 0.0},
        "variants": {"baseline": {}, "shortcut": {"shortcut": "depth"}},
        "train": {"max_steps": 6, "batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1, "val_every": 3,
                  "val_batches": 1, "log_every": 1, "accelerator": "cpu"},
        "evaluate": {"split": "test", "batch_size": 4, "max_batches": 4},
    }
    monkeypatch.chdir(tmp_path)
    Path("toymix.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / "runs"
    args = ["ablate", "toymix.yaml", "--set", "seeds=[0,1]", "--set", "same_total=[baseline]", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    page = (tmp_path / "docs" / "toymix" / "results.md").read_text(encoding="utf-8")
    results = json.loads((tmp_path / "docs" / "toymix" / "results.json").read_text(encoding="utf-8"))
    assert len(results["runs"]) == 2 * (2 + 3 * 2 + 3) and all(r["status"] == "done" for r in results["runs"])
    per_step = 4 * 64
    for seed in ("0", "1"):  # the count is the joint checkpoint's own tokens, split by domain
        count = results["token_counts"][seed]
        assert count["targets"] == 6 * per_step
        assert count["targets"] == sum(d["tokens"] + d["markers"] for d in count["domains"].values()) \
            + count["unattributed"]
    assert results["joint_count_checks"] and all(c["equal"] for c in results["joint_count_checks"])
    for r in results["runs"]:
        folder = out / r["run"]
        hparams = CheckpointFolder(folder).hparams_or_none()
        assert hparams.tokens_seen == r["steps"] * per_step == r["tokens"]
        eval_rows = json.loads((folder / "eval.json").read_text(encoding="utf-8"))
        rows = eval_rows.get("rows") or [eval_rows["row"]]
        domain_of = {"chorales": "midi", "chorales_audio": "acoustic", "shakespeare": "text"}
        for part, entry in r["domains"].items():
            row = next(x for x in rows if x["domain"] == domain_of[part])
            assert entry["loss"] == pytest.approx(row["loss_nats"])  # the page's number is the evaluation's
        if r["arm"] == "domain_tokens":
            matched = results["token_counts"][str(r["seed"])]["domains"][domain_of[r["part"]]]["tokens"]
            assert r["matched"] == matched and r["steps"] == max(1, round(matched / per_step))
        if r["arm"] == "joint":
            assert set(r["domains"]) == set(domain_of)
            # the part of the loss that is probability on other domains' ids: positive, and part of the loss
            assert all(0 < e["off_domain"] < e["loss"] for e in r["domains"].values())
    shakespeare = results["domains"]["shakespeare"]["variants"]["baseline"]
    joint = shakespeare["arms"]["joint"]["loss"]["by_seed"]
    separate = shakespeare["arms"]["domain_tokens"]["loss"]["by_seed"]
    paired = shakespeare["joint_vs"]["domain_tokens"]
    diffs = [joint[s] - separate[s] for s in ("0", "1")]
    assert paired["method"] == "paired" and paired["delta"] == pytest.approx(sum(diffs) / 2)
    assert (tmp_path / "docs" / "toymix" / "results" / "sharing" / "test_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Summary: joint minus separate" in page and "bits/byte" in page and "bits/second" in page
    assert f"{shakespeare['arms']['joint']['loss']['mean']:.4f}" in page
    assert "shortcutlm ablate toymix.yaml --set 'seeds=[0,1]' --set 'same_total=[baseline]'" in page
    assert str(tmp_path) not in page and str(tmp_path) not in json.dumps(results)
    assert "the same-total-tokens arm was run for baseline only" in page
    # a second sitting trains nothing and rewrites the same numbers
    before = {r["run"]: CheckpointFolder(out / r["run"]).weights_stamp() for r in results["runs"]}
    assert main(args) == 0
    assert {r: CheckpointFolder(out / r).weights_stamp() for r in before} == before
