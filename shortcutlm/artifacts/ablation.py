"""The ablation's records: what each run folder keeps beside its checkpoint, the per-dataset caches,
and the results page.

Per run folder (a checkpoint folder of the grid)::

    ablation.json        wall time, machine, steps and seed of the sitting that trained it
    error.json           why the run failed (removed once it succeeds)
    eval.json            cached evaluation row on the recipe's split
    eval_<split>.json    the same on another split (``valid``)

Per dataset: ``step_timing.json`` (side-by-side step timing) and ``diagnostics/ablation_cache.json``.
The page: ``<docs>/results.md``, the same as HTML in ``results.html``, and ``results.json``.

A cache is ``{"key": ..., "<field>": ...}``; keys are compared after the one JSON sanitiser
(:func:`~shortcutlm.artifacts.files.jsonable`), so a key read back from disk equals a freshly
computed one, and a cache made under another key is recomputed. Caches and records are only
worth their cost, so none of them is written durably.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from shortcutlm.artifacts.files import jsonable, read_json_or_none, write_json, write_text

RUN_FILE = "ablation.json"
ERROR_FILE = "error.json"
EVAL_FILE = "eval.json"
STEP_TIMING_FILE = "step_timing.json"
#: The sharing experiment's caches: what of a joint run's loss falls on other domains' ids, and the
#: replayed count of each domain's tokens in the joint run of one seed.
OFF_DOMAIN_FILE = "off_domain.json"
DOMAIN_TOKENS_FILE = "domain_tokens-s{seed}.json"
DIAGNOSTICS_CACHE_FILE = "ablation_cache.json"
PAGE_MD = "results.md"
PAGE_JSON = "results.json"
PAGE_HTML = "results.html"


# ------------------------------------------------------------------------------------ caches

def read_cache(path: Path, key: Any, field: str) -> Any:
    """``field`` of the cache file at ``path`` when it was stored under ``key``; else None."""
    data = read_json_or_none(path)
    if isinstance(data, dict) and data.get("key") == jsonable(key):
        return data.get(field)
    return None


def write_cache(path: Path, key: Any, field: str, value: Any) -> Path:
    return write_json(path, {"key": key, field: value})


# ------------------------------------------------------------------------------------ one run

def write_run_record(folder: Path, wall_s: float, machine: dict[str, Any], trained: str, steps: int,
                     seed: int) -> Path:
    """``ablation.json``: the sitting that trained the run (``trained`` is its ISO time)."""
    return write_json(Path(folder) / RUN_FILE, {"wall_s": wall_s, "machine": machine, "trained": trained,
                                                "steps": steps, "seed": seed})


def read_run_record(folder: Path) -> dict[str, Any]:
    """``ablation.json`` (``{}`` when the run has none: not trained by the ablation, or unreadable)."""
    data = read_json_or_none(Path(folder) / RUN_FILE)
    return data if isinstance(data, dict) else {}


def write_run_error(folder: Path, error: str, traceback: str, when: str) -> Path:
    """``error.json``: why the run failed (``error`` is one line), with a short traceback."""
    return write_json(Path(folder) / ERROR_FILE, {"error": error, "traceback": traceback, "when": when})


def read_run_error(folder: Path) -> str | None:
    """The one-line reason of the run's last failure, or None."""
    data = read_json_or_none(Path(folder) / ERROR_FILE)
    return data.get("error") if isinstance(data, dict) else None


def has_run_error(folder: Path) -> bool:
    return (Path(folder) / ERROR_FILE).is_file()


def clear_run_error(folder: Path) -> None:
    (Path(folder) / ERROR_FILE).unlink(missing_ok=True)


def evaluation_cache_path(folder: Path, split: str | None, default_split: str) -> Path:
    """``eval.json`` for the recipe's own split (the table's loss), ``eval_<split>.json`` for another."""
    return Path(folder) / (EVAL_FILE if split in (None, default_split) else f"eval_{split}.json")


# ------------------------------------------------------------------------------------ per dataset

def step_timing_path(dataset_dir: Path) -> Path:
    return Path(dataset_dir) / STEP_TIMING_FILE


def diagnostics_cache_path(diagnostics_dir: Path) -> Path:
    return Path(diagnostics_dir) / DIAGNOSTICS_CACHE_FILE


# ------------------------------------------------------------------------------------ the page

def write_page(docs: Path, markdown: str, results: dict[str, Any], html: str | None = None) -> tuple[Path, Path]:
    """``<docs>/results.md``, ``<docs>/results.json`` and, given ``html``, ``<docs>/results.html``;
    returns the first two paths."""
    docs = Path(docs)
    md = write_text(docs / PAGE_MD, markdown)
    if html is not None:
        write_text(docs / PAGE_HTML, html)
    js = write_json(docs / PAGE_JSON, results, sort_keys=False)  # the grid's order, for a page rebuilt from it
    return md, js


def read_previous_results(docs: Path) -> dict[str, Any] | None:
    """The last page's ``results.json`` in ``docs``, or None when there is none (or it is unreadable)."""
    found = read_json_or_none(Path(docs) / PAGE_JSON)
    return found if isinstance(found, dict) else None
