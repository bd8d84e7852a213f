"""A joint model's runs: its recipe's mixture, per-domain evaluation, and a sample in each domain.

A recipe trains one decoder on several domains by naming a ``mixture`` instead of a ``source``
and ``tokenizer``::

    mixture:
      temperature: 0.5                      # p ∝ (train tokens) ** 0.5; or a weight per part
      parts:
        chorales: {source: {name: bach_chorales}, tokenizer: {domain: midi}}
        plays: {data: runs/shakespeare/data}  # a folder prepared already
        # weight: 2.0 on a part, with no temperature, fixes its share by hand

Parts named by ``source`` are prepared into ``<data>/parts/<name>``; the mixture folder itself is
``<data>`` (:mod:`shortcutlm.datasets.mixture`). A checkpoint trained on it holds the joint
tokenizer; evaluation reads it through one view per domain (:func:`evaluation_targets`), and
generation picks the view from the prompt's file type or ``--domain``. Nothing here branches on a
domain's name: the tokenizer says which domains there are.

``train`` builds the mixture on rank 0 before Lightning starts the other ranks; under ``torchrun``,
where every rank starts at once, build it first (``shortcutlm recipe R --stage prepare``). A part
is split over the data slots (ranks × workers) by shard or by document, so it needs at least as many
train documents as there are slots (a tiny preset's single play does not split; it is refused).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from shortcutlm.artifacts.checkpoint import Checkpoint, load_folder
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.datasets.mixture import PARTS, MixturePart, build_mixture, domain_folder
from shortcutlm.run.recipe import Recipe

__all__ = ["ensure_mixture", "evaluation_targets", "generate_joint_samples"]



def ensure_mixture(recipe: Recipe, data_dir: str | Path, workers: int = 2, progress: bool = True) -> Path:
    """Prepare the parts the recipe names by source (resuming, as ``prepare`` does) and write the
    mixture folder ``data_dir`` (kept when it is already this mixture)."""
    from shortcutlm.datasets.prepare import prepare

    data_dir = Path(data_dir)
    parts = []
    for name, spec in recipe.mixture["parts"].items():
        if spec.get("data"):
            folder = Path(spec["data"]).expanduser()
        else:
            folder = data_dir / PARTS / name
            prepare(spec["source"], spec["tokenizer"], folder, workers=workers, progress=progress)
        parts.append(MixturePart(folder, None if spec.get("weight") is None else float(spec["weight"])))
    temperature = recipe.mixture.get("temperature")
    return build_mixture(parts, data_dir, None if temperature is None else float(temperature))


def evaluation_targets(folder: str | Path, shard_dir: str | Path | None,
                       device: str | torch.device) -> list[tuple[Checkpoint, str | Path | None]]:
    """What evaluating checkpoint ``folder`` means: ``[(checkpoint, shard folder)]`` once for a
    one-domain checkpoint; for a joint one, once per domain, its tokenizer the domain's view and
    the shards that domain's test split (the mixture folder's ``domains/<domain>``)."""
    from shortcutlm.tokenizers.paired import tasks_of

    ckpt = load_folder(folder, torch.device(device))
    views = ckpt.tokenizer.domain_views()
    if list(views.values()) == [ckpt.tokenizer] or tasks_of(ckpt.tokenizer):  # pairs: one folder of sequences
        return [(ckpt, shard_dir)]
    mixture = ckpt.shard_folder(shard_dir, check=False)
    return [(replace(ckpt, tokenizer=view), domain_folder(mixture, name)) for name, view in views.items()]


def generate_joint_samples(recipe: Recipe, folder: Path, data_dir: Path, out_dir: Path) -> list[Path]:
    """The recipe's generation stage for a joint checkpoint: one continuation per domain, each of
    the head of that domain's first test document (``prompt-<domain>.<ext>``), from one checkpoint."""
    from shortcutlm.run.generation import generate_from_checkpoint
    from shortcutlm.models import SamplingSettings
    from shortcutlm.datasets.shards import first_document
    from shortcutlm.tokenizers import load_tokenizer

    g = recipe.generate
    settings = SamplingSettings(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=g.seed)
    manifest = ShardManifest.read(data_dir)
    joint = load_tokenizer(manifest.tokenizer_dir)
    prompt_dir = out_dir.parent / "prompt"
    written = []
    for name, view in joint.domain_views().items():
        prompt = None
        for record in manifest.raw["mixture"]["parts"]:
            if record["domain"] != name or prompt is not None or g.prompt_tokens <= 0:
                continue
            tokens = first_document(Path(record["folder"]))
            if tokens is not None:
                part = load_tokenizer(ShardManifest.read(record["folder"]).tokenizer_dir)
                prompt_dir.mkdir(parents=True, exist_ok=True)
                target = prompt_dir / f"prompt-{name}{part.artifact_suffix}"
                prompt = part.decode(tokens[..., : g.prompt_tokens], target)
        seconds = g.seconds if view.time_from_content or view.artifact_is_sound else None
        written += generate_from_checkpoint(folder, out_dir, prompt=prompt, domain=None if prompt else name,
                                            max_new_tokens=None if seconds else g.max_new_tokens, seconds=seconds,
                                            settings=settings, samples=g.samples, overwrite=True)
    return written


def mixture_summary(data_dir: str | Path) -> list[dict[str, Any]]:
    """The parts of a mixture folder: folder, domain, train tokens and probability."""
    return list((ShardManifest.read(data_dir).raw.get("mixture") or {}).get("parts") or [])
