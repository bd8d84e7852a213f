"""The page's findings (the papers' claims checked by the seed-paired rule) and another ablation's
section on a page, rendered from results alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from shortcutlm import ablation as ab
from shortcutlm.ablation.findings import compute_findings, render_findings
from shortcutlm.ablation.page import render_companion
from shortcutlm.artifacts.ablation import write_page
from shortcutlm.core.config_schema import ConfigError

LOSSES = {  # per dataset, variant -> seed -> test loss
    "music": {"baseline": {0: 2.00, 1: 2.10, 2: 2.05}, "svformer": {0: 1.90, 1: 2.01, 2: 1.94},
              "base_slow": {0: 2.20, 1: 2.31, 2: 2.24}, "sv_slow": {0: 2.25, 1: 2.30, 2: 2.33}},
    "text": {"baseline": {0: 4.00, 1: 4.10, 2: 4.05}, "svformer": {0: 4.05, 1: 4.05, 2: 4.10},
             "base_slow": {0: 4.20, 1: 4.22, 2: 4.30}, "sv_slow": {0: 4.21, 1: 4.20, 2: 4.33}},
}


def _entry(losses: dict[int, float], baseline: dict[int, float]) -> dict:
    cmp_ = ab.compare(losses, baseline)
    mean = sum(losses.values()) / len(losses)
    return {"n": len(losses), "of": 3, "failed": [], "loss_mean": mean, "loss_std": 0.05,
            "losses": {str(k): v for k, v in losses.items()}, "delta": cmp_["delta"], "delta_spread": cmp_["spread"],
            "verdict": ab.verdict(cmp_["delta"], cmp_["spread"]),
            "baseline_tokens_to_match": {"label": "1.20×", "complete": True}}


def fake_results(claims: list[dict]) -> dict:
    datasets = {}
    for name, variants in LOSSES.items():
        datasets[name] = {
            "variants": {v: _entry(seeds, variants["baseline"]) for v, seeds in variants.items()},
            "model": {"n_layer": 8, "n_embd": 128}, "train": {"max_steps": 400, "batch_size": 8,
                                                             "precision": "bf16-mixed"},
            "tokens_per_run": 819_200,
            # svformer's training loss leads the baseline's by 0.2 halfway and 0.05 at the end
            "relative_loss": {"svformer": {"steps": [100, 200, 300, 400], "delta": [-0.3, -0.2, -0.1, -0.05]},
                              "base_slow": {"steps": [100, 200, 300, 400], "delta": [0.3, 0.2, 0.15, 0.1]},
                              "sv_slow": {"steps": [100, 200, 300, 400], "delta": [0.2, 0.15, 0.12, 0.11]}},
        }
    return {"name": "deep", "description": "eight layers", "created": "2026-11-29 21:00:00 UTC",
            "baseline": "baseline", "seeds": [0, 1, 2], "command": "shortcutlm ablate deep.yaml",
            "variants": {v: {} for v in LOSSES["music"]}, "datasets": datasets, "claims": claims}


CLAIMS = [{"variant": "svformer", "claim": "trails at equal size", "expect": "worse", "against": None},
          {"variant": "sv_slow", "claim": "trails at the smaller rate too", "expect": "worse", "against": "base_slow",
           "beside": "svformer"}]


def test_a_finding_checks_its_claim_on_every_dataset_by_the_paired_rule():
    findings = compute_findings(fake_results(CLAIMS))
    sv, slow = findings
    music = sv["datasets"]["music"]
    diffs = [LOSSES["music"]["svformer"][s] - LOSSES["music"]["baseline"][s] for s in range(3)]
    assert music["delta"] == pytest.approx(sum(diffs) / 3) and music["verdict"] == "better"
    assert sv["datasets"]["text"]["verdict"] == "within spread"  # +0.017 ± 0.058
    assert (sv["held"], sv["of"]) == (0, 2)  # expected worse: held nowhere
    assert music["tokens_to_match"] == "1.20×"
    assert music["training_lead"] == {"half_step": 200, "half": pytest.approx(-0.2), "final_step": 400,
                                      "final": pytest.approx(-0.05)}
    # Against another variant: compared with that one, seed by seed, and the training-loss gap is theirs.
    assert slow["against"] == "base_slow"
    d = slow["datasets"]["music"]
    assert d["delta"] == pytest.approx(sum(LOSSES["music"]["sv_slow"][s] - LOSSES["music"]["base_slow"][s]
                                           for s in range(3)) / 3)
    assert "tokens_to_match" not in d  # the matched-loss view is the baseline's alone
    assert d["training_lead"]["final"] == pytest.approx(0.01) and d["training_lead"]["half"] == pytest.approx(-0.05)
    # Beside it, the same pair at the shared setting (svformer against the baseline).
    assert d["beside"]["delta"] == pytest.approx(music["delta"]) and d["beside"]["verdict"] == "better"
    assert "beside" not in sv["datasets"]["music"]


def test_the_findings_say_where_a_claim_reproduces():
    lines = render_findings(fake_results(CLAIMS))
    text = "\n".join(lines)
    assert lines[0] == "## Findings"
    assert ("- **svformer** against **baseline**: trails at equal size (expected: worse). Here: better on music "
            "(-0.100 ± 0.010") in text
    assert "it does not reproduce on any of the 2 datasets at this scale" in text
    assert ("within spread on music (+0.043 ± 0.050; beside it svformer against baseline: -0.100 ± 0.010 better, "
            "another verdict; training-loss difference") in text
    assert "training-loss difference -0.200 at step 200, -0.050 at step 400" in text
    assert render_findings(fake_results([])) == []


def test_findings_name_variants_of_the_grid(tmp_path):
    def config(findings):
        return {"datasets": {"x": {}}, "variants": {"baseline": {}, "svformer": {"value_residual": "svformer"}},
                "findings": findings}

    ok = ab.AblationConfig(**{**config([]), "findings": [ab.Finding("svformer", "c", "worse")]})
    assert ok.findings[0].against is None
    with pytest.raises(ConfigError, match="'resformer' is not one of the variants"):
        ab.AblationConfig(**config([ab.Finding("resformer", "c")]))
    with pytest.raises(ConfigError, match="'slow' is not one of the variants"):
        ab.AblationConfig(**config([ab.Finding("svformer", "c", against="slow")]))
    with pytest.raises(ConfigError, match="'fast' is not one of the variants"):
        ab.AblationConfig(**config([ab.Finding("svformer", "c", beside="fast")]))
    with pytest.raises(ConfigError, match="expect must be 'better' or 'worse'"):
        ab.Finding("svformer", "c", expect="equal")


def test_another_ablations_summary_and_findings_join_the_page(tmp_path):
    docs, deep = tmp_path / "docs", tmp_path / "docs" / "deep"
    companion = fake_results(CLAIMS)
    write_page(deep, "# deep\n", companion)
    lines = render_companion(deep, docs)
    text = "\n".join(lines)
    assert lines[0] == "## Also: deep" and "eight layers" in text
    assert "[deep/results.md](deep/results.md)" in text
    assert "8 layers × width 128, 400 steps × batch 8 (819,200 tokens per run), bf16-mixed" in text
    assert "### Summary" in text and "### Findings" in text and "\n## " not in text
    row = "| svformer | -0.100 ± 0.010 **better** · 1.20× tokens | +0.017 ± 0.058 within spread · 1.20× tokens |"
    assert row in text
    missing = "\n".join(render_companion(tmp_path / "nowhere", docs))
    assert "Not run yet" in missing and "results.json` does not exist" in missing


def test_the_shipped_ablations_state_their_claims():
    root = Path(__file__).resolve().parents[1]
    first = ab.load_ablation(root / "recipes" / "ablation.yaml", datasets=["shakespeare"]).config
    deep = ab.load_ablation(root / "recipes" / "ablation_deep.yaml", datasets=["shakespeare"]).config
    # the deeper grid, the grid over depth and the longer training each have a section on docs/results.md
    assert first.see_also == ["docs/deep", "docs/depth", "docs/length"]
    pairs = {(f.variant, f.against) for f in deep.findings}
    assert [f.beside for f in deep.findings if f.variant == "svformer_lr1e-3"] == ["svformer"]
    assert {("svformer", None), ("svformer_lr1e-3", "baseline_lr1e-3"), ("shortcut_last_layer", None),
            ("shortcut_full", None), ("resformer", None)} <= pairs


def test_the_page_says_how_fast_the_baseline_was_still_learning(tmp_path):
    from shortcutlm.ablation.curves import still_falling
    from shortcutlm.ablation.page import render_validation_curves

    curve = {"steps": [50, 100, 150, 200, 250, 300, 350, 400], "loss": [5.3, 4.9, 4.8, 4.65, 4.55, 4.5, 4.46, 4.42],
             "seeds": [0, 1, 2]}
    f = still_falling(curve)
    assert f["first_quarter"] == pytest.approx(0.5) and f["last_quarter"] == pytest.approx(0.08)
    section = {"command": "shortcutlm ablate deep.yaml", "validation_curves": {
        "baseline": curve, "svformer": {**curve, "loss": [v - 0.1 for v in curve["loss"]]}}}
    docs = tmp_path / "docs"
    lines = render_validation_curves("music", section, "baseline", docs, docs / "results" / "music")
    text = "\n".join(lines)
    assert (docs / "results" / "music" / "validation_loss.png").stat().st_size > 0
    assert "![validation loss](results/music/validation_loss.png)" in text
    assert ("fell 0.500 nats from step 50 to step 150 and 0.080 over the last 100 steps, ending at 4.420: still "
            "falling at the end, at 16% of its early pace") in text
    flat = {"baseline": {**curve, "loss": [5.3, 4.9, 4.8, 4.65, 4.55, 4.4, 4.4, 4.41]}}
    assert "no longer falling at the end" in "\n".join(
        render_validation_curves("music", {**section, "validation_curves": flat}, "baseline", docs, docs / "r"))
