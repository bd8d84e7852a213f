"""``shortcutlm ablate``: the command line (``configure`` / ``run``) and ``--plan``'s listing."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shortcutlm.ablation.commands import command_line
from shortcutlm.ablation.config import DEFAULT_RECIPE, Ablation, load_ablation
from shortcutlm.ablation.grid import clock, run_ablation
from shortcutlm.ablation.runs import is_trained, plan_runs
from shortcutlm.ablation.sharing import is_mixture_recipe
from shortcutlm.artifacts.ablation import PAGE_JSON, PAGE_MD, has_run_error, read_run_record
from shortcutlm.artifacts.manifest import has_manifest
from shortcutlm.core.config_schema import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", default=DEFAULT_RECIPE,
                        help=f"ablation YAML (default {DEFAULT_RECIPE}); or a recipe with a mixture "
                             "(recipes/multimodal.yaml): the joint model against single-domain ones, per domain "
                             "(--set seeds=[0,1] and --set same_total=[baseline] narrow it)")
    parser.add_argument("--preset", help="a preset of the ablation, e.g. gpu")
    parser.add_argument("--datasets", help="comma-separated datasets to train (default: all); the page covers all")
    parser.add_argument("--out", help="run folder (default the YAML's `out`, runs/ablation, plus -<preset>)")
    parser.add_argument("--docs", help=f"folder for {PAGE_MD} / {PAGE_JSON} (default the YAML's `docs`, docs, "
                                       "plus /<preset>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an ablation value, e.g. --set train.max_steps=20 or --set seeds=[0] "
                             "(repeatable)")
    parser.add_argument("--plan", action="store_true",
                        help="list the runs, what is finished and what is left; train nothing")
    parser.add_argument("--report-only", action="store_true", help="train nothing; rewrite the page from finished runs")
    parser.add_argument("--no-progress", action="store_true", help="no per-run progress bars")


def run(args: argparse.Namespace) -> int:
    if is_mixture_recipe(args.recipe):
        return run_sharing_command(args)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    try:
        ablation = load_ablation(args.recipe, args.preset, args.overrides)
        if datasets:
            unknown = [d for d in datasets if d not in ablation.recipes]
            if unknown:
                raise ConfigError(f"no dataset(s) {unknown}; datasets: {ablation.datasets}")
    except ConfigError as err:
        print(f"shortcutlm ablate: error: {err}", file=sys.stderr)
        return 2
    cfg = ablation.config
    out = Path(args.out or (cfg.out + (f"-{args.preset}" if args.preset else "")))
    docs = Path(args.docs or (Path(cfg.docs) / args.preset if args.preset else cfg.docs))
    if args.plan:
        print_plan(ablation, out, datasets)
        return 0
    command = command_line(ablation, out=args.out, docs=args.docs)
    results = run_ablation(ablation, out, docs, datasets=datasets, progress=not args.no_progress,
                           report_only=args.report_only, command=command)
    failed = sum(1 for s in results["datasets"].values() for r in s["runs"] if r["status"] == "failed")
    return 1 if failed else 0


def print_plan(ablation: Ablation, out: Path, datasets: list[str] | None = None) -> None:
    runs = plan_runs(ablation, out, datasets or ablation.datasets)
    done = [r for r in runs if is_trained(r)]
    for r in runs:
        state = "done" if r in done else ("failed" if has_run_error(r.folder) else "to train")
        print(f"{r.dataset:16s} {r.name:36s} {r.steps:6d} steps  {state}")
    total = sum(r.steps for r in runs)
    left = sum(r.steps for r in runs if r not in done)
    print(f"{len(runs)} runs ({len(done)} done); {left:,} of {total:,} optimiser steps left")
    recorded = [(r.steps, read_run_record(r.folder).get("wall_s")) for r in done]
    timed = [(s, w) for s, w in recorded if w]
    if timed and left:
        rate = sum(w for _, w in timed) / sum(s for s, _ in timed)
        print(f"estimated time left at the pace of the finished runs: {clock(left * rate)}")


def run_sharing_command(args: argparse.Namespace) -> int:
    """``shortcutlm ablate <mixture recipe>``: the sharing experiment (:mod:`shortcutlm.ablation.sharing`)."""
    from shortcutlm.ablation.sharing import load_sharing, plan_sharing
    from shortcutlm.ablation.sharing_grid import failed_count, run_sharing
    from shortcutlm.ablation.sharing_page import write_sharing_page

    try:
        if args.datasets:
            raise ConfigError("--datasets is for an ablation file; the sharing experiment covers every part")
        sharing = load_sharing(args.recipe, args.preset, args.overrides)
    except ConfigError as err:
        print(f"shortcutlm ablate: error: {err}", file=sys.stderr)
        return 2
    name = sharing.recipe.name
    out = Path(args.out or f"runs/ablation-{name}" + (f"-{args.preset}" if args.preset else ""))
    docs = Path(args.docs or f"docs/{name}")
    if args.plan:
        plan = plan_sharing(sharing, out) if has_manifest(out / "data") else None
        if plan is None:
            print(f"{out / 'data'}: the mixture is not prepared yet; the steps of the single-domain runs follow "
                  "from it (run without --plan)")
            return 0
        for item in plan:
            state = "done" if is_trained(item.run) else ("failed" if has_run_error(item.run.folder) else "to train")
            print(f"{item.arm:14s} {item.run.dataset + '/' + item.run.name:44s} {item.run.steps:6d} steps "
                  f"{item.tokens:>10,} tokens  {state}")
        left = sum(i.run.steps for i in plan if not is_trained(i.run))
        print(f"{len(plan)} runs; {left:,} of {sum(i.run.steps for i in plan):,} optimiser steps left")
        return 0
    command = sharing_command(args)
    results = run_sharing(sharing, out, progress=not args.no_progress, report_only=args.report_only,
                          command=command)
    md, js = write_sharing_page(results, docs)
    print(f"wrote {md} and {js}")
    return 1 if failed_count(results) else 0


def sharing_command(args: argparse.Namespace) -> str:
    """The command the page quotes: what reproduces it (the run folder is left out: it is this machine's)."""
    import shlex

    from shortcutlm.ablation.markdown import display_path

    parts = ["shortcutlm", "ablate", display_path(Path(args.recipe))]
    if args.preset:
        parts += ["--preset", args.preset]
    for item in args.overrides:
        parts += ["--set", item]
    if args.docs:
        parts += ["--docs", display_path(Path(args.docs))]
    return " ".join(shlex.quote(p) for p in parts)
