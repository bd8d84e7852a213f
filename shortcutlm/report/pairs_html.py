"""The report page's pairs, to hear and see: per variant and task, each scored pair's source, generated
target and reference side by side (a player, a piano roll or spectrogram, or the text), with that
pair's scores beside chance and the ceiling.

The page links only to files inside the run folder: a source or reference that lies elsewhere (the
prepared halves link to the render cache) is copied under ``pairs/<variant>/<task>/``, and
a score is rendered to sound there once. Which picture and whether a file is sound is asked of the
joint tokenizer, which answers by the file's kind.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from shortcutlm.pairs.page import LABELS
from shortcutlm.pairs.results import read_results
from shortcutlm.report.html_page import esc
from shortcutlm.run.layout import RunLayout
from shortcutlm.tokenizers.composite import CompositeTokenizer

#: Pairs shown per variant and task (every scored pair is in the tables; a page of players stays short).
SHOWN = 4
ROLES = ("source", "generated", "reference")


class _Media:
    """A file of a pair as the page shows it: inside the run folder, audible, drawn or read."""

    def __init__(self, layout: RunLayout) -> None:
        self.root, self.data = layout.root.resolve(), layout.data
        self._renderer: CompositeTokenizer | None | bool = False

    def _render(self, artifact: Path, wav: Path) -> Path | None:
        if self._renderer is False:  # the run's joint vocabulary renders scores (its MIDI part's soundfont)
            from shortcutlm.artifacts.manifest import ShardManifest
            from shortcutlm.tokenizers import load_tokenizer

            folder = ShardManifest.read_or_none(self.data)
            loaded = load_tokenizer(folder.tokenizer_dir) if folder is not None else None
            self._renderer = loaded if isinstance(loaded, CompositeTokenizer) else None
        renderer = self._renderer
        return renderer.render(artifact, wav) if isinstance(renderer, CompositeTokenizer) else None

    def local(self, path: Path, where: Path, name: str) -> Path:
        resolved = path.resolve()
        if resolved.is_relative_to(self.root):
            return resolved
        copy = where / f"{name}{path.suffix.lower()}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(resolved, copy)  # a folder of this page's own copies: rewritten each time
        return copy

    def cell(self, path: str | None, where: Path, name: str, label: str) -> str:
        if not path or not Path(path).is_file():
            return '<td class="muted">—</td>'
        local = self.local(Path(path), where, name)
        href = esc(local.relative_to(self.root).as_posix())
        out = [f'<td><a href="{href}">{esc(Path(path).name)}</a>']
        if CompositeTokenizer.picture(local, local.with_suffix(".png"), None, label) is not None:
            png = esc(local.with_suffix(".png").relative_to(self.root).as_posix())
            out.append(f'<a href="{png}"><img src="{png}" alt="{esc(label)}"></a>')
        kind = CompositeTokenizer.class_for_artifact(local)
        sound = local if kind is not None and kind.artifact_is_sound else None
        if sound is None and kind is not None and kind.rendering_suffix:
            rendering = local.with_suffix(kind.rendering_suffix)
            sound = rendering if rendering.is_file() else self._render(local, rendering)
        if sound is not None:
            out.append(f'<audio controls preload="metadata" src="{esc(sound.relative_to(self.root).as_posix())}">'
                       "</audio>")
        text = CompositeTokenizer.text_parts(local)
        if text is not None:
            out.append(f'<div class="text-sample"><span class="continuation">{esc(text[1])}</span></div>')
        return "".join(out) + "</td>"


def _scores(row: dict[str, Any]) -> str:
    keys = [k for k in LABELS if any(k in (row.get(w) or {}) for w in ("model", "chance", "ceiling"))]

    def value(which: str, key: str) -> str:
        found = (row.get(which) or {}).get(key)
        return "—" if found is None else f"{found:.3f}"

    lines = [f"{esc(LABELS[k])}: <strong>{value('model', k)}</strong> (chance {value('chance', k)}, ceiling "
             f"{value('ceiling', k)})" for k in keys]
    if row.get("error"):
        lines.append(esc(row["error"]))
    return "<td>" + "<br>".join(lines) + "</td>"


def pairs_media(layout: RunLayout) -> str:
    """HTML of the scored pairs side by side (empty when the run has no pairs results)."""
    results = read_results(layout.root)
    media = _Media(layout)
    out: list[str] = []
    for variant, body in results.items():
        for task, entry in (body.get("scores") or {}).items():
            rows = (entry.get("rows") or [])[:SHOWN]
            if not rows:
                continue
            out.append(f'<h3>{esc(variant)}: {esc(task)}, heard and seen</h3><table class="pairs"><tr><th>pair</th>'
                       + "".join(f"<th>{role}</th>" for role in ROLES) + "<th>scores</th></tr>")
            where = layout.pair_media(variant, task)
            for row in rows:
                cells = [media.cell(row.get(key), where, f"{row['pair_id']}-{key}", f"{variant} {task}: {key}")
                         for key in ROLES]
                out.append(f"<tr><td>{esc(row['pair_id'])}</td>{''.join(cells)}{_scores(row)}</tr>")
            out.append("</table>")
    return "".join(out)
