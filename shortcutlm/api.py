"""The suite from Python: load a checkpoint folder, generate and evaluate with it; prepare and train.

::

    import shortcutlm

    model = shortcutlm.load("runs/ckpt/sp")
    sample = model.generate(prompt="examples/prompts/sonnet.txt", tokens=100, temperature=0.9, top_k=50, seed=1)
    print(sample.artifact)                      # text: a str; MIDI: a symusic.Score; audio: a Waveform
    scores = model.evaluate(split="valid")      # the same record `shortcutlm evaluate` writes (EvaluationRecord)
    ids = model.tokenizer.encode_document(...)  # the checkpoint's own tokenizer

The command line is a layer over the same functions (``generate_from_checkpoint``,
``evaluate_checkpoint``, ``prepare``, ``train``), with the same defaults. ``generate`` writes a
file only when given ``out``; otherwise the artifact is decoded in a temporary folder (the
tokenizers write files: MIDI and audio are decoded by libraries that write them) and handed back
as an object, and the folder is removed.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import torch

from shortcutlm.artifacts.checkpoint import Checkpoint, load_folder
from shortcutlm.artifacts.sidecar import SampleRecord, read_sidecar
from shortcutlm.core.devices import resolve_device
from shortcutlm.models import SamplingSettings
from shortcutlm.run.recipe import GenerateSettings
from shortcutlm.tokenizers import Tokenizer

__all__ = ["Model", "Sample", "load", "prepare", "train"]

#: The sampling defaults, read from the one place the CLI and recipes read them.
_SAMPLING = GenerateSettings()


@dataclass(frozen=True)
class Sample:
    """One generated sample: the artifact as an object, its record (the sidecar's typed fields), and
    the file it was written to (None when nothing was asked to be written)."""

    artifact: Any
    record: SampleRecord
    path: Path | None = None


class Model:
    """A loaded checkpoint folder: its model, its tokenizer and what it was trained on."""

    def __init__(self, checkpoint: Checkpoint, device: torch.device) -> None:
        self.checkpoint, self.device = checkpoint, device

    @property
    def tokenizer(self) -> Tokenizer:
        return self.checkpoint.tokenizer

    @property
    def folder(self) -> Path:
        return self.checkpoint.folder

    def __repr__(self) -> str:
        cfg = self.checkpoint.model.config
        return (f"shortcutlm.Model({str(self.folder)!r}: {self.tokenizer.domain}, {cfg.n_layer}x{cfg.n_embd}, "
                f"{self.checkpoint.model.num_params():,} parameters, on {self.device})")

    def generate(self, prompt: str | Path | None = None, tokens: int | None = None, seconds: float | None = None,
                 temperature: float = _SAMPLING.temperature, top_k: int | None = _SAMPLING.top_k,
                 top_p: float | None = _SAMPLING.top_p, seed: int | None = _SAMPLING.seed,
                 samples: int = _SAMPLING.samples, out: str | Path | None = None,
                 overwrite: bool = False, stop_at_eos: bool = False) -> Sample | list[Sample]:
        """Continue ``prompt`` (a file) or sample from nothing; one :class:`Sample`, or a list for ``samples > 1``.

        The settings and their defaults are ``shortcutlm generate``'s and a recipe's (one source:
        ``GenerateSettings``); without ``tokens`` or ``seconds``, its ``max_new_tokens``. ``seed=None``
        draws a random seed (recorded in the sample). ``out`` (a file or folder) keeps the files as the
        command writes them; without it nothing is left on disk."""
        from shortcutlm.run.generation import generate_from_checkpoint

        settings = SamplingSettings(temperature, top_k, top_p, seed)
        if tokens is None and seconds is None:
            tokens = _SAMPLING.max_new_tokens

        def run(where: Path | str) -> list[Sample]:
            paths = generate_from_checkpoint(self.folder, where, prompt, tokens, seconds, settings, samples,
                                             self.device, render=out is not None, checkpoint=self.checkpoint,
                                             stop_at_eos=stop_at_eos, overwrite=overwrite)
            return [Sample(self.tokenizer.read_artifact(p), read_sidecar(p), Path(p) if out else None)
                    for p in paths]

        if out is not None:
            made = run(out)
        else:
            with tempfile.TemporaryDirectory(prefix="shortcutlm-sample-") as folder:
                made = run(folder)
        return made[0] if samples == 1 else made

    def evaluate(self, data: str | Path | None = None, split: str = "test", batch_size: int = 8,
                 max_batches: int | None = None) -> Any:
        """Next-token loss on a split of ``data`` (default: the shards the checkpoint was trained on);
        the record ``shortcutlm evaluate`` writes for one checkpoint (an ``EvaluationRecord``)."""
        from shortcutlm.run.evaluation import evaluate_checkpoint

        return evaluate_checkpoint(self.folder, data, split, batch_size, max_batches, self.device, progress=False,
                                   checkpoint=self.checkpoint)


def load(folder: str | Path, device: str = "auto") -> Model:
    """Load a checkpoint folder (``model_config.json``, weights, tokenizer: all it needs is there)."""
    where = resolve_device(device)
    return Model(load_folder(folder, where), torch.device(where))


def prepare(source: dict[str, Any], tokenizer: dict[str, Any], out: str | Path, **settings: Any) -> dict[str, Any]:
    """``shortcutlm prepare``: a source spec and a tokenizer spec into shards and their manifest
    (see :func:`shortcutlm.datasets.prepare.prepare` for the settings)."""
    from shortcutlm.datasets.prepare import prepare as run

    return run(source, tokenizer, out, **settings)


def train(recipe: str | Path, data: str | Path, out: str | Path, variant: str | None = None,
          preset: str | None = None, overrides: Sequence[str] = (), **settings: Any) -> Path:
    """``shortcutlm train``: one variant of a recipe file on prepared shards; the checkpoint folder.
    ``overrides`` are ``--set`` strings (``"train.max_steps=100"``)."""
    from shortcutlm.run.recipe import load_recipe
    from shortcutlm.run.training import train as run

    loaded = load_recipe(recipe, preset, list(overrides))
    return run(loaded, variant or next(iter(loaded.variants)), data, out, **settings)
