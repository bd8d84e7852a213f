"""Sample sidecars: the JSON written beside every generated artifact (``<artifact>.json``).

A sidecar says how its sample was made and what it holds: checkpoint, prompt, sampling settings
and seed, tokens and seconds asked for and written, timing, and the rendering beside a MIDI
sample (:class:`SampleRecord`). Generation builds and writes them; reports and the CLI read them back
through here, and find a folder's samples by their sidecars rather than by guessing file types.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, ClassVar

from shortcutlm.artifacts.files import ArtifactError, read_json, write_json
from shortcutlm.artifacts.records import NUMBER, check_schema, field, mapping

SUFFIX = ".json"


@dataclass(frozen=True)
class SampleRecord:
    """How one sample was made and what it holds (the sidecar beside its artifact).

    ``length`` says how the number of positions was chosen (``tokens_requested``, or
    ``seconds_requested`` and the tokenizer's conversion, and for MIDI the ``target_seconds`` and
    ``generation_rounds`` it took); ``tokenizer`` is the tokenizer's ``describe()`` (audio: layout,
    codebooks, frame rate; MIDI: multitrack handling and what decoding dropped). Both are written
    among the sidecar's own keys, where earlier versions wrote them. ``prompt_frames`` and
    ``continuation_seconds`` are written only when known; ``rendering_seconds`` beside a rendering.
    """

    SCHEMA: ClassVar[int] = 1

    checkpoint: str
    checkpoint_name: str
    domain: str
    prompt: str | None
    prompt_tokens: int
    prompt_seconds: float | None
    prompt_file_seconds: float | None
    prompt_context: dict[str, Any] | None
    prompt_kept_in_context: int
    settings: dict[str, Any]
    seed: int | None
    samples: int
    sample_index: int
    length: dict[str, Any]
    max_new_tokens: int | None
    tokens_generated: int | None
    stopped_at_eos: bool
    stop_reason: str | None
    seconds: float | None
    elapsed_s: float | None
    tokens_per_s: float | None
    context: int | None
    slid_window: bool
    device: str | None
    artifact: str
    tokenizer: dict[str, Any] = dataclass_field(default_factory=dict)
    prompt_frames: int | None = None
    continuation_seconds: float | None = None
    rendering: str | None = None
    rendering_seconds: float | None = None
    total_s: float | None = None

    @property
    def decode_dropped(self) -> dict[str, int]:
        """What decoding left out (MIDI: ``ids`` standing for no token, ``tokens`` out of order, ``of``
        all ids); empty when nothing was recorded."""
        dropped = self.tokenizer.get("decode_dropped")
        return dict(dropped) if isinstance(dropped, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        """The sidecar as written, keys in the order earlier versions wrote them."""
        out: dict[str, Any] = {
            "checkpoint": self.checkpoint, "checkpoint_name": self.checkpoint_name, "domain": self.domain,
            "prompt": self.prompt, "prompt_tokens": self.prompt_tokens, "prompt_seconds": self.prompt_seconds,
            "prompt_file_seconds": self.prompt_file_seconds, "prompt_context": self.prompt_context,
            "prompt_kept_in_context": self.prompt_kept_in_context,
            "settings": self.settings, "seed": self.seed, "samples": self.samples, "sample_index": self.sample_index,
            **self.length, "max_new_tokens": self.max_new_tokens,
            "tokens_generated": self.tokens_generated, "stopped_at_eos": self.stopped_at_eos,
            "stop_reason": self.stop_reason, "seconds": self.seconds,
            "elapsed_s": self.elapsed_s, "tokens_per_s": self.tokens_per_s,
            "context": self.context, "slid_window": self.slid_window, "device": self.device, "artifact": self.artifact,
        }
        out.update(self.tokenizer)
        if self.prompt_frames is not None:
            out["prompt_frames"] = self.prompt_frames
        if self.continuation_seconds is not None:
            out["continuation_seconds"] = self.continuation_seconds
        if self.rendering is not None:
            out["rendering"] = self.rendering
            out["rendering_seconds"] = self.rendering_seconds
        out["total_s"] = self.total_s
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str) -> SampleRecord:
        """The sidecar read from ``source``; an ArtifactError naming it and the field when one is wrong.
        Keys this record does not name are the length's when written between ``sample_index`` and
        ``max_new_tokens`` (where the writer puts them), the tokenizer's otherwise."""
        data = mapping(data, source, "a sample sidecar")
        check_schema(data, cls.SCHEMA, source)
        length: dict[str, Any] = {}
        facts: dict[str, Any] = {}
        in_length = False
        for key, value in data.items():
            if key in ("sample_index", "max_new_tokens"):
                in_length = key == "sample_index"
            elif key not in _SIDECAR_KEYS:
                (length if in_length else facts)[key] = value
        num = NUMBER
        return cls(
            checkpoint=field(data, "checkpoint", str, source, ""),
            checkpoint_name=field(data, "checkpoint_name", str, source, ""),
            domain=field(data, "domain", str, source, ""),
            prompt=field(data, "prompt", str, source, None, optional=True),
            prompt_tokens=field(data, "prompt_tokens", int, source, 0),
            prompt_seconds=field(data, "prompt_seconds", num, source, None, optional=True),
            prompt_file_seconds=field(data, "prompt_file_seconds", num, source, None, optional=True),
            prompt_context=field(data, "prompt_context", dict, source, None, optional=True),
            prompt_kept_in_context=field(data, "prompt_kept_in_context", int, source, 0),
            settings=dict(field(data, "settings", dict, source, {})),
            seed=field(data, "seed", int, source, None, optional=True),
            samples=field(data, "samples", int, source, 1),
            sample_index=field(data, "sample_index", int, source, 0),
            length=length,
            max_new_tokens=field(data, "max_new_tokens", int, source, None, optional=True),
            tokens_generated=field(data, "tokens_generated", int, source, None, optional=True),
            stopped_at_eos=field(data, "stopped_at_eos", bool, source, False),
            stop_reason=field(data, "stop_reason", str, source, None, optional=True),
            seconds=field(data, "seconds", num, source, None, optional=True),
            elapsed_s=field(data, "elapsed_s", num, source, None, optional=True),
            tokens_per_s=field(data, "tokens_per_s", num, source, None, optional=True),
            context=field(data, "context", int, source, None, optional=True),
            slid_window=field(data, "slid_window", bool, source, False),
            device=field(data, "device", str, source, None, optional=True),
            artifact=field(data, "artifact", str, source),
            tokenizer=facts,
            prompt_frames=field(data, "prompt_frames", int, source, None, optional=True),
            continuation_seconds=field(data, "continuation_seconds", num, source, None, optional=True),
            rendering=field(data, "rendering", str, source, None, optional=True),
            rendering_seconds=field(data, "rendering_seconds", num, source, None, optional=True),
            total_s=field(data, "total_s", num, source, None, optional=True),
        )


