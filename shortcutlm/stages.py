"""``shortcutlm recipe``: run a recipe's stages (prepare, train, evaluate, generate, report) into one folder.

Each stage resumes what exists, so re-running a finished recipe redoes nothing, and a run
stopped by Ctrl-C goes on from its last step.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from shortcutlm.artifacts.lock import folder_lock
from shortcutlm.cleanup import removed_if_failed
from shortcutlm.datasets.prepare import prepare
from shortcutlm.evaluation import evaluate_checkpoints, write_report
from shortcutlm.joint import ensure_mixture, generate_joint_samples
from shortcutlm.recipe import Recipe, load_recipe
from shortcutlm.report import generate_samples, write_run_report
from shortcutlm.run_layout import RunLayout
from shortcutlm.training import train

STAGES = ("prepare", "train", "evaluate", "generate", "report")


def run_recipe(recipe: Recipe, out: str | Path, stages: tuple[str, ...] = STAGES,
               variants: list[str] | None = None, progress: bool = True) -> RunLayout:
    """prepare → train (each variant) → evaluate → generate → report, resuming what exists."""
    layout = RunLayout(Path(out))
    layout.root.mkdir(parents=True, exist_ok=True)
    chosen = variants or list(recipe.variants)
    if "prepare" in stages and recipe.mixture:  # a joint model: each part prepared, then mixed
        ensure_mixture(recipe, layout.data, workers=2, progress=progress)
    elif "prepare" in stages:
        prepare(recipe.source, recipe.tokenizer, layout.data, workers=2, progress=progress)
    if "train" in stages:
        for variant in chosen:
            train(recipe, variant, layout.data, layout.checkpoint(variant), progress=progress)
    folders = [layout.checkpoint(v) for v in chosen]
    if "evaluate" in stages:
        results = evaluate_checkpoints(folders, layout.data, split=recipe.evaluate.split,
                                       batch_size=recipe.evaluate.batch_size, max_batches=recipe.evaluate.max_batches)
        write_report(results, layout.evaluation)
    if "generate" in stages:
        sample = generate_joint_samples if recipe.mixture else generate_samples
        for variant, folder in zip(chosen, folders):
            sample(recipe, folder, layout.data, layout.samples(variant))
    if "report" in stages:
        write_run_report(recipe, layout, chosen)
    return layout


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/bach_chorales.yaml")
    parser.add_argument("--preset", help="a preset of the recipe, e.g. tiny or paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.max_steps=50 (repeatable)")
    parser.add_argument("--stage", dest="stages", action="append", choices=STAGES,
                        help="run only these stages (repeatable; default: all, in order)")
    parser.add_argument("--variant", dest="variants", action="append", help="only these variants (repeatable)")
    parser.add_argument("--out", help="output folder (default: runs/<recipe name>[-<preset>])")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.preset, args.overrides)
    out = args.out or f"runs/{recipe.name}" + (f"-{args.preset}" if args.preset else "")
    stages = tuple(s for s in STAGES if not args.stages or s in args.stages)
    with removed_if_failed(out), folder_lock(out, "recipe"):
        layout = run_recipe(recipe, out, stages, args.variants, progress=not args.no_progress)
    if layout.report_html.exists():
        print(f"done: {layout.root} — open {layout.report_html} in a browser to listen and compare "
              f"(Markdown: {layout.report})")
    else:
        print(f"done: {layout.root}")
    return 0
