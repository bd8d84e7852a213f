"""Training the grid: prepare each dataset once, train what is missing run by run (a failure is
recorded and the others go on; Ctrl-C writes the page first), evaluate, then write the page.

Re-running keeps finished trainings and cached evaluations, so the grid can be spread over
several sittings; runs are ordered seed by seed, so a partial grid is balanced.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any
from collections.abc import Callable

from shortcutlm.ablation.collect import collect_results, device
from shortcutlm.ablation.commands import command_line
from shortcutlm.ablation.config import Ablation
from shortcutlm.ablation.page import write_results
from shortcutlm.ablation.runs import (Run, cached_evaluation, check_settings, evaluate_run, is_trained, plan_runs,
                                      run_recipe_for, shard_folder, short_error)
from shortcutlm.ablation.kept import keep_previous_sections
from shortcutlm.artifacts.ablation import clear_run_error, read_previous_results, write_run_error, write_run_record
from shortcutlm.artifacts.checkpoint import CheckpointFolder
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.run.recipe import Recipe


class Progress:
    """``[k/n] dataset run: what`` lines with elapsed time and an ETA from this sitting's pace."""

    def __init__(self, runs: list[Run], pending: set[str], echo: Callable[[str], None]) -> None:
        self.total = len(runs)
        self.start = time.monotonic()
        self.echo = echo
        self.pending_steps = {str(r.folder): r.steps for r in runs if str(r.folder) in pending}
        self.steps_done, self.seconds_spent = 0, 0.0

    def trained(self, run: Run, seconds: float) -> None:
        self.pending_steps.pop(str(run.folder), None)
        self.steps_done += run.steps
        self.seconds_spent += seconds

    def skipped(self, run: Run) -> None:
        self.pending_steps.pop(str(run.folder), None)

    def eta(self) -> str:
        left = sum(self.pending_steps.values())
        if not left:
            return "0:00:00"
        if not self.steps_done:
            return "after the first run"
        return clock(left * self.seconds_spent / self.steps_done)

    def line(self, index: int, run: Run, what: str) -> None:
        elapsed = clock(time.monotonic() - self.start)
        self.echo(f"[{index}/{self.total}] {run.dataset} {run.name} ({run.steps} steps): {what} "
                  f"— elapsed {elapsed}, ETA {self.eta()}")