_SIDECAR_KEYS = frozenset({
    "checkpoint", "checkpoint_name", "domain", "prompt", "prompt_tokens", "prompt_seconds", "prompt_file_seconds",
    "prompt_context", "prompt_kept_in_context", "settings", "seed", "samples", "sample_index", "max_new_tokens",
    "tokens_generated", "stopped_at_eos", "stop_reason", "seconds", "elapsed_s", "tokens_per_s", "context",
    "slid_window", "device", "artifact", "prompt_frames", "continuation_seconds", "rendering", "rendering_seconds",
    "total_s", "schema"})


def sidecar_path(artifact: str | Path) -> Path:
    """Where the sidecar of ``artifact`` lives: beside it, its suffix replaced by ``.json``."""
    return Path(artifact).with_suffix(SUFFIX)


def write_sidecar(artifact: str | Path, record: SampleRecord) -> Path:
    """Write the sidecar of ``artifact`` atomically (keys in the record's order); returns its path."""
    return write_json(sidecar_path(artifact), record.to_dict(), sort_keys=False)


def read_sidecar(artifact: str | Path) -> SampleRecord:
    """The sidecar of ``artifact``; an :class:`~shortcutlm.artifacts.files.ArtifactError` naming it
    (and the field) when it is missing, unreadable or malformed."""
    path = sidecar_path(artifact)
    return SampleRecord.from_dict(read_json(path, "sample sidecar", "generate the sample again"), str(path))


@dataclass(frozen=True)
class Sample:
    """One generated sample found on disk: its artifact, the rendering beside it (if any), and its sidecar."""

    artifact: Path
    rendering: Path | None
    sidecar: SampleRecord

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
            record = SampleRecord.from_dict(read_json(path, "sample sidecar"), str(path))
        except ArtifactError:  # unreadable or not a sidecar (another JSON file): not a sample
            continue
        if not record.artifact:
            continue
        artifact = folder / Path(record.artifact).name
        if not artifact.is_file() or sidecar_path(artifact) != path:
            continue
        rendering = folder / Path(record.rendering).name if record.rendering else None
        found.append(Sample(artifact, rendering if rendering is not None and rendering.is_file() else None, record))
    return sorted(found, key=lambda s: s.artifact.name)
