"""A recipe's generate stage: the prompt it names (or the head of the first test document) and the
samples each checkpoint writes from it into the run's own folder."""
from __future__ import annotations

from pathlib import Path

from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.datasets.shards import first_document_and_meta
from shortcutlm.models import SamplingSettings
from shortcutlm.run.generation import generate_from_checkpoint
from shortcutlm.run.recipe import Recipe


def prompt_file(recipe: Recipe, data_dir: Path, out_dir: Path) -> Path | None:
    """The recipe's prompt file, or the head of the first test document decoded to a file."""
    g = recipe.generate
    if g.prompt:
        return Path(g.prompt)
    if g.prompt_tokens <= 0:
        return None
    found = first_document_and_meta(data_dir)
    if found is None:
        return None
    from shortcutlm.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(ShardManifest.read(data_dir).tokenizer_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens, info = found
    return tokenizer.write_prompt(tokens, g.prompt_tokens, out_dir / f"prompt{tokenizer.artifact_suffix}", info)


def generate_samples(recipe: Recipe, folder: Path, data_dir: Path, out_dir: Path) -> list[Path]:
    """The recipe's generation stage for one checkpoint."""
    g = recipe.generate
    settings = SamplingSettings(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=g.seed)
    prompt = prompt_file(recipe, data_dir, out_dir.parent / "prompt")
    return generate_from_checkpoint(folder, out_dir, prompt=prompt,
                                    max_new_tokens=None if g.seconds else g.max_new_tokens,
                                    seconds=g.seconds, settings=settings, samples=g.samples,
                                    overwrite=True)  # the run's own samples folder: a re-run replaces them
