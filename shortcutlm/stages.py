"""``shortcutlm recipe``: run a recipe's stages (prepare, train, evaluate, generate, report) into one folder.

Each stage resumes what exists, so a run stopped by Ctrl-C goes on from its last step; a re-run
skips finished shards and finished variants and says so (evaluation, samples and the report are
made again: they are quick, and a re-run may have changed their settings). Training names each
variant, estimates the run's length from its first steps and, with ``--no-progress``, prints a
plain line every few minutes (:mod:`shortcutlm.core.progress`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.artifacts.lock import folder_lock
from shortcutlm.artifacts.manifest import read_manifest_or_none
from shortcutlm.core.cleanup import removed_if_failed
from shortcutlm.core.config_schema import ConfigError
from shortcutlm.datasets.prepare import prepare
from shortcutlm.run.evaluation import evaluate_checkpoints, write_report
from shortcutlm.run.joint import ensure_mixture, generate_joint_samples
from shortcutlm.pairs.run import ensure_pairs, record_scores, record_worth
from shortcutlm.core.progress import TrainingProgress
from shortcutlm.run.recipe import Recipe, load_recipe
from shortcutlm.report.recipe_report import write_run_report
from shortcutlm.run.recipe_samples import generate_samples
from shortcutlm.run.layout import RunLayout
from shortcutlm.run.training import train

STAGES = ("prepare", "train", "evaluate", "generate", "report")


def run_recipe(recipe: Recipe, out: str | Path, stages: tuple[str, ...] = STAGES,
               variants: list[str] | None = None, progress: bool = True) -> RunLayout:
    """prepare → train (each variant) → evaluate → generate → report, resuming what exists."""
    layout = RunLayout(Path(out))
    layout.root.mkdir(parents=True, exist_ok=True)
    chosen = variants or list(recipe.variants)
    if "prepare" in stages and recipe.pairs:  # paired documents across domains
        ensure_pairs(recipe, layout.data, progress=progress)
    elif "prepare" in stages and recipe.mixture:  # a joint model: each part prepared, then mixed
        ensure_mixture(recipe, layout.data, workers=2, progress=progress)
    elif "prepare" in stages:
        done = prepared_already(recipe, layout.data)
        if done:
            say(f"prepare: skipped, {done}")
        else:
            manifest = prepare(recipe.source, recipe.tokenizer, layout.data, workers=2, progress=progress)
            if not progress:  # with the bars on, prepare said it before reading
                for line in manifest.get("found") or []:
                    say(f"found {line}")
    if "train" in stages:
        finished = {v for v in chosen if CheckpointFolder(layout.checkpoint(v)).is_finished(recipe.train.max_steps)}
        for index, variant in enumerate(chosen, 1):
            if variant in finished:
                say(f"train variant {index}/{len(chosen)}: {variant}: skipped, already trained to step "
                    f"{recipe.train.max_steps:,} in {layout.checkpoint(variant)}")
                continue
            later = sum(recipe.train.max_steps for v in chosen[index:] if v not in finished)
            watch = TrainingProgress(variant, index, len(chosen), later, plain=not progress)
            train(recipe, variant, layout.data, layout.checkpoint(variant), progress=progress, callbacks=[watch])
    folders = [layout.checkpoint(v) for v in chosen]
    if "evaluate" in stages:
        results = evaluate_checkpoints(folders, layout.data, split=recipe.evaluate.split,
                                       batch_size=recipe.evaluate.batch_size, max_batches=recipe.evaluate.max_batches,
                                       progress=progress)
        write_report(results, layout.evaluation)
        if recipe.pairs:  # what each task's source is worth to its target
            record_worth(layout.root, dict(zip(chosen, folders)), layout.data, recipe.evaluate.split)
    if "generate" in stages and recipe.pairs:  # each task's targets of held-out sources, scored
        record_scores(recipe, layout.root, dict(zip(chosen, folders)), {v: layout.samples(v) for v in chosen},
                      layout.data)
    elif "generate" in stages:
        sample = generate_joint_samples if recipe.mixture else generate_samples
        for variant, folder in zip(chosen, folders):
            sample(recipe, folder, layout.data, layout.samples(variant))
    if "report" in stages:
        write_run_report(recipe, layout, chosen)
    return layout


def say(line: str) -> None:
    print(line, file=sys.stderr)


def prepared_already(recipe: Recipe, data: Path) -> str:
    """Why ``prepare`` can be skipped (its shards are finished, from this source and tokenizer), or ''."""
    import json

    manifest = read_manifest_or_none(data, require_complete=True)
    if manifest is None:
        return ""
    def same(a: object, b: object) -> bool:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    tokenizer = {"domain": recipe.tokenizer.get("domain"),
                 **{k: v for k, v in recipe.tokenizer.items() if k != "domain"}}
    if not (same(manifest.get("source"), recipe.source) and same(manifest.get("tokenizer_settings"), tokenizer)):
        return ""  # prepare itself refuses other settings, naming them
    documents = manifest.get("inputs", {}).get("documents", 0)
    return (f"{data} already holds the finished shards of this source and tokenizer ({documents:,} documents); "
            "delete that folder to prepare again")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/bach_chorales.yaml")
    parser.add_argument("--preset", help="a preset of the recipe, e.g. tiny or paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.max_steps=50 (repeatable)")
    parser.add_argument("--stage", dest="stages", action="append", choices=STAGES,
                        help="run only these stages (repeatable; default: all, in order)")
    parser.add_argument("--variant", dest="variants", action="append", help="only these variants (repeatable)")
    parser.add_argument("--path", help="where your copy of the recipe's dataset lies (sets source.path): the "
                        "dataset's own folder or the folder its archive unpacked into, e.g. /data/maestro-v3.0.0")
    parser.add_argument("--out", help="output folder (default: runs/<recipe name>[-<preset>])")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars: a plain line every few minutes instead (for batch logs)")


def point_source(recipe: Recipe, path: str | None, preparing: bool) -> None:
    """Point the recipe's source at ``--path``; before a prepare, refuse a data path that does not exist
    with a line that names the flag (a recipe's default path is relative and rarely where the data is)."""
    from shortcutlm.datasets.sources import READERS

    if recipe.pairs:  # --path points the pair source (librispeech, folder) at the data
        from shortcutlm.pairs.collect import COLLECTORS

        source = recipe.pairs["source"]
        if path is not None:
            if "path" not in COLLECTORS.get(source.get("name"), (None, ()))[1]:
                raise ConfigError(f"recipe {recipe.name}: its pair source {source.get('name')!r} reads no path; "
                                  "leave out --path")
            source["path"] = str(Path(path).expanduser())
        given = source.get("path")
        if preparing and given is not None and not Path(str(given)).expanduser().exists():
            raise ConfigError(f"recipe {recipe.name}: {given} does not exist (its pairs.source.path); point the "
                              "recipe at your copy of the dataset with --path /where/it/lies")
        return
    name = recipe.source.get("name")
    takes_path = name in READERS and "path" in READERS[name][1]
    if path is not None:
        if not takes_path:
            raise ConfigError(f"recipe {recipe.name}: its source {name!r} ships with a package and reads no path; "
                              "leave out --path")
        recipe.source["path"] = str(Path(path).expanduser())
        if preparing and not Path(recipe.source["path"]).exists():
            raise ConfigError(f"--path {path}: no such file or folder")
        return
    given = recipe.source.get("path")
    if preparing and takes_path and given is not None and not Path(str(given)).expanduser().exists():
        relative = "" if Path(str(given)).expanduser().is_absolute() else f", relative to {Path.cwd()}"
        raise ConfigError(f"recipe {recipe.name}: {given} does not exist (its source.path{relative}); point the "
                          "recipe at your copy of the dataset with --path /where/it/lies")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.preset, args.overrides)
    out = args.out or f"runs/{recipe.name}" + (f"-{args.preset}" if args.preset else "")
    stages = tuple(s for s in STAGES if not args.stages or s in args.stages)
    point_source(recipe, getattr(args, "path", None), "prepare" in stages)
    with removed_if_failed(out), folder_lock(out, "recipe"):
        layout = run_recipe(recipe, out, stages, args.variants, progress=not args.no_progress)
    if layout.report_html.exists():
        print(f"done: {layout.root} — open {layout.report_html} in a browser to listen and compare "
              f"(Markdown: {layout.report})")
    else:
        print(f"done: {layout.root}")
    return 0
