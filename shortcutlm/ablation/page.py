"""The results page: ``<docs>/results.md`` (plots under ``<docs>/results/<dataset>/``), the same page as
``<docs>/results.html``, and ``<docs>/results.json``, rendered from the collected results alone (no run
folder is read here, except the diagnostics plots it copies next to the page)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from shortcutlm.ablation.curves import plot_relative_loss, plot_validation_loss, still_falling
from shortcutlm.ablation.depth import plot_by_depth
from shortcutlm.ablation.gap import plot_gap
from shortcutlm.ablation.markdown import (bold_verdict, display_path, fmt, fmt_pm, machine_label, nbytes,
                                          param_count, ratio_text, table)
from shortcutlm.ablation.findings import render_findings
from shortcutlm.artifacts.ablation import PAGE_JSON, PAGE_MD, read_previous_results, write_page
from shortcutlm.artifacts.checkpoint import METRICS
from shortcutlm.report.html_page import markdown_page

NOISY_IQR = 0.3

#: The dataset's own measure beside the loss, by what its evaluations measured (the first found): the
#: loss of each codebook where the tokens have codebooks, else bits per byte where the split counts
#: bytes, else bits per second where it counts seconds. Read from the results: the page never asks
#: which domain a dataset is.
DATASET_METRICS = (("per_codebook", "loss per codebook (nats)"), ("bits_per_byte", "bits/byte"),
                   ("bits_per_second", "bits/second"))
DECIMALS = {"bits_per_byte": 3, "bits_per_second": 1}


def _count(entry: dict[str, Any]) -> str:
    return f"n={entry['n']}" if entry["n"] == entry["of"] else f"n={entry['n']}/{entry['of']}"


def _dataset_metric(variants: dict[str, Any]) -> tuple[str | None, str]:
    """(the results key of the dataset's own measure, its column heading), per :data:`DATASET_METRICS`."""
    for key, heading in DATASET_METRICS:
        if any(key in e for e in variants.values()):
            return key, heading
    return None, "domain metric"


def _metric_cell(entry: dict[str, Any], key: str | None) -> str:
    if key is None or key not in entry:
        return "–"
    if key == "per_codebook":
        return " · ".join(f"{name.replace('codebook_', 'cb')} {fmt(s['mean'], 3)}"
                          for name, s in entry["per_codebook"].items())
    return fmt_pm(entry[key]["mean"], entry[key]["std"], DECIMALS[key])


def render_dataset(name: str, section: dict[str, Any], cfg_baseline: str, docs: Path, out: Path) -> list[str]:
    """One dataset's section: what was trained, the variants' table and its notes, the baseline at more
    steps, the relative training loss, the validation curves and the diagnostics."""
    assets = docs / "results" / name
    lines = [f"## {name}", ""] + _setting_lines(section)
    lines += table(*_variants_table(section, cfg_baseline)) + [""]
    notes = _variant_notes(section, cfg_baseline)
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += _matched_loss_lines(name, section, cfg_baseline)
    lines += _by_depth_lines(name, section, docs, assets)
    lines += _relative_loss_lines(name, section, docs, assets)
    lines += render_validation_curves(name, section, cfg_baseline, docs, assets)
    lines += _gap_lines(name, section, docs, assets)
    lines += render_diagnostics(name, section.get("diagnostics"), section["command"], docs, assets)
    return lines


def _setting_lines(section: dict[str, Any]) -> list[str]:
    """The data, the model and its training, the machines, and the command that produced the section."""
    variants, domain, model, train = section["variants"], section["domain"], section["model"], section["train"]
    lines = []
    data = section.get("data")
    if data:
        splits = data["splits"]
        counts = ", ".join(f"{k} {v.get('tokens', 0):,} tokens / {v.get('documents', 0):,} docs"
                           for k, v in splits.items())
        lines += [f"Data: source `{(data.get('source') or {}).get('name')}`, {domain} tokens "
                  f"(vocabulary {data.get('vocab_size')}, {data.get('n_streams')} stream(s)"
                  + (f", codes from the {data['codec']}" if data.get("codec") else "") + f"); {counts}.", ""]
    lines += [f"Model: {model.get('n_layer')} layers, width {model.get('n_embd')}, {model.get('n_head')} heads, "
              f"context {model.get('block_size')}; {train['max_steps']} steps × batch {train['batch_size']}"
              f"{' × ' + str(train['accumulate']) if train['accumulate'] > 1 else ''} = "
              f"{section['tokens_per_run']:,} tokens per run; lr {train['lr']:g} → {train['min_lr']:g}, "
              f"{train['precision']}. Loss: nats per token on the `{section['evaluate']['split']}` split"
              + (f" (first {section['evaluate']['max_batches']} batches)" if section['evaluate']['max_batches'] else
                 " (one exact pass)") + "; the verdicts and the matched-loss view use it"
              + (", and `valid loss` is the same measure on the `valid` split" if any(
                  "valid_loss" in e for e in variants.values()) else "") + ".", ""]
    if section.get("machines"):
        when = section.get("trained_between")
        lines += [f"Trained on: {'; '.join(section['machines'])}"
                  + (f", runs finished {when[0].replace('T', ' ')} – {when[1].replace('T', ' ')}" if when else "")
                  + ".", ""]
    if section.get("kept_from"):
        lines += [f"Kept from the page written {section['kept_from']}: this dataset's run folders were not on the "
                  "machine that last wrote this page, and its settings are unchanged.", ""]
    return lines + [f"Produced by: `{section['command']}`", ""]


def _variants_table(section: dict[str, Any], cfg_baseline: str) -> tuple[list[str], list[list[str]]]:
    """(header, one row per variant): loss, its difference from the baseline and the verdict, the
    dataset's own measure, step time, KV cache and the baseline tokens to match."""
    variants = section["variants"]
    split = section["evaluate"]["split"]
    with_valid = any("valid_loss" in e for e in variants.values())
    metric, heading = _dataset_metric(variants)
    header = ["variant", "params", f"{split} loss", "Δ vs baseline", "verdict"] \
        + (["valid loss"] if with_valid else []) + [heading, "step time", "KV cache", "baseline tokens to match"]
    rows = []
    for variant, e in variants.items():
        if e["n"] == 0:
            status = "failed" if e["failed"] else "pending"
            rows.append([variant, param_count(e["params"]), f"{status} ({_count(e)})"] + ["–"] * (len(header) - 3))
            continue
        loss = f"{fmt_pm(e['loss_mean'], e['loss_std'])} ({_count(e)})"
        if variant == cfg_baseline:
            delta, verdict_text = "reference", "—"
        else:
            delta = fmt_pm(e.get("delta"), e.get("delta_spread"), 4, signed=True)
            if e.get("delta_method") == "unpaired":
                delta += " (unpaired)"
            verdict_text = bold_verdict(e["verdict"])
        valid_cell = [fmt_pm(e["valid_loss"]["mean"], e["valid_loss"]["std"]) if "valid_loss" in e else "–"]
        rows.append([variant, _params_cell(e, variant != cfg_baseline), loss, delta, verdict_text]
                    + (valid_cell if with_valid else [])
                    + [_metric_cell(e, metric), *_cost_cells(e, variant != cfg_baseline), _match_cell(e)])
    return header, rows


def _params_cell(e: dict[str, Any], versus_baseline: bool) -> str:
    versus = ratio_text(e["params_ratio"], "more", "fewer", 0.0005) if versus_baseline else ""
    return param_count(e["params"]) + versus


def _cost_cells(e: dict[str, Any], versus_baseline: bool) -> list[str]:
    """Step time and KV cache, each with its ratio to the baseline's."""
    step = (f"{e['sec_per_step'] * 1000:.0f} ms" if e["sec_per_step"] is not None else "–")
    if versus_baseline:
        step += ratio_text(e["step_time_ratio"], "slower", "faster")
    kv = nbytes(e["kv_attention_bytes"])
    if versus_baseline:
        kv += ratio_text(e["kv_ratio"], "larger", "smaller", 0.001)
    if e.get("kv_total_bytes") and e.get("kv_attention_bytes") and e["kv_total_bytes"] > e["kv_attention_bytes"]:
        kv += f" + {nbytes(e['kv_total_bytes'] - e['kv_attention_bytes'])} shortcut features"
    return [step, kv]


def _match_cell(e: dict[str, Any]) -> str:
    match = e["baseline_tokens_to_match"]
    return match["label"] + ("" if match["complete"] or match["label"] == "pending" else " (partial)")


def _variant_notes(section: dict[str, Any], cfg_baseline: str) -> list[str]:
    """Failed and pending runs, losers, how step time was measured, and the slower variants."""
    variants = section["variants"]
    notes = []
    failed = [f for e in variants.values() for f in e["failed"]]
    extra_failed = [r for r in section["runs"] if r["multiple"] != 1.0 and r["status"] == "failed"]
    for f in failed + [{"run": r["run"], "error": r.get("error")} for r in extra_failed]:
        notes.append(f"failed: `{f['run']}` — {f['error']}")
    pending = [r["run"] for r in section["runs"] if r["status"] == "pending"]
    if pending:
        notes.append(f"pending ({len(pending)} of {len(section['runs'])} runs): "
                     + ", ".join(f"`{p}`" for p in pending[:12]) + (" …" if len(pending) > 12 else "")
                     + ". Run the command again to train them.")
    losers = [v for v, e in variants.items() if e.get("verdict") == "worse"]
    if losers:
        notes.append("worse than the baseline here: " + ", ".join(f"**{v}**" for v in losers) + ".")
    timing = section.get("step_timing")
    noisy = [r["run"] for r in section["runs"] if (r.get("step_time_iqr") or 0) > NOISY_IQR]
    if timing:
        runs_speed = [e["sec_per_step_runs"] for e in variants.values() if e.get("sec_per_step_runs")]
        spread = (f"; the runs' own logged speed varied {max(runs_speed) / min(runs_speed):.1f}× between variants "
                  "as the machine's load changed") if len(runs_speed) > 1 else ""
        notes.append(f"step time: {timing['method']}, measured {timing['measured'].replace('T', ' ')} "
                     f"(`{PAGE_JSON}` keeps each run's logged speed as `sec_per_step_runs`{spread}).")
    elif noisy:
        notes.append(f"step times are noisy: in {len(noisy)} of {len(section['runs'])} runs the logged tokens/s vary "
                     f"by more than {NOISY_IQR:.0%} (interquartile range over median), as on a machine busy with "
                     "other work; read the step-time ratios with care.")
    slower = [v for v, e in variants.items() if (e.get("step_time_ratio") or 1) > 1.05 and v != cfg_baseline]
    if slower:
        notes.append("slower per step than the baseline: " + ", ".join(
            f"{v} ({variants[v]['step_time_ratio']:.2f}×)" for v in slower) + ".")
    return notes


def _matched_loss_lines(name: str, section: dict[str, Any], cfg_baseline: str) -> list[str]:
    """The baseline at more steps, and how "baseline tokens to match" is read from it."""
    curve = section["baseline_curve"]
    lines = [f"### {name}: the baseline at more steps (matched loss)", "",
             f"Produced by: `{section['command']}` (the `{cfg_baseline}-x…` runs).", ""]
    rows = [[f"{c['actual_multiple']:.4g}×", str(c["steps"]), f"{c['tokens']:,}" if c.get("tokens") else "–",
             f"{fmt_pm(c['loss_mean'], c['loss_std'])} (n={c['n']}/{c['of']})" if c["n"]
             else f"pending (n=0/{c['of']})"]
            for c in curve]
    lines += table(["steps (× the variants')", "steps", "tokens", "test loss"], rows)
    lines += ["", "\"Baseline tokens to match\" interpolates the baseline's seed-mean loss linearly between these "
              "step multiples: the tokens the baseline needs to reach a variant's mean loss, as a multiple of the "
              "tokens every variant was trained on (`< 1×`: the variant is worse than the baseline at equal tokens; "
              f"`> {max(c['actual_multiple'] for c in curve):.4g}×`: better than the baseline gets here).", ""]
    if section["variants"].get(cfg_baseline, {}).get("n", 0) and not all(c["n"] for c in curve):
        lines += ["- the matched-loss view is partial until every baseline multiple has finished.", ""]
    return lines


def _by_depth_lines(name: str, section: dict[str, Any], docs: Path, assets: Path) -> list[str]:
    """Each reading's seed-paired difference from the baseline of its own depth, by depth, in a table and
    a plot (a grid whose variants differ in their number of layers)."""
    series = section.get("by_depth")
    if not series:
        return []
    depths = sorted({p["depth"] for points in series.values() for p in points})
    rows = []
    for reading, points in series.items():
        at = {p["depth"]: p for p in points}
        rows.append([reading] + [f"{fmt_pm(at[d]['delta'], at[d]['spread'], 3, signed=True)} ({at[d]['verdict']}, "
                                 f"n={at[d]['n']})" if d in at else "–" for d in depths])
    png = plot_by_depth(series, assets / "delta_by_depth.png", f"{name}: difference from the baseline by depth")
    return ([f"### {name}: the difference from the baseline by depth", "",
             "Test loss minus the plain GPT's of the same depth (nats per token, mean ± std of the per-seed "
             "differences): does the gain grow with depth?", ""]
            + table(["reading"] + [f"{d} layers" for d in depths], rows)
            + ["", f"![difference by depth]({png.relative_to(docs).as_posix()})", ""])


def _relative_loss_lines(name: str, section: dict[str, Any], docs: Path, assets: Path) -> list[str]:
    """The training loss of every variant relative to the baseline's, plotted, with its last step in words."""
    rel = section.get("relative_loss")
    if not rel:
        return []
    png = plot_relative_loss(rel, assets / "relative_train_loss.png", f"{name}: training loss relative to the baseline")
    lines = [f"### {name}: training loss relative to the baseline", "",
             f"Produced by: `{section['command']}` (from each run's `{METRICS}`).", "",
             f"![relative training loss]({png.relative_to(docs).as_posix()})", ""]
    finals = sorted(rel.items(), key=lambda kv: kv[1]["final"])
    return lines + ["At the last logged step the smoothed training loss is "
                    + "; ".join(f"{v} {abs(c['final']):.3f} {'below' if c['final'] < 0 else 'above'} the baseline's"
                                for v, c in finals) + " (seed means, paired by seed).", ""]


def render_validation_curves(name: str, section: dict[str, Any], cfg_baseline: str, docs: Path,
                             assets: Path) -> list[str]:
    """Every variant's validation loss over the steps, and how fast the baseline's was still falling."""
    curves = section.get("validation_curves")
    if not curves:
        return []
    png = plot_validation_loss(curves, assets / "validation_loss.png", f"{name}: validation loss over training")
    lines = [f"### {name}: validation loss over training", "",
             f"Produced by: `{section['command']}` (each run's `val/loss` in `{METRICS}`, mean over seeds).", "",
             f"![validation loss]({png.relative_to(docs).as_posix()})", ""]
    base = curves.get(cfg_baseline)
    if base:
        f = still_falling(base)
        quarter = f["to_step"] // 4
        pace = (f"{f['last_quarter'] / f['first_quarter']:.0%} of its early pace" if f["first_quarter"] > 0
                else "while it rose early on")
        trend = (f"still falling at the end, at {pace}" if f["last_quarter"] > 0
                 else "no longer falling at the end")
        n = len(base["seeds"])
        lines += [f"The baseline's validation loss (mean of {n} seed{'s' * (n > 1)}) fell {f['first_quarter']:.3f} "
                  f"nats from step {f['from_step']} to step {f['from_step'] + quarter} and {f['last_quarter']:.3f} "
                  f"over the last {quarter} steps, ending at {f['final']:.3f}: {trend}.", ""]
    return lines


def _gap_lines(name: str, section: dict[str, Any], docs: Path, assets: Path) -> list[str]:
    """Each variant's seed-paired gap in validation loss at every validation step, its plot, and whether
    it widens, holds or closes from a quarter of the way in to the end."""
    gaps = section.get("validation_gap")
    if not gaps:
        return []
    steps = sorted({p["step"] for entry in gaps.values() for p in entry["points"]})
    at = {v: {p["step"]: p for p in entry["points"]} for v, entry in gaps.items()}

    def cell(point: dict[str, Any] | None) -> str:
        return ("–" if point is None
                else f"{fmt_pm(point['delta'], point['spread'], signed=True)} {bold_verdict(point['verdict'])}")

    rows = [[str(step)] + [cell(at[v].get(step)) for v in gaps] for step in steps]
    png = plot_gap(gaps, assets / "validation_gap.png", f"{name}: the gap in validation loss over training")
    lines = [f"### {name}: the gap over training", "",
             "Validation loss minus the baseline's at each validation step (nats per token, mean ± std of the "
             f"per-seed differences, with the verdict rule above). Produced by: `{section['command']}`.", ""]
    lines += table(["step"] + list(gaps), rows)
    lines += ["", f"![the gap over training]({png.relative_to(docs).as_posix()})", ""]
    for variant, entry in gaps.items():
        t = entry["trend"]
        if t["change"] is None:
            lines.append(f"- **{variant}**: too few seeds to read a trend.")
            continue
        lines.append(f"- **{variant}**: the gap **{t['reading']}** from step {t['from_step']} to step {t['to_step']} "
                     f"(its change, seed by seed: {fmt_pm(t['change'], t['spread'], signed=True)} nats, "
                     f"n={t['n']}; widens or closes only when the change is larger than its spread).")
    return lines + [""]


def render_diagnostics(name: str, diag: dict[str, Any] | None, command: str, docs: Path,
                       assets: Path) -> list[str]:
    lines = [f"### {name}: attention concentration and shortcut depth (diagnostics)", ""]
    if diag is None:
        return lines + ["Not computed in this sitting (interrupted); run the command again.", ""]
    status = diag.get("status")
    if status == "disabled":
        note = diag.get("note") or "disabled in the ablation file (`diagnostics.enabled: false`)"
        return lines + [f"Not run: {note}.", ""]
    if status == "unavailable":
        return lines + [f"Skipped: {diag['note']}.", ""]
    if status == "pending":
        return lines + [f"Pending: needs the seed-{diag['seed']} checkpoints of the baseline and at least one other "
                        f"variant (missing: {', '.join(diag.get('missing', [])) or '–'}).", ""]
    if status == "failed":
        return lines + [f"Failed: {diag['error']}", ""]
    lines += [f"Produced by: `{command}` — `shortcutlm.run.diagnostics.compare_checkpoints` on the seed-{diag['seed']} "
              f"checkpoints of {', '.join(diag['labels'])}"
              + (f" (not yet trained: {', '.join(diag['missing'])})" if diag.get("missing") else "") + ".", ""]
    sentences = dict(diag.get("sentences") or {})
    for plot_name, src in (diag.get("plots") or {}).items():
        src = Path(src)
        if not src.is_file():
            continue
        dest = assets / f"diag_{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        lines += [f"![{plot_name}]({dest.relative_to(docs).as_posix()})", ""]
        if plot_name in sentences:
            lines += [sentences.pop(plot_name), ""]
    lines += [text for text in sentences.values()] + ([""] if sentences else [])
    if diag.get("json"):
        lines += [f"Numbers: `{display_path(Path(diag['json']))}`.", ""]
    return lines


def render_markdown(results: dict[str, Any], docs: Path, out: Path) -> str:
    machine_info = results["machine"]
    lines = ["# Ablation results", "",
             "Every number and figure on this page was produced by `shortcutlm ablate`; nothing is typed in by hand. "
             "Re-running the command keeps finished runs and cached evaluations, trains what is missing and "
             "rewrites this page.", "",
             f"- command: `{results['command']}`",
             f"- written: {results['created']} on {machine_label(machine_info)}",
             f"- seeds: {', '.join(str(s) for s in results['seeds'])} (the seed sets the model's initialisation "
             "and the order of the training batches; seed s of every variant sees the same batches)",
             "- variants: " + "; ".join(f"`{k}` {_variant_text(v)}" for k, v in results["variants"].items()),
             f"- verdict: {results['verdict_rule']}",
             "- step time: every variant's forward, backward and AdamW step at the dataset's model and batch, "
             "timed side by side in one process after training (steps interleaved, median), with its ratio to "
             "the baseline's; where that timing is missing, the runs' logged tokens/s (median over seeds). "
             "KV cache: the attention keys and values "
             "of a batch-1 fp32 cache at full context, measured from the cache tensors, with the ratio to the "
             "baseline's (the `full` shortcut also caches its per-depth features, listed beside it; "
             "`last_layer`'s per-depth keys and values are the final layer's own, counted in it).",
             f"- raw numbers: `{PAGE_JSON}` beside this page; runs under `{display_path(out)}`.", ""]
    lines += render_summary(results)
    lines += render_findings(results)
    for name, section in results["datasets"].items():
        lines += render_dataset(name, section, results["baseline"], docs, out)
    for folder in results.get("see_also") or []:
        lines += render_companion(Path(folder), docs)
    return "\n".join(lines).rstrip() + "\n"


def render_companion(folder: Path, docs: Path) -> list[str]:
    """Another ablation's summary and findings (from its ``results.json``), linked to its own page."""
    companion = read_previous_results(folder)
    if companion is None:
        return [f"## Also: the ablation in `{display_path(folder)}`", "",
                f"Not run yet: `{display_path(folder / PAGE_JSON)}` does not exist.", ""]
    name = companion.get("name") or Path(companion.get("ablation") or "ablation").stem
    link = Path(os.path.relpath(folder / PAGE_MD, docs)).as_posix()
    lines = [f"## Also: {name}", ""]
    description = " ".join(str(companion.get("description") or "").split())
    if description:
        lines += [description, ""]
    models = sorted({_model_line(section) for section in companion.get("datasets", {}).values()})
    lines += [f"Its own page, with every number behind this section: [{link}]({link}). Written "
              f"{companion.get('created')}; seeds {', '.join(str(s) for s in companion.get('seeds', []))}; "
              + "; ".join(models) + ".", ""]
    sections = render_summary(companion, "its page gives every number behind it") + render_findings(companion)
    lines += [line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in sections]
    return lines


def _model_line(section: dict[str, Any]) -> str:
    model, train = section.get("model", {}), section.get("train", {})
    return (f"{model.get('n_layer')} layers × width {model.get('n_embd')}, {train.get('max_steps')} steps × batch "
            f"{train.get('batch_size')} ({section.get('tokens_per_run', 0):,} tokens per run), "
            f"{train.get('precision')}")


def render_summary(results: dict[str, Any], behind: str = "the sections below give every number behind it"
                   ) -> list[str]:
    """Variants × datasets: the difference from the baseline, its verdict and the matched-loss multiple."""
    datasets = results["datasets"]
    if not datasets:
        return []
    base = results["baseline"]
    lines = ["## Summary", "",
             f"Test loss of each variant minus the baseline's (nats per token, mean ± spread over seeds; negative is "
             f"better), the verdict, and the tokens the baseline needs to match it. Produced by: "
             f"`{results['command']}`; {behind}.", ""]
    rows = []
    for variant in results["variants"]:
        if variant == base:
            continue
        row = [variant]
        for section in datasets.values():
            e = section["variants"].get(variant)
            if not e or e["n"] == 0:
                row.append("failed" if e and e["failed"] else "pending")
                continue
            match = e["baseline_tokens_to_match"]["label"]
            partial = "" if e["n"] == e["of"] else f" (n={e['n']}/{e['of']})"
            row.append(f"{fmt_pm(e.get('delta'), e.get('delta_spread'), 3, signed=True)} {bold_verdict(e['verdict'])}"
                       + (f" · {match} tokens" if match.endswith("×") else "") + partial)
        rows.append(row)
    return lines + table(["variant"] + list(datasets), rows) + [""]


def _variant_text(fields: dict[str, Any]) -> str:
    model = {k: v for k, v in fields.items() if k != "train"}
    train = [f"train.{k}={v:g}" if isinstance(v, float) else f"train.{k}={v}"
             for k, v in (fields.get("train") or {}).items()]
    return "(" + ", ".join([f"{k}={v}" for k, v in model.items()] or ["plain GPT"]) \
        + "".join(f", {t}" for t in train) + ")"


def write_results(results: dict[str, Any], docs: Path, out: Path) -> tuple[Path, Path]:
    """``<docs>/results.md`` (plots copied under ``<docs>/results/``), the same page as
    ``<docs>/results.html`` (converted from that Markdown, so it shows the very same numbers), and
    ``<docs>/results.json``; returns the ``.md`` and ``.json`` paths."""
    docs.mkdir(parents=True, exist_ok=True)
    text = render_markdown(results, docs, out)
    return write_page(docs, text, results, markdown_page(text, "Ablation results"))
