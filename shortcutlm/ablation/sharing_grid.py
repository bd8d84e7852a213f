"""Training the sharing experiment (:mod:`~shortcutlm.ablation.sharing`) and collecting its results.

The mixture is prepared once (each part in its own folder, then mixed); the runs are trained one
after another with the single-domain ablation's trainer and records, seed by seed, so a grid
stopped part-way is balanced and a second sitting trains only what is missing. Each finished run
is evaluated once (cached): the joint checkpoint on every domain's own test split, a single-domain
checkpoint on its part's. :func:`collect_sharing` turns the run folders into ``results.json``'s
dictionary; :mod:`~shortcutlm.ablation.sharing_page` renders it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

from shortcutlm.ablation.collect import _data_summary, device
from shortcutlm.ablation.grid import Progress, _quiet_lightning, _train, clock, record_failure
from shortcutlm.ablation.markdown import machine_label
from shortcutlm.ablation.records import run_record
from shortcutlm.ablation.runs import (Run, check_settings, evaluate_rows, evaluate_run, is_trained, run_recipe_for,
                                      short_error, weights_key)
from shortcutlm.ablation.sharing import (ARMS, JOINT, Sharing, SharingRun, count_domain_tokens, count_file,
                                         data_folder, part_domains, part_recipe, plan_sharing)
from shortcutlm.ablation.stats import VERDICT_RULE, compare, mean_std
from shortcutlm.artifacts.ablation import (OFF_DOMAIN_FILE, clear_run_error, read_cache, read_run_error,
                                             read_run_record, write_cache)
from shortcutlm.run.recipe import Recipe

__all__ = ["run_sharing", "collect_sharing", "run_recipe", "run_data"]


def run_recipe(sharing: Sharing, out: Path, item: SharingRun) -> Recipe:
    """The recipe a run trains with: the joint recipe, or its part's single-domain recipe, at the run's
    seed and step count."""
    base = sharing.recipe if item.arm == JOINT else part_recipe(sharing.recipe, str(item.part), run_data(out, item))
    return run_recipe_for(base, item.run)


def run_data(out: Path, item: SharingRun) -> Path:
    """The shard folder a run trains on and is evaluated on: the mixture, or its part's own folder."""
    mixture = data_folder(out)
    return mixture if item.arm == JOINT else mixture / "parts" / str(item.part)


def run_sharing(sharing: Sharing, out: str | Path, progress: bool = True, report_only: bool = False,
                echo: Callable[[str], None] | None = None, command: str = "") -> dict[str, Any]:
    """Prepare the mixture, train and evaluate what is missing, and return the collected results."""
    from shortcutlm.run.joint import ensure_mixture

    echo = echo or (lambda text: print(text, flush=True))
    out = Path(out)
    failures: dict[str, str] = {}
    if not report_only:
        _quiet_lightning()
        echo(f"prepare the mixture -> {data_folder(out)}")
        ensure_mixture(sharing.recipe, data_folder(out), workers=0, progress=progress)
        plan = plan_sharing(sharing, out)
        runs = [item.run for item in plan]
        pending = {str(r.folder) for r in runs if not is_trained(r)}
        echo(f"sharing experiment {sharing.recipe.name}: {len(plan)} runs, {len(runs) - len(pending)} already "
             f"trained, {len(pending)} to train ({sum(r.steps for r in runs if str(r.folder) in pending):,} steps)")
        bar = Progress(runs, pending, echo)
        for index, item in enumerate(plan, 1):
            run, recipe, data_dir = item.run, run_recipe(sharing, out, item), run_data(out, item)
            try:
                check_settings(run, recipe, data_dir)
                if str(run.folder) in pending:
                    bar.line(index, run, f"training ({item.arm})")
                    bar.trained(run, _train(run, recipe, data_dir, progress))
                else:
                    bar.skipped(run)
                _evaluate(item, recipe, data_dir)
                clear_run_error(run.folder)
            except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the grid goes on
                record_failure(run, exc, failures, bar, echo, f"[{index}/{len(plan)}]")
    return collect_sharing(sharing, out, command, failures)


def _evaluate(item: SharingRun, recipe: Recipe, data_dir: Path) -> list[dict[str, Any]]:
    if item.arm == JOINT:
        return evaluate_rows(item.run, recipe, data_dir, device(recipe))
    return [evaluate_run(item.run, recipe, data_dir, device(recipe))]


# ------------------------------------------------------------------------------ off-domain probability

OFF_DOMAIN_VERSION = 1


