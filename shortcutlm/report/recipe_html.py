"""``report.html`` of a recipe run: listen to the prompt and each variant's continuation side by side,
look at them (piano roll, spectrogram, text with the prompt set apart), then read the tables.

The page sits in the run folder and links only to files inside it by relative path, so it works
opened from disk with no network and no server, and keeps working when the folder is copied. The
tables, plots and readings are those of ``report.md`` (:func:`shortcutlm.report.recipe_report.report_sections`),
converted from its Markdown; only the samples are drawn here. What differs between domains (which
picture, whether a file is sound, how a text splits at its prompt) is asked of the tokenizer.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.artifacts.files import write_text
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.artifacts.results import read_results_or_none
from shortcutlm.artifacts.sidecar import Sample, SampleRecord, samples_in
from shortcutlm.report.html_page import document, esc, markdown_html
from shortcutlm.report.pairs_html import pairs_media
from shortcutlm.drawing.plots import variant_colour
from shortcutlm.run.layout import RunLayout
from shortcutlm.tokenizers import Tokenizer, load_tokenizer, tokenizer_class

#: The page's sections after the samples: (Markdown section of the report, anchor, link text).
SECTIONS = (("evaluation", "evaluation", "Evaluation"), ("pairs", "pairs", "Pairs"),
            ("training", "training", "Training"), ("depth", "depth", "Shortcut depth"),
            ("diagnostics", "diagnostics", "Diagnostics"), ("data", "data", "Data"))


def _href(path: Path, root: Path) -> str:
    """``path`` relative to the page's folder, as a URL path (every file the page names lies below it)."""
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