def load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load averages (None where the system has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def prepare_dataset(recipe: Recipe, data_dir: Path, progress: bool) -> None:
    """Prepare the dataset's shards unless a complete manifest made from the same specs is there."""
    manifest = ShardManifest.read_or_none(data_dir)
    canon = lambda x: json.dumps(x, sort_keys=True, default=str)  # noqa: E731
    tok_settings = {"domain": recipe.tokenizer.get("domain"),
                    **{k: v for k, v in recipe.tokenizer.items() if k != "domain"}}
    if (manifest is not None and manifest.complete and canon(manifest.raw.get("source")) == canon(recipe.source)
            and canon(manifest.raw.get("tokenizer_settings")) == canon(tok_settings)):
        return
    from shortcutlm.datasets.prepare import prepare

    prepare(recipe.source, recipe.tokenizer, data_dir, workers=2, progress=progress)


def _quiet_lightning() -> None:
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _train(run: Run, recipe: Recipe, data_dir: Path, progress: bool) -> float:
    """Train one run to its last step and record the sitting in ``ablation.json``; returns its wall seconds."""
    from shortcutlm.run import training
    from shortcutlm.bench.common import machine

    load_before = load_average()
    started = time.monotonic()
    training.train(recipe, run.variant, data_dir, run.folder, progress=progress)
    seconds = time.monotonic() - started
    if not is_trained(run):
        raise RuntimeError(f"training stopped at step {CheckpointFolder(run.folder).step} of {run.steps}")
    # the machine's load while it trained: a shared machine's figures are read with it
    info = {**machine(), "load_avg_before": load_before, "load_avg_after": load_average()}
    write_run_record(run.folder, seconds, info, time.strftime("%Y-%m-%dT%H:%M:%S"), run.steps, run.seed)
    return seconds


def record_failure(run: Run, exc: BaseException, failures: dict[str, str], bar: Progress,
                   echo: Callable[[str], None], where: str) -> None:
    """A run that failed, and the grid goes on: its one-line reason kept for the page, said on the
    terminal after ``where`` (``[3/27]``), and ``error.json`` written in its folder (called while
    ``exc`` is being handled, for its traceback)."""
    failures[str(run.folder)] = short_error(exc)
    bar.skipped(run)
    echo(f"{where} {run.dataset} {run.name}: FAILED — {short_error(exc)}")
    try:
        write_run_error(run.folder, short_error(exc), traceback.format_exc(limit=8), time.strftime("%Y-%m-%dT%H:%M:%S"))
    except OSError:
        pass


def run_ablation(ablation: Ablation, out: str | Path, docs: str | Path | None = "docs",
                 datasets: list[str] | None = None, progress: bool = True, report_only: bool = False,
                 command: str | None = None, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and evaluate what is missing of the grid, then write ``<docs>/results.md`` and ``results.json``.

    ``datasets`` limits the training to those; the page covers every dataset of the ablation
    (what exists of the others is reported as it stands). ``report_only`` trains and prepares
    nothing (it still evaluates finished checkpoints that lack a cached evaluation).
    Returns the results dictionary written to ``results.json``.
    """
    echo = echo or (lambda text: print(text, flush=True))
    out = Path(out)
    command = command or command_line(ablation)
    to_train = [d for d in ablation.datasets if datasets is None or d in datasets]
    runs = plan_runs(ablation, out, to_train)
    pending = {str(r.folder) for r in runs if not is_trained(r)}
    trained_here = [] if report_only else to_train  # a page rebuilt without training keeps what it cannot see
    failures: dict[str, str] = {}
    if not report_only:
        _quiet_lightning()
        done_runs = len(runs) - len(pending)
        echo(f"ablation {ablation.config.name}: {len(runs)} runs over {', '.join(to_train)}; "
             f"{done_runs} already trained, {len(pending)} to train (out: {out})")
        prep_errors: dict[str, str] = {}
        for dataset in to_train:
            data_dir = shard_folder(out, dataset)
            try:
                echo(f"prepare {dataset} -> {data_dir}")
                prepare_dataset(ablation.recipes[dataset], data_dir, progress)
            except Exception as exc:  # noqa: BLE001 - recorded, the other datasets go on
                prep_errors[dataset] = f"prepare failed: {short_error(exc)}"
                echo(f"prepare {dataset} FAILED: {short_error(exc)}")
        bar = Progress(runs, pending, echo)
        try:
            for index, run in enumerate(runs, 1):
                recipe = run_recipe_for(ablation.recipes[run.dataset], run)
                data_dir = shard_folder(out, run.dataset)
                if run.dataset in prep_errors:
                    failures[str(run.folder)] = prep_errors[run.dataset]
                    bar.skipped(run)
                    continue
                try:
                    check_settings(run, recipe, data_dir)
                    if str(run.folder) in pending:
                        bar.line(index, run, "training")
                        bar.trained(run, _train(run, recipe, data_dir, progress))
                    else:
                        bar.skipped(run)
                    if cached_evaluation(run, recipe) is None:
                        bar.line(index, run, "evaluating")
                    evaluate_run(run, recipe, data_dir, device(recipe))
                    clear_run_error(run.folder)
                except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the grid goes on
                    record_failure(run, exc, failures, bar, echo, f"[{index}/{len(runs)}]")
        except BaseException:  # Ctrl-C / SystemExit: write what is there, then stop
            echo("interrupted: writing the page from the finished runs; run the same command again to go on")
            if docs is not None:
                try:
                    _write_page(collect_results(ablation, out, command, failures, diagnostics=False), Path(docs), out,
                                trained_here, echo)
                except Exception as exc:  # noqa: BLE001 - the interruption matters more
                    echo(f"could not write the page: {short_error(exc)}")
            raise
    results = collect_results(ablation, out, command, failures, diagnostics=docs is not None, echo=echo)
    if docs is not None:
        md, js = _write_page(results, Path(docs), out, trained_here, echo)
        echo(f"wrote {md} and {js}")
    return results


def _write_page(results: dict[str, Any], docs: Path, out: Path, trained_here: list[str],
                echo: Callable[[str], None]) -> tuple[Path, Path]:
    """The page, keeping the previous page's sections of datasets with no run folder here."""
    for dataset in keep_previous_sections(results, read_previous_results(docs), trained_here):
        echo(f"{dataset}: no run folder here; its section is kept from the page written "
             f"{results['datasets'][dataset]['kept_from']}")
    return write_results(results, docs, out)
