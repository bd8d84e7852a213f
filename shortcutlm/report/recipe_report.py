"""The recipe's report: evaluation table, loss curves, generated samples, shortcut depth maps, diagnostics.

Every figure in ``report.md`` is read from files the earlier stages wrote (manifest,
checkpoint folders, ``eval/results.json``, sample sidecars); nothing is typed in. The same
sections, with players and pictures for the samples, make ``report.html``
(:mod:`shortcutlm.report.recipe_html`). Each plot comes with a sentence that reads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.artifacts.files import read_json_or_none, write_text
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.artifacts.results import read_markdown, read_results_or_none
from shortcutlm.artifacts.sidecar import Sample, samples_in
from shortcutlm.drawing.plots import plot_loss_curves, read_curves
from shortcutlm.run.recipe import Recipe
from shortcutlm.run.layout import RunLayout


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _data_section(data_dir: Path) -> list[str]:
    manifest = ShardManifest.read(data_dir)
    tok = manifest.tokenizer
    lines = ["## Data", "",
             f"Source `{manifest.source.get('name')}`, tokenizer `{tok.domain}` "
             f"(vocabulary {tok.vocab_size}, {tok.n_streams} stream(s), fingerprint `{tok.fingerprint}`).", "",
             "| split | documents | tokens |", "|---|---:|---:|"]
    for split, info in manifest.splits.items():
        lines.append(f"| {split} | {info.documents:,} | {info.tokens:,} |")
    rejected = manifest.rejected
    lines += ["", f"Rejected inputs: {len(rejected)}" + ("" if not rejected else ":"), ""]
    lines += [f"- `{r['input']}`: {r['reason']}" for r in rejected[:20]]
    if len(rejected) > 20:
        lines.append(f"- … and {len(rejected) - 20} more (see `{_rel(manifest.path, data_dir.parent)}`)")
    return lines + [""]


def _training_section(layout: RunLayout, variants: list[str]) -> list[str]:
    lines = ["## Training", "", "| variant | value residual | shortcut | parameters | steps | tokens seen |",
             "|---|---|---|---:|---:|---:|"]
    for v in variants:
        folder = CheckpointFolder(layout.checkpoint(v))
        if not folder.has_hparams:
            lines.append(f"| {v} | – | – | – | not trained | – |")
            continue
        h, cfg = folder.hparams(), folder.model_config()
        lines.append(f"| {v} | {cfg['value_residual']} | {cfg['shortcut']} | {h.parameters:,} | {h.step} "
                     f"| {h.tokens_seen:,} |")
    curves = plot_loss_curves({v: CheckpointFolder(layout.checkpoint(v)).metrics_path for v in variants},
                              layout.root / "loss_curves.png", "training and validation loss")
    if curves:
        lines += ["", f"![loss curves]({_rel(curves, layout.root)})",
                  "", "Solid lines: training loss (exponential moving average); dashed: validation loss "
                  "on the first `train.val_batches` validation batches."]
        reading = _loss_reading(layout, variants)
        if reading:
            lines += ["", reading]
    return lines + [""]


def baseline_of(variants: list[str]) -> str:
    """The variant the others are read against: ``baseline`` when the recipe has one, else the first."""
    return "baseline" if "baseline" in variants else variants[0]


def _against(values: dict[str, float], base: str, unit: str) -> str:
    """``a 3.912; b 3.850 (−0.062 against a)``, each variant's number beside the baseline's."""
    parts = []
    for name, value in values.items():
        text = f"{name} {value:.3f}{unit}"
        if name != base and base in values:
            diff = value - values[base]
            text += f" ({'+' if diff >= 0 else '−'}{abs(diff):.3f} against {base})"
        parts.append(text)
    return "; ".join(parts)


def _loss_reading(layout: RunLayout, variants: list[str]) -> str | None:
    """One sentence: the last validation loss of each variant against the baseline's."""
    last: dict[str, float] = {}
    steps: set[int] = set()
    for v in variants:
        metrics = CheckpointFolder(layout.checkpoint(v)).metrics_path
        curve = read_curves(metrics).get("val/loss") if metrics.is_file() else None
        if curve is not None and len(curve[1]):
            last[v] = float(curve[1][-1])
            steps.add(int(curve[0][-1]))
    if not last:
        return None
    at = f" (step {steps.pop()})" if len(steps) == 1 else ""
    return (f"Reading: last validation loss{at}, nats per token: "
            f"{_against(last, baseline_of(variants), '')}; lower is better.")