def off_domain_nats(run: Run, recipe: Recipe, data_dir: Path) -> dict[str, float | None]:
    """Per domain: how much of the joint model's test loss is probability put on other domains' ids.

    Over the same windows and targets as the domain's evaluation, the mean of −log P(this domain's
    ids or the EOS): 0 when the model never strays from the domain, and at most its loss. The rest
    of the loss is how well it ranks the domain's own ids. Cached in the run folder.
    """
    import torch

    from shortcutlm.artifacts.checkpoint import load_folder
    from shortcutlm.datasets.batches import eval_batches
    from shortcutlm.datasets.mixture import domain_folder
    from shortcutlm.tokenizers.composite import CompositeTokenizer

    e = recipe.evaluate
    key = {"version": OFF_DOMAIN_VERSION, "weights": weights_key(run.folder), "split": e.split,
           "batch_size": e.batch_size, "max_batches": e.max_batches}
    path = run.folder / OFF_DOMAIN_FILE
    found = read_cache(path, key, "nats")
    if found is not None:
        return found
    ckpt = load_folder(run.folder, torch.device("cpu"))
    joint = ckpt.tokenizer
    if not isinstance(joint, CompositeTokenizer):
        return {}
    model = ckpt.model.eval()
    result: dict[str, float | None] = {}
    for domain in joint.parts:
        view = joint.with_domain(domain)
        start, stop = joint.part_range(domain)
        allowed = torch.tensor(list(range(start, stop)) + [joint.eos_id])
        ignored = torch.tensor(view.ignored_ids())
        batches = eval_batches(domain_folder(data_dir, domain), e.split, model.config.block_size, e.batch_size)
        total, count = 0.0, 0
        with torch.no_grad():
            for index, batch in enumerate(batches):
                if e.max_batches is not None and index >= e.max_batches:
                    break
                batch = torch.as_tensor(batch)
                inputs, targets = batch[..., :-1], batch[..., 1:]
                logits = model(inputs).float()
                inside = torch.log_softmax(logits, -1)[..., allowed].logsumexp(-1)
                valid = ~torch.isin(targets, ignored)
                total += float(-inside[valid].sum())
                count += int(valid.sum())
        result[domain] = total / count if count else None
    write_cache(path, key, "nats", result)
    return result


# ------------------------------------------------------------------------------ collecting

def _record(sharing: Sharing, out: Path, item: SharingRun, domains: dict[str, str],
            failures: dict[str, str]) -> dict[str, Any]:
    """What results.json keeps of one run: its arm, steps, tokens, cost, load and per-domain loss."""
    run = item.run
    name = f"{run.dataset}/{run.name}"
    base = {"run": name, "arm": item.arm, "part": item.part, "variant": run.variant, "seed": run.seed,
            "steps": run.steps, "tokens": item.tokens, "matched": item.matched}
    error = failures.get(str(run.folder)) or (None if is_trained(run) else read_run_error(run.folder))
    if not is_trained(run):
        return {**base, "status": "failed" if error else "pending", **({"error": error} if error else {})}
    recipe, data_dir = run_recipe(sharing, out, item), run_data(out, item)
    try:
        check_settings(run, recipe, data_dir)
        rows = _evaluate(item, recipe, data_dir)
    except Exception as exc:  # noqa: BLE001
        return {**base, "status": "failed", "error": error or short_error(exc)}
    record = run_record(run, recipe, rows[0])  # cost, params, speed, KV cache (its loss is replaced below)
    info = read_run_record(run.folder)
    machine = info.get("machine") or {}
    losses = {}
    for row in rows:
        part = domains.get(str(row.get("domain"))) if item.arm == JOINT else item.part
        if part is None:
            continue
        entry = {"loss": row.get("loss", row.get("loss_nats")), "targets": row.get("tokens"),
                 "complete": row.get("complete")}
        for key in ("bits_per_byte", "bits_per_second"):
            if row.get(key) is not None:
                entry[key] = row[key]
        if row.get("per_codebook"):
            entry["per_codebook"] = {k: s.get("loss_nats") for k, s in row["per_codebook"].items() if s.get("tokens")}
        losses[part] = entry
    if item.arm == JOINT:
        for domain, nats in off_domain_nats(run, recipe, data_dir).items():
            if domains.get(domain) in losses and nats is not None:
                losses[domains[domain]]["off_domain"] = nats
    return {**base, "status": "done", "params": record["params"], "tokens_seen": record["tokens_seen"],
            "sec_per_step": record["sec_per_step"], "train_wall_s": record["train_wall_s"],
            "trained_at": record["trained_at"], "machine": machine_label(machine) if machine else None,
            "threads": machine.get("threads"), "cpu_count": machine.get("cpu_count"),
            "load_avg_before": machine.get("load_avg_before"), "load_avg_after": machine.get("load_avg_after"),
            "eval_s": sum(r.get("elapsed_s") or 0.0 for r in rows), "domains": losses}


