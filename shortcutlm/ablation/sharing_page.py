"""The sharing experiment's page: ``<docs>/results.md`` (and ``results.html``) with ``results.json``,
rendered from :func:`~shortcutlm.ablation.sharing_grid.collect_sharing`'s dictionary alone."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from shortcutlm.ablation.grid import clock
from shortcutlm.ablation.markdown import bold_verdict, fmt_pm, param_count, table
from shortcutlm.artifacts.ablation import PAGE_JSON, RUN_FILE, write_page

ARM_LABELS = {"joint": "joint", "domain_tokens": "separate, same domain tokens",
              "total_tokens": "separate, same total tokens"}
METRIC_LABELS = {"bits_per_byte": "bits/byte", "bits_per_second": "bits/second"}
METRIC_DECIMALS = {"bits_per_byte": 3, "bits_per_second": 1}


def _loss_cell(stat: dict[str, Any], of: int) -> str:
    if not stat["n"]:
        return "pending"
    return fmt_pm(stat["mean"], stat["std"]) + ("" if stat["n"] == of else f" (n={stat['n']}/{of})")


def _delta_cell(found: dict[str, Any] | None) -> str:
    if not found or found["delta"] is None:
        return "–"
    text = fmt_pm(found["delta"], found["spread"], 3, signed=True) + " " + bold_verdict(found["verdict"])
    return text + (" (unpaired)" if found["method"] == "unpaired" else "")


def _verdict_word(found: dict[str, Any] | None) -> str:
    """The verdict read as sharing's effect (``better`` for the joint model is sharing helping)."""
    if not found or found["delta"] is None:
        return "pending"
    v = found["verdict"]
    return {"better": "helps", "worse": "hurts"}.get(v.split(" ")[0], "no clear effect") + (
        " (one seed)" if "one seed" in v else "")


def render_summary(results: dict[str, Any]) -> list[str]:
    """Per domain and variant: the joint model's loss minus each single-domain arm's, with its verdict."""
    of = len(results["seeds"])
    lines = ["## Summary: joint minus separate", "",
             "Test loss of the joint model minus the single-domain model's, nats per token on the domain's own test "
             f"split, mean ± spread over seeds paired by seed (n={of}); negative: the joint model is better, i.e. "
             "sharing the decoder helped that domain. **better**/**worse** refer to the joint model. \"Of which "
             "off-domain\": the part of the joint model's loss that is probability it puts on other domains' ids "
             "(−log P(this domain's ids or EOS), mean over the same targets); the rest is how it ranks the domain's "
             "own ids.", ""]
    rows = []
    for part, section in results["domains"].items():
        for variant, v in section["variants"].items():
            off = v["arms"]["joint"].get("off_domain") or {"n": 0}
            rows.append([f"{part} ({section['domain']})", variant,
                         _loss_cell(v["arms"]["joint"]["loss"], of),
                         fmt_pm(off["mean"], off["std"], 3) if off["n"] else "–",
                         _loss_cell(v["arms"]["domain_tokens"]["loss"], of),
                         _delta_cell(v["joint_vs"].get("domain_tokens")),
                         _loss_cell(v["arms"]["total_tokens"]["loss"], of) if v["arms"]["total_tokens"]["runs"]
                         else "not run",
                         _delta_cell(v["joint_vs"].get("total_tokens"))])
    lines += table(["domain", "variant", "joint", "of which off-domain", "separate, same domain tokens",
                    "joint − separate",
                    "separate, same total tokens", "joint − separate"], rows) + [""]
    return lines + _reading(results) + [""]


def _reading(results: dict[str, Any]) -> list[str]:
    """One sentence per domain, generated from the verdicts."""
    lines = []
    for arm, label in (("domain_tokens", "the same tokens of their domain"), ("total_tokens", "the same total tokens")):
        words = [_verdict_word(v["joint_vs"].get(arm)).split(" (")[0] for section in results["domains"].values()
                 for v in section["variants"].values() if arm in v["joint_vs"]]
        if words:
            tally = ", ".join(f"{words.count(w)} {w}" for w in ("helps", "hurts", "no clear effect", "pending")
                              if words.count(w))
            lines.append(f"- against single-domain models trained on {label}, over {len(words)} domain × variant "
                         f"comparisons, sharing: {tally}.")
    for part, section in results["domains"].items():
        parts = []
        for variant, v in section["variants"].items():
            same = _verdict_word(v["joint_vs"].get("domain_tokens"))
            total = _verdict_word(v["joint_vs"].get("total_tokens")) if "total_tokens" in v["joint_vs"] else None
            parts.append(f"{variant}: sharing {same} against the same domain tokens"
                         + (f", {total} against the same total tokens" if total else ""))
        lines.append(f"- {part}: " + "; ".join(parts) + ".")
    return lines


FIGURE = "results/sharing/test_loss.png"


