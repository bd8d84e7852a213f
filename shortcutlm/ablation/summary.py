"""One dataset's section of the results: per variant, the loss over seeds, the difference from the
baseline and its verdict, the costs (parameters, step time, KV cache) and the matched-loss multiple."""
from __future__ import annotations

import re
import statistics
from typing import Any
from collections.abc import Iterable

from shortcutlm.ablation.config import AblationConfig, context_length
from shortcutlm.ablation.markdown import machine_label
from shortcutlm.ablation.runs import steps_for
from shortcutlm.ablation.stats import compare, matched_multiple, mean_std
from shortcutlm.run.recipe import Recipe


def summarize(dataset: str, recipe: Recipe, records: list[dict[str, Any]], cfg: AblationConfig) -> dict[str, Any]:
    """Per variant: loss mean ± std, difference from the baseline, verdict, costs, matched-loss multiple."""
    base = cfg.baseline
    main = [r for r in records if r["multiple"] == 1.0]
    done = [r for r in main if r["status"] == "done"]
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for r in done:
        by_variant.setdefault(r["variant"], {})[r["seed"]] = r
    base_losses = {s: r["loss"] for s, r in by_variant.get(base, {}).items() if r.get("loss") is not None}

    # The baseline at each multiple of the steps (seed means), for the matched-loss view.
    curve_rows: list[dict[str, Any]] = []
    for multiple in sorted(cfg.baseline_steps):
        rows = [r for r in records if r["variant"] == base and r["multiple"] == multiple and r["status"] == "done"]
        m, s, n = mean_std([r.get("loss") for r in rows])
        steps = steps_for(recipe.train.max_steps, multiple)
        curve_rows.append({"multiple": multiple, "steps": steps, "actual_multiple": steps / recipe.train.max_steps,
                           "tokens": rows[0].get("tokens_seen") if rows else None,
                           "loss_mean": m, "loss_std": s, "n": n, "of": len(cfg.seeds)})
    curve = [(c["actual_multiple"], c["loss_mean"]) for c in curve_rows if c["loss_mean"] is not None]
    complete_curve = all(c["n"] == len(cfg.seeds) for c in curve_rows)

    base_rows = list(by_variant.get(base, {}).values())
    variants = {variant: _variant_entry(variant, cfg, main, by_variant.get(variant, {}), base_losses, base_rows,
                                        curve, complete_curve) for variant in cfg.variants}
    train = recipe.train
    block = context_length(recipe, base)
    return {
        "domain": (recipe.tokenizer or {}).get("domain"),
        "model": recipe.model, "train": {k: getattr(train, k) for k in (
            "max_steps", "batch_size", "accumulate", "lr", "min_lr", "warmup_steps", "weight_decay", "precision",
            "accelerator")},
        "tokens_per_run": train.max_steps * train.batch_size * train.accumulate * block,
        "evaluate": {"split": recipe.evaluate.split, "batch_size": recipe.evaluate.batch_size,
                     "max_batches": recipe.evaluate.max_batches},
        "variants": variants, "baseline_curve": curve_rows, "runs": records,
        "machines": sorted({machine_label(r["machine"]) for r in records if r.get("machine")}),
        "trained_between": [min(dates), max(dates)] if (dates := [r["trained_at"] for r in records
                                                                 if r.get("trained_at")]) else None,
    }


def _median_of(rows: Iterable[dict[str, Any]], key: str) -> float | None:
    values: list[float] = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _variant_entry(variant: str, cfg: AblationConfig, main: list[dict[str, Any]], by_seed: dict[int, dict[str, Any]],
                   base_losses: dict[int, float], base_rows: list[dict[str, Any]],
                   curve: list[tuple[float, float]], complete_curve: bool) -> dict[str, Any]:
    """One variant's row of the summary: its losses over seeds, costs and, against the baseline, its
    seed-paired difference, verdict and the baseline tokens that match its loss."""
    base = cfg.baseline
    rows = list(by_seed.values())
    failed = [r for r in main if r["variant"] == variant and r["status"] == "failed"]
    losses = {r["seed"]: r["loss"] for r in rows if r.get("loss") is not None}
    m, s, n = mean_std(list(losses.values()))
    entry: dict[str, Any] = {
        "n": n, "of": len(cfg.seeds), "loss_mean": m, "loss_std": s,
        "losses": {str(k): v for k, v in sorted(losses.items())},
        "failed": [{"run": r["run"], "error": r.get("error")} for r in failed],
        "params": _median_of(rows, "params"), "sec_per_step": _median_of(rows, "sec_per_step"),
        "kv_attention_bytes": _median_of(rows, "kv_attention_bytes"),
        "kv_total_bytes": _median_of(rows, "kv_total_bytes"),
    }
    for key in ("valid_loss", "bits_per_byte", "bits_per_second"):
        bm, bs, bn = mean_std([r.get(key) for r in rows])
        if bn:
            entry[key] = {"mean": bm, "std": bs, "n": bn}
    for key in ("per_codebook", "per_family"):
        names = sorted({name for r in rows for name in r.get(key, {})}, key=_natural)
        if names:
            entry[key] = {}
            for name in names:
                gm, gs, gn = mean_std([r.get(key, {}).get(name) for r in rows])
                entry[key][name] = {"mean": gm, "std": gs, "n": gn}
    entry["step_time_ratio"] = _ratio(entry["sec_per_step"], _median_of(base_rows, "sec_per_step"))
    entry["kv_ratio"] = _ratio(entry["kv_attention_bytes"], _median_of(base_rows, "kv_attention_bytes"))
    entry["params_ratio"] = _ratio(entry["params"], _median_of(base_rows, "params"))
    if variant != base:
        cmp_ = compare(losses, base_losses)
        entry.update({"delta": cmp_["delta"], "delta_spread": cmp_["spread"], "delta_n": cmp_["n"],
                      "delta_method": cmp_["method"], "verdict": cmp_["verdict"]})
        value, label = matched_multiple(m, curve)
        if len(cfg.baseline_steps) < 2:
            label = "not run (one baseline multiple)"
        entry["baseline_tokens_to_match"] = {"multiple": value, "label": label, "complete": complete_curve}
    else:
        entry.update({"verdict": "reference", "baseline_tokens_to_match": {"multiple": 1.0, "label": "1×",
                                                                            "complete": complete_curve}})
    return entry


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _ratio(value: float | None, ref: float | None) -> float | None:
    if value is None or not ref:
        return None
    return value / ref
