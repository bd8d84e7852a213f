"""``shortcutlm ablate <mixture recipe>``: does sharing one decoder across domains help?

Given a recipe with a ``mixture`` (``recipes/multimodal.yaml``), ``ablate`` runs the experiment a
joint model invites, per domain, for every variant of the recipe and every seed::

    shortcutlm ablate recipes/multimodal.yaml --preset tiny
    shortcutlm ablate recipes/multimodal.yaml --preset tiny --set seeds=[0] --plan

* ``joint``: one decoder trained on the mixture for ``train.max_steps`` steps, evaluated on each
  domain's own test split (the per-domain evaluation of :mod:`shortcutlm.run.joint`);
* ``domain_tokens``: a single-domain model of the same architecture, trained on that part's own
  prepared folder (its own tokenizer) for as many tokens *of that domain* as the joint run of the
  same seed read. The count is not assumed from the mixture's probabilities: the joint run's
  training batches are replayed (the mixed loader is deterministic per seed) and their targets
  counted by the domain their ids belong to, and the replayed total is checked against the
  ``tokens_seen`` the joint checkpoint records;
* ``total_tokens``: the same single-domain model trained for as many tokens as the joint run read
  in all (its step count).

Both single-domain arms use the joint run's seed (initialisation, batch order), batch and block, so
seed s of every arm pairs in the verdicts. ``--set same_total=[baseline]`` limits the
``total_tokens`` arm to some variants (the costliest arm: cut it first when time is short).

Layout under ``--out`` (default ``runs/ablation-<recipe>``, plus ``-<preset>``)::

    data/                         the mixture folder; data/parts/<part>/ each part's prepared folder
    joint/<variant>-s<seed>/      the joint checkpoints (eval.json holds every domain's row)
    joint/domain_tokens-s<seed>.json   the replayed count of each domain's tokens (cached)
    <part>/<variant>-domain-s<seed>/   trained on the joint run's tokens of that domain
    <part>/<variant>-total-s<seed>/    trained on the joint run's total tokens

Training, its records (``ablation.json``, ``error.json``), the evaluation cache, resume of finished
runs and the seed-paired statistics are the single-domain ablation's
(:mod:`~shortcutlm.ablation.grid`, :mod:`~shortcutlm.ablation.runs`,
:mod:`~shortcutlm.ablation.stats`); this module plans the runs and counts the tokens, and
:mod:`~shortcutlm.ablation.sharing_page` writes ``<docs>/results.md`` and ``results.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast
from collections.abc import Callable

import numpy as np

from shortcutlm.ablation.runs import Run, steps_for
from shortcutlm.artifacts.ablation import DOMAIN_TOKENS_FILE, read_cache, write_cache
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.core.config_schema import ConfigError, yaml_file
from shortcutlm.run.recipe import Recipe, load_recipe

__all__ = ["ARMS", "Sharing", "SharingRun", "is_mixture_recipe", "load_sharing", "part_domains", "part_recipe",
           "count_domain_tokens", "count_window", "domain_steps", "plan_sharing", "JOINT", "COUNT_VERSION"]

JOINT = "joint"
#: The arms of the experiment, in the page's order: what each single-domain model is matched to.
ARMS = {"joint": "the joint model (one decoder on the mixture)",
        "domain_tokens": "single-domain, trained on as many of that domain's tokens as the joint model read",
        "total_tokens": "single-domain, trained on as many tokens as the joint model read in all"}
COUNT_VERSION = 2
#: ``--set`` keys that belong to the experiment, not to the recipe.
EXPERIMENT_KEYS = ("seeds", "same_total")


def is_mixture_recipe(path: str | Path) -> bool:
    """True when the YAML at ``path`` is a recipe with a ``mixture`` (the sharing experiment's input)."""
    try:
        raw = yaml_file(path, "ablation file")
    except ConfigError:
        return False
    return isinstance(raw, dict) and "mixture" in raw and "datasets" not in raw


@dataclass
class Sharing:
    """The experiment: the joint recipe (preset and ``--set`` applied), its seeds and variants."""

    path: Path
    recipe: Recipe
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    same_total: list[str] | None = None
    """Variants that get the ``total_tokens`` arm (None: every variant)."""
    preset: str | None = None
    overrides: list[str] = field(default_factory=list)

    @property
    def variants(self) -> list[str]:
        return list(self.recipe.variants)

    @property
    def baseline(self) -> str:
        return "baseline" if "baseline" in self.recipe.variants else self.variants[0]

    @property
    def parts(self) -> list[str]:
        return list(self.recipe.mixture["parts"])


def load_sharing(path: str | Path, preset: str | None = None, overrides: list[str] | None = None) -> Sharing:
    """The experiment of a mixture recipe: ``--set seeds=[..]`` and ``--set same_total=[..]`` are the
    experiment's own; every other ``--set`` goes to the recipe (e.g. ``train.max_steps=20``)."""
    from shortcutlm.core.config_schema import yaml_text

    seeds: list[int] = [0, 1, 2]
    same_total: list[str] | None = None
    recipe_overrides = []
    for item in overrides or []:
        key, _, value = item.partition("=")
        if key.strip() not in EXPERIMENT_KEYS:
            recipe_overrides.append(item)
            continue
        parsed = yaml_text(value, f"--set {item}")
        integers = isinstance(parsed, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in parsed)
        if not isinstance(parsed, list) or not parsed or (key.strip() == "seeds" and not integers):
            raise ConfigError(f"--set {item}: give a non-empty list, e.g. {key.strip()}=[0, 1]")
        if key.strip() == "seeds":
            if len(set(parsed)) != len(parsed):
                raise ConfigError(f"--set {item}: seeds must be distinct")
            seeds = list(parsed)
        else:
            same_total = [str(v) for v in parsed]
    recipe = load_recipe(path, preset, recipe_overrides)
    if not recipe.mixture:
        raise ConfigError(f"{path}: not a recipe with a mixture; the sharing experiment compares a joint model "
                          "with single-domain ones")
    if recipe.train.devices * recipe.train.num_nodes != 1:
        raise ConfigError(f"{path}: the sharing experiment trains on one device (the token count replays one "
                          f"rank's batches); set train.devices=1")
    unknown = [v for v in same_total or [] if v not in recipe.variants]
    if unknown:
        raise ConfigError(f"--set same_total: no variant(s) {unknown}; variants: {', '.join(recipe.variants)}")
    return Sharing(Path(path), recipe, seeds, same_total, preset, list(overrides or []))


def part_domains(mixture_dir: Path, sharing: Sharing) -> dict[str, dict[str, Any]]:
    """Part name -> its mixture record (``folder``, ``domain``, ``probability``, ``train_tokens``), from the
    mixture folder's manifest; one part per domain (a domain's single-domain model reads one folder)."""
    manifest = ShardManifest.read(mixture_dir)
    records = (manifest.raw.get("mixture") or {}).get("parts") or []
    if len(records) != len(sharing.parts):
        raise ConfigError(f"{mixture_dir}: holds {len(records)} parts, the recipe names {len(sharing.parts)}; "
                          "use another --out")
    domains = [r["domain"] for r in records]
    if len(set(domains)) != len(domains):
        raise ConfigError(f"{mixture_dir}: a domain given by several parts ({domains}); the sharing experiment "
                          "compares one single-domain model per domain")
    return dict(zip(sharing.parts, records))


def part_recipe(recipe: Recipe, part: str, part_dir: Path) -> Recipe:
    """The single-domain recipe of one part: the joint recipe's model, variants, training and evaluation,
    with the part's own source and tokenizer (read from its prepared folder's manifest)."""
    manifest = ShardManifest.read(part_dir)
    spec = recipe.mixture["parts"][part]
    source = spec.get("source") or manifest.raw.get("source") or {}
    tokenizer = spec.get("tokenizer") or {"domain": manifest.tokenizer.domain,
                                          **(manifest.raw.get("tokenizer_settings") or {})}
    return replace(recipe, name=part, source=dict(source), tokenizer=dict(tokenizer), mixture={})


# ------------------------------------------------------------------------------ the token count

def _count_key(mixture_dir: Path, recipe: Recipe, seed: int) -> dict[str, Any]:
    manifest = ShardManifest.read(mixture_dir)
    s = recipe.train
    return {"version": COUNT_VERSION, "fingerprint": manifest.tokenizer.fingerprint,
            "mixture": [[Path(r["folder"]).name, r["domain"], r["probability"], r["train_tokens"]]
                        for r in manifest.raw["mixture"]["parts"]],
            "seed": seed, "steps": s.max_steps, "batch_size": s.batch_size, "accumulate": s.accumulate,
            "num_workers": s.num_workers, "block_size": _block(recipe)}


def _block(recipe: Recipe) -> int:
    from shortcutlm.ablation.config import context_length

    return context_length(recipe, next(iter(recipe.variants)))


def count_domain_tokens(mixture_dir: Path, recipe: Recipe, seed: int, cache: Path | None = None) -> dict[str, Any]:
    """The targets the joint run of ``seed`` trains on, by domain, counted from its own batches.

    Replays the mixed loader exactly as training builds it (seed, batch, block, workers; one rank)
    for ``max_steps × accumulate`` batches and attributes each target id to its domain: a part's ids
    and its marker to that part, the joint EOS to the document it closes (as the single-domain
    stream has one EOS per document). ``tokens`` per domain is its ids plus its EOS, the targets a
    single-domain model of that domain would have; markers are counted apart. Cached in ``cache``
    under a key of the mixture and the settings.
    """
    key = _count_key(mixture_dir, recipe, seed)
    if cache is not None:
        found = read_cache(cache, key, "count")
        if found is not None:
            return found
    from shortcutlm.datasets.batches import train_batches
    from shortcutlm.tokenizers import load_tokenizer
    from shortcutlm.tokenizers.composite import CompositeTokenizer

    manifest = ShardManifest.read(mixture_dir)
    joint = cast(CompositeTokenizer, load_tokenizer(manifest.tokenizer_dir))
    domains = list(joint.parts)
    owner = np.full(joint.vocab_size, -1, dtype=np.int64)
    for i, domain in enumerate(domains):
        start, stop = joint.part_range(domain)
        owner[start:stop] = i
        owner[joint.markers[domain]] = i
    marker_ids = np.array([joint.markers[d] for d in domains])
    s = recipe.train
    block = _block(recipe)
    n_batches = s.max_steps * s.accumulate
    batches = train_batches(mixture_dir, block, s.batch_size, seed, num_workers=s.num_workers)
    tokens = np.zeros(len(domains), dtype=np.int64)
    markers = np.zeros(len(domains), dtype=np.int64)
    late = np.zeros(len(domains), dtype=np.int64)  # the last quarter's tokens: when in training a domain came
    late_markers = np.zeros(len(domains), dtype=np.int64)
    other = 0
    seen = 0
    for batch in batches:
        if seen >= n_batches:
            break
        seen += 1
        x = np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch, dtype=np.int64)
        for window in x.reshape(-1, x.shape[-1]):
            other += count_window(window, owner, marker_ids, tokens, markers)
            if seen > n_batches * 3 // 4:
                count_window(window, owner, marker_ids, late, late_markers)
    if seen < n_batches:
        raise RuntimeError(f"{mixture_dir}: the mixed loader ended after {seen} of {n_batches} batches")
    total = int(tokens.sum() + markers.sum() + other)
    count = {"batches": seen, "block_size": block, "batch_size": s.batch_size, "targets": total,
             "unattributed": other,
             "last_quarter_batches": n_batches - n_batches * 3 // 4,
             "domains": {d: {"tokens": int(tokens[i]), "markers": int(markers[i]), "last_quarter": int(late[i])}
                         for i, d in enumerate(domains)}}
    if cache is not None:
        write_cache(cache, key, "count", count)
    return count


