"""Sample sidecars: the JSON written beside every generated artifact (``<artifact>.json``).

A sidecar says how its sample was made and what it holds: checkpoint, prompt, sampling settings
and seed, tokens and seconds asked for and written, timing, and the rendering beside a MIDI
sample. Generation writes them; reports and the CLI read them back through here, and find a
folder's samples by their sidecars rather than by guessing file types.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.files import ArtifactError, read_json, write_json

SUFFIX = ".json"


def sidecar_path(artifact: str | Path) -> Path:
    """Where the sidecar of ``artifact`` lives: beside it, its suffix replaced by ``.json``."""
    return Path(artifact).with_suffix(SUFFIX)


def write_sidecar(artifact: str | Path, data: dict[str, Any]) -> Path:
    """Write the sidecar of ``artifact`` atomically (keys in the order given); returns its path."""
    return write_json(sidecar_path(artifact), data, sort_keys=False)


def read_sidecar(artifact: str | Path) -> dict[str, Any]:
    """The sidecar of ``artifact``; an :class:`~shortcutlm.artifacts.files.ArtifactError` naming it
    when it is missing or unreadable."""
    return read_json(sidecar_path(artifact), "sample sidecar", "generate the sample again")


@dataclass(frozen=True)
class Sample:
    """One generated sample found on disk: its artifact, the rendering beside it (if any), and its sidecar."""

    artifact: Path
    rendering: Path | None
    sidecar: dict[str, Any]

    @property
    def files(self) -> list[Path]:
        """The artifact, then its rendering."""
        return [self.artifact] + ([self.rendering] if self.rendering is not None else [])


def samples_in(folder: str | Path) -> list[Sample]:
    """The samples in ``folder`` (those whose sidecar names an artifact that exists), by artifact name.

    A sidecar's ``artifact`` and ``rendering`` are read by file name in ``folder``, so a folder
    of samples that was moved or copied still lists.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            data = read_json(path, "sample sidecar")
        except ArtifactError:  # unreadable: not a sample
            continue
        if not isinstance(data, dict) or not data.get("artifact"):
            continue
        artifact = folder / Path(data["artifact"]).name
        if not artifact.is_file() or sidecar_path(artifact) != path:
            continue
        rendering = folder / Path(data["rendering"]).name if data.get("rendering") else None
        found.append(Sample(artifact, rendering if rendering is not None and rendering.is_file() else None, data))
    return sorted(found, key=lambda s: s.artifact.name)