def plot_sharing(results: dict[str, Any], path: Path) -> Path:
    """One panel per domain: each variant's test loss under each arm, a dot per seed and a bar for the mean."""
    from shortcutlm.drawing.plots import plt

    domains = results["domains"]
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.8), squeeze=False)
    arms = list(ARM_LABELS)
    colours = {"joint": "tab:red", "domain_tokens": "tab:blue", "total_tokens": "tab:green"}
    width = 0.8 / len(arms)
    for ax, (part, section) in zip(axes[0], domains.items()):
        variants = list(section["variants"])
        for j, arm in enumerate(arms):
            for i, variant in enumerate(variants):
                stat = section["variants"][variant]["arms"][arm]["loss"]
                if not stat["n"]:
                    continue
                x = i + (j - (len(arms) - 1) / 2) * width
                ax.bar(x, stat["mean"], width * 0.9, color=colours[arm], alpha=0.35,
                       label=ARM_LABELS[arm] if i == 0 else None)
                seeds = list(stat["by_seed"].values())
                ax.plot([x] * len(seeds), seeds, "o", color=colours[arm], markersize=3)
        ax.set_xticks(range(len(variants)), variants, fontsize=8)
        ax.set_title(f"{part} ({section['domain']})", fontsize=10)
        ax.set_ylabel("test loss (nats per token)")
        values = [v for e in section["variants"].values() for a in e["arms"].values()
                  for v in a["loss"]["by_seed"].values()]
        if values:
            ax.set_ylim(min(values) - 0.5, max(values) + 0.3)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_gains(results: dict[str, Any]) -> list[str]:
    """Does a variant's gain over the baseline grow when one decoder serves every domain?"""
    base = results["baseline"]
    lines = ["## Does a final layer that reads every depth matter more in the joint model?", "",
             f"Each variant's test loss minus the {base}'s, in the joint model and in the single-domain models trained "
             f"on the same domain tokens (paired by seed), and the difference of the two (joint gain minus separate "
             "gain, per seed): negative means the variant helps the joint model more than it helps a single-domain "
             "one.", ""]
    rows = []
    for part, section in results["domains"].items():
        for variant, g in section["variant_gains"].items():
            rows.append([part, variant, _delta_cell(g["joint"]), _delta_cell(g["separate"]),
                         _delta_cell(g["joint_minus_separate"])])
    if not rows:
        return []
    return lines + table(["domain", "variant", f"joint: variant − {base}", f"separate: variant − {base}",
                          "joint gain − separate gain"], rows) + [""]