def _evaluation_section(layout: RunLayout) -> list[str]:
    table = read_markdown(layout.evaluation)
    if table is None:
        return ["## Evaluation", "", "Not run.", ""]
    body = table.strip().splitlines()
    # One level down: results.md's title ("Evaluation: next-token loss on the test split") becomes
    # this section's heading, so the report names the split that was scored.
    body = ["#" + line if line.startswith("#") else line for line in body]
    if not body or not body[0].startswith("## "):
        body = ["## Evaluation", "", *body]
    lines = [*body, "",
             "Loss is the mean next-token cross-entropy in nats over every target of the split (one exact "
             "pass); bits = nats / ln 2; perplexity = e^loss. Lower is better.", ""]
    reading = _evaluation_reading(layout)
    return lines + ([reading, ""] if reading else [])


def _evaluation_reading(layout: RunLayout) -> str | None:
    """One sentence: each checkpoint's loss against the baseline's, and which is lowest."""
    results = read_results_or_none(layout.evaluation)
    rows = [r for r in (results.checkpoints if results else []) if r.loss_nats is not None]
    if not rows or results is None:
        return None
    by_domain: dict[str, dict[str, float]] = {}  # a joint model's rows: one reading per domain
    for r in rows:
        by_domain.setdefault(str(r.domain), {})[str(r.name)] = float(r.loss_nats or 0.0)  # rows with a loss only
    readings = []
    for domain, losses in by_domain.items():
        best = min(losses, key=losses.__getitem__)
        what = f" ({domain})" if len(by_domain) > 1 else ""
        readings.append(f"Reading{what}: {results.split} loss in nats per token, "
                        f"{_against(losses, baseline_of(list(losses)), '')}; lowest: **{best}**.")
    return "\n\n".join(readings)


def _samples_section(layout: RunLayout, variants: list[str]) -> list[str]:
    lines = ["## Samples", ""]
    prompt_dir = layout.root / "samples" / "prompt"
    prompts = sorted(prompt_dir.glob("prompt*.*")) if prompt_dir.is_dir() else []
    if prompts:
        lines.append("Prompt: " + ", ".join(f"[`{p.name}`]({_rel(p, layout.root)})" for p in prompts))
        lines.append("")
    for v in variants:
        found = samples_in(layout.samples(v))  # found by their sidecars
        if found:
            files = [p for sample in found for p in sample.files]
            lines.append(f"- **{v}**: " + ", ".join(f"[`{p.name}`]({_rel(p, layout.root)})" for p in files))
            dropped = [d for sample in found if (d := sample.sidecar.decode_dropped)]
            if any(d.get("ids") or d.get("tokens") for d in dropped):
                lines.append(f"  (decoding dropped {sum(d.get('tokens', 0) for d in dropped):,} tokens out of order "
                             f"and {sum(d.get('ids', 0) for d in dropped):,} ids that stand for no token, of "
                             f"{sum(d.get('of', 0) for d in dropped):,} ids)")
            quoted = next((text for sample in found if (text := _excerpt(sample))), None)
            if quoted:
                lines += ["", "  ```", *("  " + line for line in quoted.splitlines()), "  ```"]
    return lines + [""]


def _excerpt(sample: Sample) -> str | None:
    """The start of a sample to quote, when its tokenizer reads it as text (see ``Tokenizer.excerpt``)."""
    from shortcutlm.tokenizers import tokenizer_class

    try:
        return tokenizer_class(sample.sidecar.domain).excerpt(sample.artifact)
    except (ValueError, OSError):  # a sidecar of an unknown domain, an unreadable file: no quote
        return None


def _depth_maps(layout: RunLayout, variants: list[str], data_dir: Path) -> list[str]:
    from shortcutlm.report.diagnostic_sentences import depth_map_sentence
    from shortcutlm.run.diagnostics import depth_map_for_checkpoint

    lines: list[str] = []
    for v in variants:
        folder = layout.checkpoint(v)
        if not CheckpointFolder(folder).has_weights:
            continue
        png = depth_map_for_checkpoint(folder, data_dir, layout.root / f"depth_map_{v}.png")
        if png is not None:
            lines += [f"### {v}", "", f"![shortcut attention over depth, {v}]({_rel(png, layout.root)})", ""]
            numbers = read_json_or_none(png.with_suffix(".json")) or {}
            reading = depth_map_sentence(v, numbers.get("depths") or [], numbers.get("weights"))
            if reading:
                lines += [f"Reading: {reading}", ""]
    if not lines:
        return []
    return ["## Shortcut attention over depth", "",
            "For the first validation window: each row is a token, each column a depth the final layer's "
            "shortcut reads (emb = embeddings, Ln = output of block n); colour is the attention weight "
            "averaged over heads (each row sums to 1).", "", *lines]


#: The diagnostics plots the run report shows (the depth maps have their own section above them).
DIAGNOSTICS_SHOWN = ("entropy", "first_token_value_norm", "first_token_attention", "hidden_norm",
                     "token_similarity", "depth_weights")