def count_window(window: np.ndarray, owner: np.ndarray, marker_ids: np.ndarray, tokens: np.ndarray,
                 markers: np.ndarray) -> int:
    """Add one training window's targets (all but its first id) to ``tokens`` and ``markers`` by the
    domain ``owner`` gives each id (-1: a joint special); an EOS or pad counts for the domain of the
    last attributed id before it in the window. Returns the targets left unattributed (a special with
    no domain before it in the window)."""
    filled = _forward_fill(owner[window])
    targets, target_owner = window[1:], filled[1:]
    is_marker = np.isin(targets, marker_ids)
    np.add.at(markers, target_owner[is_marker], 1)
    keep = ~is_marker & (target_owner >= 0)
    np.add.at(tokens, target_owner[keep], 1)
    return int((~is_marker & (target_owner < 0)).sum())


def _forward_fill(owner: np.ndarray) -> np.ndarray:
    """Each -1 (EOS, pad) takes the owner of the last attributed id before it (-1 at the window's start)."""
    index = np.where(owner >= 0, np.arange(len(owner)), -1)
    np.maximum.accumulate(index, out=index)
    return np.where(index >= 0, owner[np.maximum(index, 0)], -1)


def domain_steps(tokens: int, recipe: Recipe) -> int:
    """Optimiser steps that give a single-domain run ``tokens`` targets at the recipe's batch and block
    (rounded to the nearest step, at least one)."""
    s = recipe.train
    return max(1, int(round(tokens / (s.batch_size * s.accumulate * _block(recipe)))))