def render_domain(part: str, section: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """One domain: its data, and per variant and arm the steps, tokens, loss and the domain's own measure."""
    of = len(results["seeds"])
    metric = section["metric"]
    lines = [f"## {part} ({section['domain']})", ""]
    data = section.get("data")
    if data:
        splits = ", ".join(f"{k} {v.get('tokens', 0):,} tokens / {v.get('documents', 0):,} docs"
                           for k, v in data["splits"].items())
        lines += [f"Data: source `{(data.get('source') or {}).get('name')}`, its own tokenizer (vocabulary "
                  f"{data.get('vocab_size')}" + (f", codes from the {data['codec']}" if data.get("codec") else "")
                  + f"); {splits}. Mixture probability {section['probability']:.3f} (p ∝ train tokens^"
                  f"{results['mixture']['temperature']}).", ""]
    seen = section["joint_tokens_by_seed"]
    if seen:
        targets = next(iter(seen.values()))["of"]
        lines += ["Tokens of this domain the joint model trained on (targets: its ids and the EOS closing each "
                  "document; the markers apart), counted from the joint run's batches: "
                  + "; ".join(f"seed {s}: {c['tokens']:,} of {c['of']:,} ({c['tokens'] / c['of']:.1%}; "
                              f"{c['markers']:,} markers; {c.get('last_quarter', 0):,} in the last quarter of "
                              "the steps)" for s, c in seen.items())
                  + f". The mixture probability alone would give {section['probability'] * targets:,.0f}."]
        if data and data["splits"].get("train", {}).get("documents"):
            train = data["splits"]["train"]
            lines[-1] += (f" The mixed loader draws whole documents, and this train split is {train['documents']:,} "
                          f"document(s) of {train['tokens'] / train['documents']:,.0f} tokens on average, so the "
                          "joint model reads the domain in stretches about that long and the count moves by about "
                          "that much from seed to seed.")
        lines += [""]
    codebooks = any(e.get("per_codebook") for v in section["variants"].values() for e in v["arms"].values())
    header = ["variant", "model", "steps", "tokens", "passes over its train split", "test loss (nats/token)"] + (
        [METRIC_LABELS[metric]] if metric else []) + (["loss per codebook (nats)"] if codebooks else []) + [
        "joint − this"]
    rows = []
    for variant, v in section["variants"].items():
        for arm, e in v["arms"].items():
            if not e["runs"]:
                continue
            row = [variant, ARM_LABELS[arm], "/".join(str(st) for st in e["steps"]),
                   "/".join(f"{t:,}" for t in e["tokens"]), _passes(arm, e, section), _loss_cell(e["loss"], of)]
            if metric:
                m = e.get(metric) or {"n": 0}
                row.append(fmt_pm(m["mean"], m["std"], METRIC_DECIMALS[metric]) if m["n"] else "–")
            if codebooks:
                row.append(" · ".join(f"{name.replace('codebook_', 'cb')} {st['mean']:.3f}"
                                      for name, st in (e.get("per_codebook") or {}).items() if st["n"]) or "–")
            row.append("reference" if arm == "joint" else _delta_cell(v["joint_vs"].get(arm)))
            rows.append(row)
    lines += table(header, rows) + [""]
    failed = [f for v in section["variants"].values() for e in v["arms"].values() for f in e["failed"]]
    lines += [f"- failed: `{f['run']}` — {f['error']}" for f in failed] + ([""] if failed else [])
    return lines


def _passes(arm: str, entry: dict[str, Any], section: dict[str, Any]) -> str:
    """How many times the run read its domain's train split: the joint model's counted tokens of the
    domain (its mean over seeds), a single-domain model's tokens, over the split's tokens."""
    train = section.get("train_tokens")
    if not train:
        return "–"
    if arm == "joint":
        seen = [c["tokens"] for c in section["joint_tokens_by_seed"].values()]
        return f"{sum(seen) / len(seen) / train:.1f} (this domain's share)" if seen else "–"
    return "/".join(f"{t / train:.1f}" for t in entry["tokens"])


def render_cost(results: dict[str, Any]) -> list[str]:
    cost = results["cost"]
    rows = [[ARM_LABELS.get(arm, "all runs"), str(c["runs"]), f"{c['steps']:,}", f"{c['tokens']:,}",
             clock(c["train_wall_s"]), clock(c["eval_s"])] for arm, c in cost.items()]
    lines = ["## Cost and machine", "",
             f"Finished runs only; wall time is each run's own training sitting (`{RUN_FILE}`), evaluation the "
             "test-split passes.", ""]
    lines += table(["arm", "runs", "optimiser steps", "tokens trained on", "training wall time", "evaluation"], rows)
    lines += [""]
    load = results.get("load")
    params = sorted({(r["arm"], r["part"], r["params"]) for r in results["runs"] if r["status"] == "done"},
                    key=lambda x: (x[0] != "joint", str(x[1])))
    sizes: dict[str, set[int]] = {}
    for arm, part, n in params:
        sizes.setdefault("joint model" if arm == "joint" else f"{part} model", set()).add(n)
    if sizes:
        lines += ["Parameters (the joint model's larger embedding and output layer hold every domain's ids): "
                  + "; ".join(f"{k} {'/'.join(param_count(n) for n in sorted(v))}" for k, v in sizes.items())
                  + " (the variants differ by their own few parameters).", ""]
    if load:
        lines += [f"Machine: {results['machine']}. Every run trained in one process on "
                  f"{'/'.join(str(t) for t in load['threads'])} thread(s), one run at a time, on a machine of "
                  f"{'/'.join(str(c) for c in load['cpu_count'])} cores shared with other work: the 1-minute load "
                  f"average read before and after each of the {load['runs']} runs ranged {load['min']:.2f}–"
                  f"{load['max']:.2f} (median {load['median']:.2f}). Wall times and step speeds are therefore "
                  "those of a busy machine; the losses do not depend on it."
                  + (f" Runs finished {results['trained_between'][0].replace('T', ' ')} – "
                     f"{results['trained_between'][1].replace('T', ' ')}." if results.get("trained_between") else ""),
                  ""]
    return lines


def render_method(results: dict[str, Any]) -> list[str]:
    model, train, ev = results["model"], results["train"], results["evaluate"]
    checks = results["joint_count_checks"]
    ok = checks and all(c["equal"] for c in checks)
    lines = ["## The experiment", "",
             f"- model (every arm, every variant): {model.get('n_layer')} layers, width {model.get('n_embd')}, "
             f"{model.get('n_head')} heads, context {model.get('block_size')}; batch {train['batch_size']}, lr "
             f"{train['lr']:g} → {train['min_lr']:g}, warm-up {train['warmup_steps']} steps, {train['precision']}. "
             f"The joint model trains {train['max_steps']} steps.",
             "- arms: " + "; ".join(f"`{k}` {v}" for k, v in results["arms"].items()) + ".",
             "- how the joint model's tokens are counted: its training batches are replayed (the mixed loader is "
             "deterministic per seed) and each target attributed to the domain its id belongs to; the joint EOS "
             "counts for the document it closes, as in a single-domain stream, and the domain markers are counted "
             "apart. A `domain_tokens` model gets that count divided by the tokens per step, rounded, as its steps."
             + (f" The replayed totals equal the `tokens_seen` of all {len(checks)} joint checkpoints."
                if ok else (" Replayed totals and checkpoints disagree: " + ", ".join(
                    f"{c['run']} {c['counted']} vs {c['tokens_seen']}" for c in checks if not c["equal"])
                    if checks else "")),
             "- seeds: " + ", ".join(str(s) for s in results["seeds"]) + ". Seed s sets every arm's initialisation "
             "and data order; the verdicts pair the joint model and a single-domain model of the same seed. "
             f"Verdict: {results['verdict_rule']}",
             f"- evaluation: nats per token on each domain's own `{ev['split']}` split"
             + (f" (at most {ev['max_batches']} batches of {ev['batch_size']})" if ev.get("max_batches") else "")
             + ", with the domain's own measure (bits per byte for text, bits per second of music for MIDI and "
             "audio) where its split records bytes or seconds.",
             "- how joint and separate losses are made comparable: the joint vocabulary keeps each domain's ids as "
             "its part's tokenizer makes them, moved by an offset, so a domain's test documents are the same token "
             "sequences for both models. The joint model's loss on a domain is measured on that domain's test split "
             "alone, over the same targets as the single-domain model's (every document token and one EOS per "
             "document; the domain marker that opens each document in the joint stream is context, never a "
             "target). The joint model's softmax runs over the whole joint vocabulary, so any probability it puts "
             "on other domains' ids is a loss it pays: that is part of what sharing costs, and it is counted. "
             "The windows differ by the one marker per document, so a position's context is shifted by at most "
             "one token per document.", ""]
    complete = [r["domains"] for r in results["runs"] if r["status"] == "done"]
    partial = sorted({p for d in complete for p, e in d.items() if e.get("complete") is False})
    if partial:
        lines[-1:-1] = [f"- evaluation of {', '.join(partial)} covered part of the split (its batch cap)."]
    return lines


def render_markdown(results: dict[str, Any], docs: Path | None = None) -> str:
    """The page; with ``docs``, its figure is drawn under ``docs`` too."""
    pending = [r["run"] for r in results["runs"] if r["status"] == "pending"]
    failed = [r for r in results["runs"] if r["status"] == "failed"]
    lines = ["# One decoder, three domains: does sharing help?", "",
             "Every number on this page was produced by `shortcutlm ablate` from its own runs; nothing is typed in by "
             "hand. Re-running the command keeps finished runs and cached evaluations, trains what is missing and "
             "rewrites this page.", "",
             f"- command: `{results['command']}`",
             f"- written: {results['created']} on {results['machine']}",
             "- variants: " + "; ".join(f"`{k}` ({', '.join(f'{a}={b}' for a, b in (v or {}).items()) or 'plain GPT'})"
                                         for k, v in results["variants"].items()),
             f"- raw numbers: `{PAGE_JSON}` beside this page.", ""]
    if results.get("same_total") is not None:
        lines += [f"- the same-total-tokens arm was run for {', '.join(results['same_total'])} only "
                  "(`--set same_total=[...]`: the costliest arm, narrowed to fit the time the grid had).", ""]
    if pending:
        lines += [f"- pending ({len(pending)} of {len(results['runs'])} runs): "
                  + ", ".join(f"`{p}`" for p in pending[:10]) + (" …" if len(pending) > 10 else "")
                  + ". Run the command again to train them.", ""]
    lines += [f"- failed: `{r['run']}` — {r.get('error')}" for r in failed] + ([""] if failed else [])
    lines += render_summary(results)
    if docs is not None and any(a["loss"]["n"] for sec in results["domains"].values()
                                for v in sec["variants"].values() for a in v["arms"].values()):
        plot_sharing(results, docs / FIGURE)
        lines += [f"![test loss of every run, by domain, variant and arm]({FIGURE})", "",
                  "Each domain's test loss: a dot per seed, a bar at the mean; red the joint model, blue the "
                  "single-domain model on the same domain tokens, green on the same total tokens.", ""]
    lines += render_gains(results) + render_method(results)
    for part, section in results["domains"].items():
        lines += render_domain(part, section, results)
    lines += render_cost(results)
    return "\n".join(lines).rstrip() + "\n"


def write_sharing_page(results: dict[str, Any], docs: Path) -> tuple[Path, Path]:
    """``<docs>/results.md``, ``results.html`` (the same Markdown) and ``results.json``."""
    from shortcutlm.report.html_page import markdown_page

    docs.mkdir(parents=True, exist_ok=True)
    text = render_markdown(results, docs)
    return write_page(docs, text, results, markdown_page(text, "One decoder, three domains: does sharing help?"))
