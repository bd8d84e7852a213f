"""``shortcutlm ablate``: the command line (``configure`` / ``run``) and ``--plan``'s listing."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shortcutlm.ablation.commands import command_line
from shortcutlm.ablation.config import DEFAULT_RECIPE, Ablation, load_ablation
from shortcutlm.ablation.grid import clock, run_ablation
from shortcutlm.ablation.runs import is_trained, plan_runs
from shortcutlm.artifacts.ablation import PAGE_JSON, PAGE_MD, has_run_error, read_run_record
from shortcutlm.core.config_schema import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", default=DEFAULT_RECIPE, help=f"ablation YAML (default {DEFAULT_RECIPE})")
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
