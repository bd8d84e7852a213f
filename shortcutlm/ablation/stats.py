"""Statistics over seeds: mean ± std, the difference from the baseline, its verdict, and the
matched-loss multiple (how many times the tokens the baseline needs to reach a variant's loss)."""
from __future__ import annotations

import math
import statistics
from typing import Any
from collections.abc import Iterable

def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None below two values) and count, of the finite values
    (a missing one, None, is left out)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None, 0
    return (statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None, len(finite))


def compare(variant: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """Variant minus baseline loss: paired by seed when two or more seeds are shared, else unpaired,
    with its :func:`verdict`.

    Paired: the mean of the per-seed differences ± their sample std. Unpaired: the difference
    of the means ± the combined std sqrt(s_v² + s_b²). ``spread`` is None when neither exists.
    """
    found = _difference(variant, baseline)
    return {**found, "verdict": verdict(found["delta"], found["spread"])}


def _difference(variant: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    shared = sorted(set(variant) & set(baseline))
    if len(shared) >= 2:
        diffs = [variant[s] - baseline[s] for s in shared]
        return {"delta": statistics.fmean(diffs), "spread": statistics.stdev(diffs), "n": len(shared),
                "method": "paired", "seeds": shared}
    mv, sv, nv = mean_std(list(variant.values()))
    mb, sb, nb = mean_std(list(baseline.values()))
    if mv is None or mb is None:
        return {"delta": None, "spread": None, "n": 0, "method": None, "seeds": []}
    spread = math.sqrt(sv ** 2 + sb ** 2) if sv is not None and sb is not None else None
    return {"delta": mv - mb, "spread": spread, "n": min(nv, nb),
            "method": "unpaired" if spread is not None else "single",
            "seeds": shared}


VERDICT_RULE = ("better / worse: the mean difference from the baseline is larger than its spread "
                "(the sample std of the per-seed differences; seeds pair runs that saw the same batches); "
                "within spread otherwise. Lower loss is better.")


def verdict(delta: float | None, spread: float | None) -> str:
    """``better`` / ``worse`` when the difference exceeds its spread, else ``within spread``.

    Lower loss is better. Without a spread (one seed) the sign decides, and the verdict says so.
    """
    if delta is None:
        return "pending"
    if spread is None or not math.isfinite(spread):
        return ("better" if delta < 0 else "worse" if delta > 0 else "equal") + " (one seed, no spread)"
    if delta < -spread:
        return "better"
    if delta > spread:
        return "worse"
    return "within spread"


def matched_multiple(loss: float | None, curve: list[tuple[float, float]]) -> tuple[float | None, str]:
    """How many times the 1× baseline's tokens the baseline needs to reach ``loss``.

    ``curve`` is ``[(multiple, baseline loss), ...]``. Linear interpolation between the
    multiples where the baseline's loss first falls to ``loss``. Returns ``(value, label)``;
    the value is None with label ``< 1×`` when the variant is worse than the 1× baseline and
    ``> 1.5×`` (the largest multiple) when it is better than the baseline ever gets.
    """
    points = sorted((m, base) for m, base in curve if base is not None and math.isfinite(base))
    if loss is None or not math.isfinite(loss) or len(points) < 2:
        return None, "pending"
    first_m, first_l = points[0]
    if loss > first_l:
        return None, f"< {first_m:g}×"
    if loss == first_l:
        return first_m, f"{first_m:.2f}×"
    for (m0, l0), (m1, l1) in zip(points, points[1:]):
        if l0 > loss >= l1:
            value = m0 + (l0 - loss) / (l0 - l1) * (m1 - m0)
            return value, f"{value:.2f}×"
    return None, f"> {points[-1][0]:g}×"
