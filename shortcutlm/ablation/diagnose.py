"""The diagnostics section's numbers and plots: ``shortcutlm.run.diagnostics.compare_checkpoints`` on
one seed's checkpoints, cached in ``<out>/<dataset>/diagnostics/`` while their weights are unchanged."""
from __future__ import annotations

from pathlib import Path
from typing import Any
from collections.abc import Callable

from shortcutlm.ablation.config import Ablation
from shortcutlm.ablation.runs import Run, is_trained, run_folder, shard_folder, short_error, weights_key
from shortcutlm.report.diagnostic_sentences import diagnostic_sentences
from shortcutlm.artifacts.ablation import diagnostics_cache_path, read_cache, write_cache
from shortcutlm.artifacts.files import jsonable

def run_diagnostics(ablation: Ablation, out: Path, dataset: str,
                    echo: Callable[[str], None]) -> dict[str, Any]:
    """``diagnostics.compare_checkpoints`` on the diagnosed seed's checkpoints (cached by their weights)."""
    from shortcutlm.run import diagnostics as diag

    cfg = ablation.config
    wanted = [v for v in cfg.diagnostics.variants if v in cfg.variants]
    if not hasattr(diag, "compare_checkpoints"):
        return {"status": "unavailable",
                "note": "this version of shortcutlm.run.diagnostics has no compare_checkpoints; section skipped"}
    if cfg.baseline not in wanted or len(wanted) < 2:
        return {"status": "disabled", "note": f"`diagnostics.variants` names {wanted or 'no variant'} of this "
                                              "ablation; it needs the baseline and another"}
    folders, labels, missing = [], [], []
    for variant in wanted:
        folder = run_folder(out, dataset, variant, cfg.diagnostics.seed)
        steps = ablation.recipes[dataset].train.max_steps
        run = Run(dataset, variant, cfg.diagnostics.seed, 1.0, steps, folder, steps)
        if is_trained(run):
            folders.append(folder)
            labels.append(variant)
        else:
            missing.append(variant)
    if cfg.baseline not in labels or len(labels) < 2:
        return {"status": "pending", "missing": missing, "seed": cfg.diagnostics.seed}
    target = out / dataset / "diagnostics"
    key = {"folders": [str(f) for f in folders], "labels": labels, "weights": [weights_key(f) for f in folders]}
    value = read_cache(diagnostics_cache_path(target), key, "value")
    if value is None or not all(Path(p).is_file() for p in value["plots"].values()):
        echo(f"diagnostics {dataset}: comparing {', '.join(labels)} (seed {cfg.diagnostics.seed})")
        try:
            got = diag.compare_checkpoints(folders, target, data_dir=shard_folder(out, dataset), labels=labels)
        except Exception as exc:  # noqa: BLE001 - the page says so and the rest renders
            return {"status": "failed", "error": short_error(exc), "labels": labels}
        value = jsonable({"json": got.get("json"), "plots": got.get("plots") or {}, "results": got.get("results")})
        write_cache(diagnostics_cache_path(target), key, "value", value)
    value = dict(value)
    value.update({"status": "done", "labels": labels, "missing": missing, "seed": cfg.diagnostics.seed,
                  "folder": str(target)})
    value["sentences"] = diagnostic_sentences(value.pop("results", None), labels, cfg.baseline)
    return value
