"""The page's findings: each claim of the papers (the ablation file's ``findings``) checked on every
dataset by the seed-paired rule, and said in one sentence: where it reproduces, where it does not.

Computed from the collected results alone (the per-seed losses and the relative training-loss
curves), so a page rebuilt from ``results.json`` says the same.
"""
from __future__ import annotations

from typing import Any

from shortcutlm.ablation.markdown import fmt_pm
from shortcutlm.ablation.stats import compare


def _losses(entry: dict[str, Any] | None) -> dict[int, float]:
    return {int(seed): loss for seed, loss in ((entry or {}).get("losses") or {}).items() if loss is not None}


def _lead(section: dict[str, Any], variant: str, against: str, baseline: str) -> dict[str, Any] | None:
    """The smoothed training-loss difference of ``variant`` minus ``against`` at half the steps and at the
    end (seed means): a lead that shrinks as training goes on is an early-training effect."""
    rel = section.get("relative_loss") or {}

    def curve(name: str) -> tuple[list[int], list[float]] | None:
        if name == baseline:
            other = next(iter(rel.values()), None)
            return (other["steps"], [0.0] * len(other["steps"])) if other else None
        c = rel.get(name)
        return (c["steps"], c["delta"]) if c else None

    mine, theirs = curve(variant), curve(against)
    if not mine or not theirs or mine[0] != theirs[0] or len(mine[0]) < 2:
        return None
    steps, diff = mine[0], [a - b for a, b in zip(mine[1], theirs[1])]
    half = min(range(len(steps)), key=lambda i: abs(steps[i] - steps[-1] / 2))
    return {"half_step": int(steps[half]), "half": diff[half], "final_step": int(steps[-1]), "final": diff[-1]}


def compute_findings(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per claim and dataset: the difference ± spread, its verdict, the matched-loss multiple (against the
    baseline only) and the training-loss lead; plus on how many datasets the claim held."""
    base = results["baseline"]
    findings = []
    for claim in results.get("claims") or []:
        variant, against = claim["variant"], claim.get("against") or base
        per_dataset = {}
        for name, section in results["datasets"].items():
            variants = section.get("variants", {})
            if variant not in variants or against not in variants:
                continue
            cmp_ = compare(_losses(variants[variant]), _losses(variants[against]))
            row: dict[str, Any] = {key: cmp_[key] for key in ("delta", "spread", "n", "verdict")}
            if against == base:
                row["tokens_to_match"] = (variants[variant].get("baseline_tokens_to_match") or {}).get("label")
            if claim.get("beside"):
                other = compare(_losses(variants.get(claim["beside"])), _losses(variants[base]))
                row["beside"] = {key: other[key] for key in ("delta", "spread", "verdict")}
            lead = _lead(section, variant, against, base)
            if lead:
                row["training_lead"] = lead
            per_dataset[name] = row
        decided = [r for r in per_dataset.values() if r["delta"] is not None]
        findings.append({**claim, "against": against, "datasets": per_dataset,
                         "held": sum(r["verdict"] == claim["expect"] for r in decided), "of": len(decided)})
    return findings


def _dataset_clause(name: str, row: dict[str, Any], beside: str | None, base: str) -> str:
    if row["delta"] is None:
        return f"pending on {name}"
    text = f"{row['verdict']} on {name} ({fmt_pm(row['delta'], row['spread'], 3, signed=True)}"
    other = row.get("beside")
    if other and other["delta"] is not None:
        same = "the same verdict" if other["verdict"] == row["verdict"] else "another verdict"
        text += (f"; beside it {beside} against {base}: {fmt_pm(other['delta'], other['spread'], 3, signed=True)}"
                 f" {other['verdict']}, {same}")
    if row.get("tokens_to_match", "").endswith("×"):
        text += f", baseline tokens to match {row['tokens_to_match']}"
    lead = row.get("training_lead")
    if lead:
        text += (f"; training-loss difference {lead['half']:+.3f} at step {lead['half_step']}, "
                 f"{lead['final']:+.3f} at step {lead['final_step']}")
    return text + ")"


def render_findings(results: dict[str, Any], heading: str = "## Findings") -> list[str]:
    """One sentence per claim, its verdicts filled in from the runs."""
    findings = compute_findings(results)
    if not findings:
        return []
    lines = [heading, "",
             "Each claim is what a paper reports (typed in the ablation file); everything after it is computed from "
             "the runs by the verdict rule above (test loss of the variant minus the one it is compared with, "
             "nats per token, paired by seed). The training-loss differences are the smoothed training curves "
             "(seed means) at half the steps and at the end: a gap that closes over training is an early-training "
             "effect.", ""]
    for f in findings:
        clauses = "; ".join(_dataset_clause(name, row, f.get("beside"), results["baseline"])
                            for name, row in f["datasets"].items()) or "no runs yet"
        if f["of"] == 0:
            outcome = "not decided yet"
        elif f["of"] == 1:
            outcome = "it reproduces there" if f["held"] else "it does not reproduce there at this scale"
        elif f["held"] == f["of"]:
            outcome = f"it reproduces on all {f['of']} datasets"
        elif f["held"] == 0:
            outcome = f"it does not reproduce on any of the {f['of']} datasets at this scale"
        else:
            outcome = f"it reproduces on {f['held']} of {f['of']} datasets"
        lines += [f"- **{f['variant']}** against **{f['against']}**: {f['claim']} (expected: {f['expect']}). "
                  f"Here: {clauses}; {outcome}.", ""]
    return lines


__all__ = ["compute_findings", "render_findings"]