def _by_seed(records: list[dict[str, Any]], arm: str, part: str, variant: str, key: str = "loss") -> dict[int, float]:
    found = {}
    for r in records:
        if r["status"] != "done" or r["arm"] != arm or r["variant"] != variant:
            continue
        if arm != JOINT and r["part"] != part:
            continue
        value = (r["domains"].get(part) or {}).get(key)
        if value is not None:
            found[r["seed"]] = value
    return found


def _per_codebook(records: list[dict[str, Any]], arm: str, part: str, variant: str) -> dict[str, Any]:
    """The loss of each codebook (acoustic tokens), mean over seeds; empty where the tokens have none."""
    found: dict[str, dict[int, float]] = {}
    for r in records:
        if r["status"] != "done" or r["arm"] != arm or r["variant"] != variant or (arm != JOINT and r["part"] != part):
            continue
        for name, loss in ((r["domains"].get(part) or {}).get("per_codebook") or {}).items():
            if loss is not None:
                found.setdefault(name, {})[r["seed"]] = loss
    return {name: _stat(values) for name, values in sorted(found.items())}


def _stat(values: dict[int, float]) -> dict[str, Any]:
    m, s, n = mean_std(list(values.values()))
    return {"mean": m, "std": s, "n": n, "by_seed": {str(k): v for k, v in sorted(values.items())}}


def _gain(variant: dict[int, float], baseline: dict[int, float]) -> dict[int, float]:
    """Per seed: variant minus baseline (the seeds both have)."""
    return {s: variant[s] - baseline[s] for s in sorted(set(variant) & set(baseline))}