def _diagnostics_section(layout: RunLayout, variants: list[str]) -> list[str]:
    """The ablation page's diagnostics for this run's checkpoints: a plot per measure, each with its reading."""
    from shortcutlm.report.diagnostic_sentences import diagnostic_sentences
    from shortcutlm.run.diagnostics import compare_checkpoints

    trained = [v for v in variants if CheckpointFolder(layout.checkpoint(v)).has_weights]
    if not trained:
        return []
    heading = ["## Attention concentration and shortcut depth (diagnostics)", ""]
    try:
        got = compare_checkpoints([layout.checkpoint(v) for v in trained], layout.root / "diagnostics",
                                  data_dir=layout.data, labels=trained)
    except Exception as exc:  # noqa: BLE001 - the report says so and keeps its other sections
        return heading + [f"Not measured: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", ""]
    base = baseline_of(trained)
    readings = diagnostic_sentences(got["results"], trained, base)
    lines = heading + [f"`shortcutlm.run.diagnostics.compare_checkpoints` on validation windows of "
                       f"{', '.join(trained)}; each reading compares a variant with {base}.", ""]
    for name in DIAGNOSTICS_SHOWN:
        png = got["plots"].get(name)
        if png is None:
            continue
        lines += [f"![{name.replace('_', ' ')}]({_rel(Path(png), layout.root)})", ""]
        if name in readings:
            lines += [f"Reading: {readings[name]}", ""]
    return lines + [f"Numbers: `{_rel(Path(got['json']), layout.root)}`.", ""]


def report_sections(recipe: Recipe, layout: RunLayout, variants: list[str]) -> dict[str, list[str]]:
    """The report's sections as Markdown lines, by name, in page order (PNGs written on the way)."""
    return {"data": _data_section(layout.data),
            "training": _training_section(layout, variants),
            "evaluation": _evaluation_section(layout),
            "samples": _samples_section(layout, variants),
            "pairs": _pairs_section(layout),
            "depth": _depth_maps(layout, variants, layout.data),
            "diagnostics": _diagnostics_section(layout, variants)}


def _pairs_section(layout: RunLayout) -> list[str]:
    """A paired recipe's tasks: source worth and metrics beside chance and ceiling (shortcutlm.pairs.page)."""
    from shortcutlm.pairs.page import pairs_section

    return pairs_section(layout.root)


def run_description(layout: RunLayout, variants: list[str]) -> str:
    """The header's sentence, read from what the run wrote (the manifest, its saved tokenizer, the
    checkpoints), never from the recipe's defaults: a run made with other settings is described as made."""
    from shortcutlm.tokenizers import load_tokenizer

    parts = []
    manifest = ShardManifest.read(layout.data)
    found = manifest.raw.get("found") or []
    data = found[0] if found else f"source {manifest.source.get('name')}"
    tokens = load_tokenizer(manifest.tokenizer_dir).headline
    parts.append(f"Data: {data}; as {tokens}.")
    trained = [v for v in variants if CheckpointFolder(layout.checkpoint(v)).has_hparams]
    if trained:
        folder = CheckpointFolder(layout.checkpoint(trained[0]))
        cfg, h = folder.model_config(), folder.hparams()
        steps = sorted({CheckpointFolder(layout.checkpoint(v)).hparams().step or 0 for v in trained})
        step_text = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}-{steps[-1]:,}"
        parts.append(f"Models: {cfg['n_layer']} layers, width {cfg['n_embd']}, {cfg['n_head']} heads, context "
                     f"{cfg['block_size']:,}; {len(trained)} variant(s) trained {step_text} steps at "
                     f"{h.train.get('precision', '?')} precision.")
    return " ".join(parts)


def write_run_report(recipe: Recipe, layout: RunLayout, variants: list[str]) -> Path:
    """Write ``report.md`` and ``report.html`` (and their PNGs) for a recipe run; returns ``report.md``."""
    from shortcutlm.report.recipe_html import write_html_report

    title = recipe.name + (f" ({recipe.preset} preset)" if recipe.preset else "")
    description = run_description(layout, variants)
    head = [f"# {title}", ""] + ([description, ""] if description else [])
    sections = report_sections(recipe, layout, variants)
    lines = head + [line for part in sections.values() for line in part]
    write_text(layout.report, "\n".join(lines) + "\n")
    write_html_report(layout, title, description, sections, variants)
    return layout.report


def summary(layout: RunLayout) -> dict[str, Any]:
    """What a run produced (for scripts): the reports and the evaluation results (None before evaluation)."""
    return {"report": str(layout.report), "report_html": str(layout.report_html),
            "evaluation": read_results_or_none(layout.evaluation)}
