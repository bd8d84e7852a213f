"""The report's section on pairs: per task, what the source is worth and the field's metric beside
chance and the ceiling, and for a few held-out pairs the source, the generated target and the
reference side by side (links to the files; the samples section plays the generated ones)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shortcutlm.pairs.results import read_results

#: metric key -> what a reader should know about it (higher is better unless said)
LABELS = {"onset_f1": "note F1 (onset)", "onset_offset_f1": "note F1 (onset + offset)",
          "log_mel_cosine": "log-mel cosine", "chroma_cosine": "chroma cosine",
          "wer": "WER (lower is better)", "cer": "CER (lower is better)"}


def _link(path: str | None, root: Path) -> str:
    if not path:
        return "—"
    return f"[{Path(path).name}]({Path(os.path.relpath(path, root)).as_posix()})"


def _cell(means: dict[str, dict[str, float]], which: str, key: str) -> str:
    value = means.get(which, {}).get(key)
    return "—" if value is None else f"{value:.3f}"


def pairs_section(root: str | Path) -> list[str]:
    """Markdown lines for the report (nothing when the run has no pairs results)."""
    root = Path(root)
    results = read_results(root)
    if not results:
        return []
    lines = ["## Pairs: source → target", "",
             "Worth: the target's loss without its source minus with it, in nats per target token, over the "
             "same target ids both ways (how much reading the source helps). Metrics: the generated target "
             "against the pair's reference; chance is another pair's reference against it, the ceiling the "
             "reference through its tokenizer and back.", ""]
    for variant, body in results.items():
        worth: dict[str, Any] = body.get("worth") or {}
        if worth:
            lines += [f"### {variant}: what the source is worth", "",
                      "| task | pairs | target tokens | loss with source | loss without | worth (nats/token) |",
                      "|---|---|---|---|---|---|"]
            for task, w in worth.items():
                lines.append(f"| {task} | {w['documents']} | {w['target_tokens']:,} | {w['loss_with_source']:.3f} | "
                             f"{w['loss_without_source']:.3f} | **{w['source_worth_nats_per_token']:+.3f}** |")
            lines.append("")
        scores: dict[str, Any] = body.get("scores") or {}
        for task, entry in scores.items():
            means = entry.get("means") or {}
            keys = [k for k in LABELS if any(k in m for m in means.values())]
            lines += [f"### {variant}: {task} ({entry['pairs']} held-out pairs)", "",
                      "| metric | model | chance | ceiling |", "|---|---|---|---|"]
            lines += [f"| {LABELS[k]} | {_cell(means, 'model', k)} | {_cell(means, 'chance', k)} | "
                      f"{_cell(means, 'ceiling', k)} |" for k in keys]
            lines += ["", "| pair | source | generated | reference |", "|---|---|---|---|"]
            for row in entry.get("rows") or []:
                generated = _link(row["generated"], root) if row.get("generated") else row.get("error", "—")
                lines.append(f"| {row['pair_id']} | {_link(row.get('source'), root)} | {generated} | "
                             f"{_link(row.get('reference'), root)} |")
            lines.append("")
    return lines