def _inside(path: Path, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


class _Prompts:
    """The prompts the samples continue, each copied into the run folder when it lies elsewhere and
    made audible (rendered to ``.wav`` when it is not sound itself), once per prompt."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self.folder = layout.root / "samples" / "prompt"
        self._tokenizer: Tokenizer | None = None
        self.found: dict[str, tuple[Path, Path | None]] = {}

    def _load_tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(ShardManifest.read(self.layout.data).tokenizer_dir)
        return self._tokenizer

    def get(self, name: str, cls: type[Tokenizer]) -> tuple[Path, Path | None] | None:
        """``(the prompt file in the run folder, the file to listen to or None)``; None when it is gone."""
        if name in self.found:
            return self.found[name]
        source = Path(name)
        if not source.is_file():  # a relative path from another working folder: look in the run's prompt folder
            source = self.folder / source.name
            if not source.is_file():
                return None
        local = source if _inside(source, self.layout.root) else self.folder / source.name
        if local != source:
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, local)
        if cls.artifact_is_sound:
            audible: Path | None = local
        else:
            wav = local.with_suffix(".wav")
            audible = wav if wav.is_file() else self._load_tokenizer().render(local, wav)
        self.found[name] = (local, audible)
        return self.found[name]


def _audio(src: str, label: str) -> str:
    return (f'<div class="player-label">{esc(label)}</div>'
            f'<audio controls preload="metadata" src="{esc(src)}"></audio>')


def _number(value: Any, digits: int = 1, unit: str = "") -> str | None:
    return f"{value:.{digits}f}{unit}" if isinstance(value, (int, float)) else None


def _facts(sidecar: SampleRecord) -> str:
    """How the sample was made, in one line: tokens, seconds, seed and sampling settings, speed."""
    settings = sidecar.settings
    generated = "?" if sidecar.tokens_generated is None else sidecar.tokens_generated
    parts = [f"{generated} tokens generated"]
    seconds, added = _number(sidecar.seconds, 1, " s"), _number(sidecar.continuation_seconds, 1, " s")
    if seconds:
        parts.append(f"lasts {seconds}" + (f" ({added} after the prompt)" if added else ""))
    parts.append(f"seed {sidecar.seed}")
    knobs = [f"{k.replace('_', '-')} {v}" for k, v in settings.items() if k != "seed" and v is not None]
    if knobs:
        parts.append(", ".join(knobs))
    speed = _number(sidecar.tokens_per_s, 0, " tokens/s")
    if speed:
        parts.append(speed)
    if sidecar.stopped_at_eos:
        parts.append("stopped at end-of-sequence")
    dropped = sidecar.decode_dropped
    if dropped.get("ids") or dropped.get("tokens"):
        parts.append(f"decoding dropped {dropped.get('ids', 0)} ids and {dropped.get('tokens', 0)} tokens out of order")
    return " · ".join(parts)


def _text_block(parts: tuple[str, str]) -> str:
    prompt, continuation = parts
    shown = f'<span class="prompt">{esc(prompt)}</span>' if prompt else ""
    return f'<div class="text-sample">{shown}<span class="continuation">{esc(continuation)}</span></div>'


def _sample_html(sample: Sample, variant: str, root: Path, prompts: _Prompts) -> str:
    """One sample: its player, its picture or its text with the prompt set apart, and its files."""
    sidecar = sample.sidecar
    cls = tokenizer_class(sidecar.domain)
    prompt = prompts.get(sidecar.prompt, cls) if sidecar.prompt else None
    out = [f'<div class="sample" data-artifact="{esc(sample.artifact.name)}">']
    audible = sample.rendering or (sample.artifact if cls.artifact_is_sound else None)
    if audible is not None:
        label = "prompt + continuation" if prompt else "unconditional sample"
        out.append(_audio(_href(audible, root), f"{label} · {audible.name}"))
    picture = cls.picture(sample.artifact, sample.artifact.with_name(sample.artifact.stem + ".png"),
                          sidecar.prompt_seconds if prompt else None, f"{variant}: {sample.artifact.name}")
    if picture is not None:
        src = esc(_href(picture, root))
        out.append(f'<a href="{src}"><img src="{src}" alt="{esc(variant)}: {esc(sample.artifact.name)}"></a>')
    parts = cls.text_parts(sample.artifact, prompt[0] if prompt else None)
    if parts is not None:
        out.append(_text_block(parts))
    files = " · ".join(f'<a href="{esc(_href(p, root))}">{esc(p.name)}</a>'
                       for p in [*sample.files, sample.artifact.with_suffix(".json")] if p.is_file())
    out.append(f'<p class="muted">{esc(_facts(sidecar))}<br>files: {files}</p></div>')
    return "".join(out)


def _variant_summary(layout: RunLayout, variant: str, losses: dict[str, float], split: str) -> str:
    folder = CheckpointFolder(layout.checkpoint(variant))
    bits = []
    if folder.has_hparams:
        cfg = folder.model_config()
        bits += [f"value residual {cfg['value_residual']}", f"shortcut {cfg['shortcut']}"]
    if variant in losses:
        bits.append(f"{split} loss {losses[variant]:.4f} nats/token")
    return " · ".join(bits)


def listen_section(layout: RunLayout, variants: list[str]) -> str:
    """The prompt's player, then one section per variant with each of its samples, side by side."""
    root = layout.root
    found = {v: samples_in(layout.samples(v)) for v in variants}
    lines = ['<section id="listen"><h2>Listen and look</h2>']
    if not any(found.values()):
        return "".join(lines) + "<p>No samples yet: run the recipe's <code>generate</code> stage.</p></section>"
    prompts = _Prompts(layout)
    named = {s.sidecar.prompt: tokenizer_class(s.sidecar.domain)
             for ss in found.values() for s in ss if s.sidecar.prompt}
    for name, cls in named.items():
        got = prompts.get(name, cls)
        if got is None:
            continue
        local, audible = got
        player = _audio(_href(audible, root), f"the prompt alone · {audible.name}") if audible else ""
        lines.append(f'<div class="prompt-block"><strong>Prompt</strong>: '
                     f'<a href="{esc(_href(local, root))}">{esc(local.name)}</a>{player}'
                     '<p class="legend">Each continuation below starts with this prompt: in its picture the prompt '
                     'is what comes before the dashed line (shaded in a piano roll); in a text it is greyed.</p></div>')
    results = read_results_or_none(layout.evaluation)
    losses = {r.name: float(r.loss_nats) for r in (results.checkpoints if results else []) if r.loss_nats is not None}
    lines.append('<div class="variants">')
    for v in variants:
        lines.append(f'<section class="variant" id="variant-{esc(v)}" data-variant="{esc(v)}" '
                     f'style="border-top-color: {variant_colour(v)}"><h3>{esc(v)}</h3>'
                     '<p class="muted">'
                     f'{esc(_variant_summary(layout, v, losses, results.split if results else "test"))}</p>')
        lines += [_sample_html(s, v, root, prompts) for s in found[v]] or ["<p>No sample.</p>"]
        lines.append("</section>")
    return "".join(lines) + "</div></section>"


def write_html_report(layout: RunLayout, title: str, description: str | None, sections: dict[str, list[str]],
                      variants: list[str]) -> Path:
    """Write ``report.html`` beside ``report.md`` from the report's sections; returns its path."""
    shown = [(key, anchor, text) for key, anchor, text in SECTIONS if sections.get(key)]
    nav = " ".join(f'<a href="#{anchor}">{text}</a>' for anchor, text in
                   [("listen", "Listen"), *((a, t) for _, a, t in shown)])
    body = [f"<header><h1>{esc(title)}</h1>",
            f"<p>{esc(description.strip())}</p>" if description else "",
            f'<nav>{nav} | <a href="{esc(layout.report.name)}">Markdown version</a></nav></header>',
            listen_section(layout, variants)]
    body += [f'<section id="{anchor}">{markdown_html(chr(10).join(sections[key]))}'
             f'{pairs_media(layout) if key == "pairs" else ""}</section>' for key, anchor, _ in shown]
    return write_text(layout.report_html, document(title, "\n".join(body)))