def _part_section(sharing: Sharing, part: str, record: dict[str, Any], records: list[dict[str, Any]],
                  counts: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One domain: per variant and arm the loss (and the domain's measure) over seeds; the joint model
    against each single-domain arm, paired by seed; and each variant's gain over the baseline, joint
    against separate."""
    metric = next((key for key in ("bits_per_byte", "bits_per_second")
                   if any(key in (r.get("domains", {}).get(part) or {}) for r in records if r["status"] == "done")),
                  None)
    variants: dict[str, Any] = {}
    for variant in sharing.variants:
        arms = {}
        for arm in ARMS:
            losses = _by_seed(records, arm, part, variant)
            mine = [r for r in records if r["arm"] == arm and r["variant"] == variant
                    and (arm == JOINT or r["part"] == part)]
            entry = {"loss": _stat(losses), "runs": len(mine),
                     "done": sum(1 for r in mine if r["status"] == "done"),
                     "steps": sorted({r["steps"] for r in mine}), "tokens": sorted({r["tokens"] for r in mine}),
                     "failed": [{"run": r["run"], "error": r.get("error")} for r in mine if r["status"] == "failed"]}
            if metric:
                entry[metric] = _stat(_by_seed(records, arm, part, variant, metric))
            if arm == JOINT:
                entry["off_domain"] = _stat(_by_seed(records, arm, part, variant, "off_domain"))
            codebooks = _per_codebook(records, arm, part, variant)
            if codebooks:
                entry["per_codebook"] = codebooks
            arms[arm] = entry
        joint = _by_seed(records, JOINT, part, variant)
        versus = {}
        for arm in ("domain_tokens", "total_tokens"):
            separate = _by_seed(records, arm, part, variant)
            if separate:
                versus[arm] = compare(joint, separate)  # joint minus separate: negative = sharing helped
        variants[variant] = {"arms": arms, "joint_vs": versus}
    gains = {}
    base = sharing.baseline
    for variant in sharing.variants:
        if variant == base:
            continue
        joint_gain = _gain(_by_seed(records, JOINT, part, variant), _by_seed(records, JOINT, part, base))
        separate_gain = _gain(_by_seed(records, "domain_tokens", part, variant),
                              _by_seed(records, "domain_tokens", part, base))
        gains[variant] = {"joint": compare(_by_seed(records, JOINT, part, variant),
                                           _by_seed(records, JOINT, part, base)),
                          "separate": compare(_by_seed(records, "domain_tokens", part, variant),
                                              _by_seed(records, "domain_tokens", part, base)),
                          "joint_minus_separate": compare(joint_gain, separate_gain) if joint_gain and separate_gain
                          else None}
    share = {str(seed): c["domains"][record["domain"]] | {"of": c["targets"]} for seed, c in counts.items()}
    return {"domain": record["domain"], "probability": record["probability"], "train_tokens": record["train_tokens"],
            "metric": metric, "data": _data_summary(data_folder_of(record)), "variants": variants,
            "variant_gains": gains, "joint_tokens_by_seed": share}


def data_folder_of(record: dict[str, Any]) -> Path:
    return Path(record["folder"])


def _cost(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm and in all: runs, optimiser steps, tokens and training wall time of the finished runs."""
    cost: dict[str, Any] = {}
    for arm in list(ARMS) + ["all"]:
        mine = [r for r in records if r["status"] == "done" and (arm == "all" or r["arm"] == arm)]
        cost[arm] = {"runs": len(mine), "steps": sum(r["steps"] for r in mine),
                     "tokens": sum(r["tokens"] for r in mine),
                     "train_wall_s": sum(r.get("train_wall_s") or 0.0 for r in mine),
                     "eval_s": sum(r.get("eval_s") or 0.0 for r in mine)}
    return cost


def _load(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The machine's load while the runs trained: the 1-minute load average before and after each run."""
    done = [r for r in records if r["status"] == "done" and r.get("load_avg_before")]
    if not done:
        return None
    one_min = [v for r in done for v in (r["load_avg_before"][0], (r.get("load_avg_after") or [None])[0])
               if v is not None]
    return {"runs": len(done), "min": min(one_min), "max": max(one_min),
            "median": sorted(one_min)[len(one_min) // 2], "threads": sorted({r.get("threads") for r in done}),
            "cpu_count": sorted({r.get("cpu_count") for r in done})}


def collect_sharing(sharing: Sharing, out: Path, command: str, failures: dict[str, str] | None = None
                    ) -> dict[str, Any]:
    """Everything the page shows, from the run folders (finished runs only; the rest pending)."""
    from shortcutlm.bench.common import machine

    out = Path(out)
    failures = failures or {}
    mixture = data_folder(out)
    records_by_part = part_domains(mixture, sharing)
    domains = {r["domain"]: part for part, r in records_by_part.items()}
    counts = {seed: count_domain_tokens(mixture, sharing.recipe, seed, count_file(out, seed)) for seed in sharing.seeds}
    plan = plan_sharing(sharing, out, lambda seed: counts[seed])
    records = [_record(sharing, out, item, domains, failures) for item in plan]
    joint_checks = []
    for r in records:  # the replayed count against what the joint checkpoint says it read
        if r["arm"] == JOINT and r["status"] == "done":
            joint_checks.append({"run": r["run"], "tokens_seen": r["tokens_seen"],
                                 "counted": counts[r["seed"]]["targets"],
                                 "equal": r["tokens_seen"] == counts[r["seed"]]["targets"]})
    recipe = sharing.recipe
    s = recipe.train
    dates = [r["trained_at"] for r in records if r.get("trained_at")]
    return {
        "name": f"{recipe.name}: does sharing help?", "description": " ".join(recipe.description.split()),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z").strip(), "command": command, "preset": sharing.preset,
        "overrides": sharing.overrides, "machine": machine_label(machine()), "seeds": sharing.seeds,
        "variants": recipe.variants, "baseline": sharing.baseline, "same_total": sharing.same_total,
        "arms": ARMS, "verdict_rule": VERDICT_RULE,
        "model": recipe.model, "train": {k: getattr(s, k) for k in ("max_steps", "batch_size", "accumulate", "lr",
                                                                    "min_lr", "warmup_steps", "precision")},
        "evaluate": {"split": recipe.evaluate.split, "batch_size": recipe.evaluate.batch_size,
                     "max_batches": recipe.evaluate.max_batches},
        "mixture": {"temperature": recipe.mixture.get("temperature")},
        "token_counts": {str(k): v for k, v in counts.items()}, "joint_count_checks": joint_checks,
        "domains": {part: _part_section(sharing, part, rec, records, counts) for part, rec in records_by_part.items()},
        "cost": _cost(records), "load": _load(records),
        "trained_between": [min(dates), max(dates)] if dates else None,
        "runs": records,
    }


def estimate(records: list[dict[str, Any]], left_steps: int) -> str | None:
    """Time left at the pace of the finished runs (None before any finished)."""
    timed = [(r["steps"], r["train_wall_s"]) for r in records if r.get("train_wall_s")]
    if not timed or not left_steps:
        return None
    return clock(left_steps * sum(w for _, w in timed) / sum(st for st, _ in timed))


def failed_count(results: dict[str, Any]) -> int:
    return sum(1 for r in results["runs"] if r["status"] == "failed")
