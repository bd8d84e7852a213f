"""The recipe's report: evaluation table, loss curves, generated samples, shortcut depth maps.

Every figure in ``report.md`` is read from files the earlier stages wrote (manifest,
checkpoint folders, ``eval/results.json``, sample sidecars); nothing is typed in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.artifacts.files import write_text
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.artifacts.results import read_markdown, read_results_or_none
from shortcutlm.artifacts.sidecar import Sample, samples_in
from shortcutlm.datasets.shards import read_shard
from shortcutlm.models import SamplingSettings
from shortcutlm.plots import plot_loss_curves
from shortcutlm.recipe import Recipe
from shortcutlm.run_layout import RunLayout


def first_document(data_dir: Path, splits: tuple[str, ...] = ("test", "valid", "train")) -> np.ndarray | None:
    """Tokens of the first document of the first non-empty split (a reproducible prompt source)."""
    manifest = ShardManifest.read(data_dir)
    for split in splits:
        for shard in manifest.split(split).shards:
            for _key, tokens, _meta in read_shard(Path(data_dir) / shard):
                return tokens.astype(np.int64)
    return None


def prompt_file(recipe: Recipe, data_dir: Path, out_dir: Path) -> Path | None:
    """The recipe's prompt file, or the head of the first test document decoded to a file."""
    g = recipe.generate
    if g.prompt:
        return Path(g.prompt)
    if g.prompt_tokens <= 0:
        return None
    tokens = first_document(data_dir)
    if tokens is None:
        return None
    from shortcutlm.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(ShardManifest.read(data_dir).tokenizer_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return tokenizer.decode(tokens[..., : g.prompt_tokens], out_dir / f"prompt{tokenizer.artifact_suffix}")


def generate_samples(recipe: Recipe, folder: Path, data_dir: Path, out_dir: Path) -> list[Path]:
    """The recipe's generation stage for one checkpoint."""
    from shortcutlm.generation import generate_from_checkpoint

    g = recipe.generate
    settings = SamplingSettings(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=g.seed)
    prompt = prompt_file(recipe, data_dir, out_dir.parent / "prompt")
    return generate_from_checkpoint(folder, out_dir, prompt=prompt, max_new_tokens=None if g.seconds else g.max_new_tokens,
                                    seconds=g.seconds, settings=settings, samples=g.samples)


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
    lines += ["", f"Rejected inputs: {len(rejected)}" + ("" if not rejected else ":")]
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
        lines.append(f"| {v} | {cfg['value_residual']} | {cfg['shortcut']} | {h['parameters']:,} | {h['step']} "
                     f"| {h['tokens_seen']:,} |")
    curves = plot_loss_curves({v: CheckpointFolder(layout.checkpoint(v)).metrics_path for v in variants},
                              layout.root / "loss_curves.png", "training and validation loss")
    if curves:
        lines += ["", f"![loss curves]({_rel(curves, layout.root)})",
                  "", "Solid lines: training loss (exponential moving average); dashed: validation loss "
                  "on the first `train.val_batches` validation batches."]
    return lines + [""]


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
    return [*body, "",
            "Loss is the mean next-token cross-entropy in nats over every target of the split (one exact "
            "pass); bits = nats / ln 2; perplexity = e^loss. Lower is better.", ""]


def _samples_section(layout: RunLayout, variants: list[str]) -> list[str]:
    lines = ["## Samples", ""]
    prompt_dir = layout.root / "samples" / "prompt"
    prompts = sorted(prompt_dir.glob("prompt.*")) if prompt_dir.is_dir() else []
    if prompts:
        lines.append("Prompt: " + ", ".join(f"[`{p.name}`]({_rel(p, layout.root)})" for p in prompts))
        lines.append("")
    for v in variants:
        found = samples_in(layout.samples(v))  # found by their sidecars
        if found:
            files = [p for sample in found for p in sample.files]
            lines.append(f"- **{v}**: " + ", ".join(f"[`{p.name}`]({_rel(p, layout.root)})" for p in files))
            quoted = next((text for sample in found if (text := _excerpt(sample))), None)
            if quoted:
                lines += ["", "  ```", *("  " + line for line in quoted.splitlines()), "  ```"]
    return lines + [""]


def _excerpt(sample: Sample) -> str | None:
    """The start of a sample to quote, when its tokenizer reads it as text (see ``Tokenizer.excerpt``)."""
    from shortcutlm.tokenizers import tokenizer_class

    try:
        return tokenizer_class(str(sample.sidecar.get("domain"))).excerpt(sample.artifact)
    except (ValueError, OSError):  # a sidecar of an unknown domain, an unreadable file: no quote
        return None


def _depth_maps(layout: RunLayout, variants: list[str], data_dir: Path) -> list[str]:
    from shortcutlm.diagnostics import depth_map_for_checkpoint

    lines: list[str] = []
    for v in variants:
        folder = layout.checkpoint(v)
        if not CheckpointFolder(folder).has_weights:
            continue
        png = depth_map_for_checkpoint(folder, data_dir, layout.root / f"depth_map_{v}.png")
        if png is not None:
            lines += [f"### {v}", "", f"![shortcut attention over depth, {v}]({_rel(png, layout.root)})", ""]
    if not lines:
        return []
    return ["## Shortcut attention over depth", "",
            "For the first validation window: each row is a token, each column a depth the final layer's "
            "shortcut reads (emb = embeddings, Ln = output of block n); colour is the attention weight "
            "averaged over heads (each row sums to 1).", "", *lines]


def write_run_report(recipe: Recipe, layout: RunLayout, variants: list[str]) -> Path:
    """Write ``report.md`` (and its PNGs) for a recipe run."""
    title = f"# {recipe.name}" + (f" ({recipe.preset} preset)" if recipe.preset else "")
    lines = [title, ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    lines += _data_section(layout.data)
    lines += _training_section(layout, variants)
    lines += _evaluation_section(layout)
    lines += _samples_section(layout, variants)
    lines += _depth_maps(layout, variants, layout.data)
    write_text(layout.report, "\n".join(lines) + "\n")
    return layout.report


def summary(layout: RunLayout) -> dict[str, Any]:
    """What a run produced (for scripts): the report and the evaluation results (None before evaluation)."""
    return {"report": str(layout.report), "evaluation": read_results_or_none(layout.evaluation)}