# ------------------------------------------------------------------------------ planning

@dataclass
class SharingRun:
    """One training of the experiment: its arm, the part it is about (None for the joint model),
    and the ablation's :class:`Run` (folder, seed, steps)."""

    arm: str
    part: str | None
    run: Run
    tokens: int
    """Targets it trains on: steps × batch × accumulate × block."""
    matched: int | None = None
    """The joint run's count it is matched to (``domain_tokens``: that domain's; ``total_tokens``: all)."""


def data_folder(out: Path) -> Path:
    return Path(out) / "data"


def count_file(out: Path, seed: int) -> Path:
    return Path(out) / JOINT / DOMAIN_TOKENS_FILE.format(seed=seed)


def plan_sharing(sharing: Sharing, out: Path, count: Callable[[int], dict[str, Any]] | None = None,
                 records: dict[str, dict[str, Any]] | None = None) -> list[SharingRun]:
    """Every run, seed by seed (a grid stopped part-way is balanced), and within a seed: the joint
    variants, then each part's ``domain_tokens`` and ``total_tokens`` runs.

    ``count(seed)`` gives the joint run's count (default: :func:`count_domain_tokens`, cached beside
    the joint runs); it needs the mixture folder, not the joint checkpoint (the loader is deterministic).
    ``records`` maps each part to its domain (default: :func:`part_domains` of the mixture folder).
    """
    out = Path(out)
    recipe = sharing.recipe
    mixture = data_folder(out)
    records = records if records is not None else part_domains(mixture, sharing)
    count = count or (lambda seed: count_domain_tokens(mixture, recipe, seed, count_file(out, seed)))
    s = recipe.train
    per_step = s.batch_size * s.accumulate * _block(recipe)
    joint_steps = s.max_steps
    plan = []
    for seed in sharing.seeds:
        counted = count(seed)
        for variant in sharing.variants:
            plan.append(SharingRun(JOINT, None, Run(JOINT, variant, seed, 1.0, joint_steps,
                                                    out / JOINT / f"{variant}-s{seed}", joint_steps),
                                   joint_steps * per_step, counted["targets"]))
        for part, record in records.items():
            domain_tokens = counted["domains"][record["domain"]]["tokens"]
            steps = domain_steps(domain_tokens, recipe)
            for variant in sharing.variants:
                plan.append(SharingRun("domain_tokens", part,
                                       Run(part, variant, seed, steps / joint_steps, steps,
                                           out / part / f"{variant}-domain-s{seed}", joint_steps),
                                       steps * per_step, domain_tokens))
            for variant in sharing.variants:
                if sharing.same_total is not None and variant not in sharing.same_total:
                    continue
                plan.append(SharingRun("total_tokens", part,
                                       Run(part, variant, seed, 1.0, steps_for(joint_steps, 1.0),
                                           out / part / f"{variant}-total-s{seed}", joint_steps),
                                       joint_steps * per_step, counted["targets"]))
    return plan
