"""``shortcutlm ablate``: every decoder variant × seed on each dataset, then ``docs/results.md``.

One command trains the grid that ``recipes/ablation.yaml`` describes, evaluates every run,
and writes a results page whose every figure it produced itself::

    shortcutlm ablate recipes/ablation.yaml                       # the CPU-sized grid (a few hours, 2 cores)
    shortcutlm ablate recipes/ablation.yaml --preset gpu          # the same grid, scaled up for one GPU
    shortcutlm ablate recipes/ablation.yaml --datasets shakespeare --set seeds=[0]
    shortcutlm ablate recipes/ablation.yaml --plan                # what is done, what is left, no training
    shortcutlm ablate recipes/ablation.yaml --report-only         # re-render the page from finished runs

What it runs, per dataset: each variant at each seed for ``train.max_steps`` steps (equal steps
and tokens for all variants), and the baseline again at each multiple of ``baseline_steps``
(ResFormer's matched-loss view: how many more tokens does the baseline need to reach a
variant's loss?). The seed is the recipe's ``train.seed``: the model's initialisation and the
order of the training data both follow it, so seed s of every variant sees the same batches.

Layout under ``--out`` (default ``runs/ablation``, ``runs/ablation-<preset>`` with a preset)::

    <dataset>/data/                       shards shared by every run of the dataset
    <dataset>/<variant>-s<seed>/          checkpoint folder (``shortcutlm train``'s)
    <dataset>/<baseline>-x1.25-s<seed>/   the baseline at 1.25x the steps
    <run>/eval.json                       cached evaluation (refreshed when the weights change)
    <run>/ablation.json                   wall time and machine of the sitting that trained it
    <run>/error.json                      why the run failed (removed once it succeeds)
    <dataset>/step_timing.json            the side-by-side step timing (cached)
    <dataset>/diagnostics/                compare_checkpoints output (seed-0 checkpoints)

Re-running keeps finished trainings and cached evaluations and trains only what is missing,
so the grid can be spread over several sittings (runs are ordered seed by seed, so a partial
grid is balanced). A run that fails is recorded with its error and the others go on. The page
(``<docs>/results.md`` + ``results.json``, plots under ``<docs>/results/<dataset>/``) renders
whatever is finished and marks the rest pending.

The modules, in the order the data flows through them:

    config     the ablation YAML: schema, load_ablation, each dataset's recipe
    runs       planning the runs, the folder layout, is-trained and the evaluation cache
    grid       training the grid (resumable), then collecting and writing the page
    records    what the page shows of one finished run (loss, parameters, speed, KV cache)
    collect    every run folder into records, then one section per dataset
    summary    a dataset's section: per-variant statistics, costs and the matched-loss view
    stats      mean ± std over seeds, difference from the baseline, verdicts, matched multiple
    curves     training loss relative to the baseline, and its plot
    timing     side-by-side step timing of every variant
    diagnose   compare_checkpoints on one seed's checkpoints (cached)
    sentences  the one-sentence readings of the diagnostics
    page       results.md and results.json from the collected results
    markdown   table and cell formatting of the page
    commands   the command lines the page quotes
    cli        ``configure`` / ``run`` and ``--plan``

Given a recipe with a ``mixture`` instead of an ablation file, ``ablate`` runs the experiment
"does sharing help?" (``shortcutlm ablate recipes/multimodal.yaml --preset tiny``): the joint
model against single-domain models matched to its tokens, per domain, on the same training and
evaluation code as the grid above:

    sharing       the experiment's settings, the joint run's token count per domain, the plan
    sharing_grid  training and evaluating its runs, and collecting them into results.json
    sharing_page  its results.md from that dictionary
"""
from __future__ import annotations

from shortcutlm.ablation.cli import configure, print_plan, run
from shortcutlm.ablation.collect import collect_results
from shortcutlm.ablation.commands import command_line, narrowed_command
from shortcutlm.ablation.config import (DEFAULT_RECIPE, Ablation, AblationConfig, DatasetEntry, DiagnosticsSettings,
                                        Finding, dataset_recipe, load_ablation)
from shortcutlm.ablation.curves import plot_relative_loss, relative_training_loss
from shortcutlm.ablation.diagnose import run_diagnostics
from shortcutlm.ablation.grid import Progress, prepare_dataset, run_ablation
from shortcutlm.ablation.page import (render_dataset, render_diagnostics, render_markdown, render_summary,
                                      write_results)
from shortcutlm.ablation.records import kv_cache_bytes, median_step_seconds, run_record, step_time_spread
from shortcutlm.ablation.runs import (ERROR_FILE, EVAL_FILE, EVAL_VERSION, RUN_FILE, Run, cached_evaluation,
                                      check_settings, evaluate_run, evaluation_key, is_trained, plan_runs,
                                      run_recipe_for, steps_for, validation_row)
from shortcutlm.report.diagnostic_sentences import NEAR_UNIFORM, diagnostic_sentences
from shortcutlm.ablation.stats import VERDICT_RULE, compare, matched_multiple, mean_std, verdict
from shortcutlm.ablation.summary import summarize
from shortcutlm.ablation.timing import (STEP_TIMING_FILE, STEP_TIMING_STEPS, STEP_TIMING_WARMUP, apply_step_timing,
                                        side_by_side_timing)
from shortcutlm.artifacts.files import jsonable

__all__ = [
    "configure", "run", "print_plan",
    "DEFAULT_RECIPE", "Ablation", "AblationConfig", "DatasetEntry", "DiagnosticsSettings", "Finding", "dataset_recipe",
    "load_ablation",
    "EVAL_FILE", "RUN_FILE", "ERROR_FILE", "EVAL_VERSION", "Run", "steps_for", "plan_runs", "run_recipe_for",
    "is_trained", "check_settings", "evaluation_key", "cached_evaluation", "evaluate_run", "validation_row",
    "run_ablation", "prepare_dataset", "Progress",
    "run_record", "median_step_seconds", "step_time_spread", "kv_cache_bytes",
    "collect_results", "summarize",
    "mean_std", "compare", "verdict", "matched_multiple", "VERDICT_RULE",
    "relative_training_loss", "plot_relative_loss",
    "side_by_side_timing", "apply_step_timing", "STEP_TIMING_FILE", "STEP_TIMING_STEPS", "STEP_TIMING_WARMUP",
    "run_diagnostics", "diagnostic_sentences", "NEAR_UNIFORM",
    "render_markdown", "render_summary", "render_dataset", "render_diagnostics", "write_results",
    "command_line", "narrowed_command", "jsonable",
]
