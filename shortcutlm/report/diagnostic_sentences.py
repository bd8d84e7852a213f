"""The one-sentence readings of the diagnostics plots, generated from ``compare_checkpoints``' numbers
(each variant against the baseline: higher or lower, and what that means)."""
from __future__ import annotations

import math
import statistics
from typing import Any
from collections.abc import Callable

NEAR_UNIFORM = 0.05  # depth weights this close (relative) to 1/depths read as no preference


def _mean(values: Any) -> float | None:
    """Mean of the finite numbers in a list (None, NaN and the like skipped); None when there are none."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)):
        return None
    found = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return statistics.fmean(found) if found else None


def _against(results: dict[str, Any], labels: list[str], baseline: str, pick: Callable[[dict[str, Any]], Any],
             higher: str, lower: str, unit: str = "") -> str | None:
    """``baseline X; a's is D higher (meaning), b's ...`` for one number per label (None when absent)."""
    base = _mean(pick(results[baseline])) if baseline in results else None
    if base is None:
        return None
    parts = []
    for label in labels:
        if label == baseline or label not in results:
            continue
        value = _mean(pick(results[label]))
        if value is None:
            continue
        diff = value - base
        if abs(diff) <= 1e-3 * max(1e-6, abs(base)):
            parts.append(f"{label} {_num(value)} (about the same)")
        else:
            parts.append(f"{label} {_num(value)} ({'+' if diff > 0 else '−'}{_num(abs(diff))}: "
                         f"{higher if diff > 0 else lower})")
    if not parts:
        return None
    return f"baseline {_num(base)}{unit}; " + "; ".join(parts)


def _get(key: str, slice_: slice | None = None) -> Callable[[dict[str, Any]], Any]:
    def pick(r: dict[str, Any]) -> Any:
        value = r.get(key)
        return value[slice_] if slice_ is not None and isinstance(value, list) else value
    return pick


def diagnostic_sentences(results: dict[str, Any] | None, labels: list[str], baseline: str) -> dict[str, str]:
    """One sentence per diagnostics plot, generated from ``compare_checkpoints``' numbers.

    Keys are the plot names of :func:`shortcutlm.drawing.diagnostic_plots.write_plots` (``entropy``,
    ``first_token_value_norm``, ``first_token_attention``, ``hidden_norm``, ``token_similarity``,
    ``depth_weights``, ``depth_map_<label>``); a number the diagnostics lack gives no sentence.
    """
    if not results or baseline not in results:
        return {}
    r = {label: results[label] for label in labels if isinstance(results.get(label), dict)}
    out: dict[str, str] = {}
    text = _against(r, labels, baseline, _get("entropy"), "less concentrated", "more concentrated", " nats")
    if text:
        norm = _mean(r[baseline].get("entropy_normalised"))
        out["entropy"] = (f"Token-importance entropy, mean over layers (lower = attention concentrated on fewer "
                          f"tokens): {text}" + (f"; the baseline is at {norm:.2f}× the entropy of uniform causal "
                                               "attention" if norm is not None else "") + ".")
    text = _against(r, labels, baseline, _get("first_token_value_ratio"), "the first token's values stand out more",
                    "the first token's values stand out less")
    if text:
        out["first_token_value_norm"] = ("First-token value norm over the other tokens' mean, averaged over layers "
                                         f"(ResFormer's value-state drain; 1 = no drain): {text}.")
    text = _against(r, labels, baseline, _get("first_token_attention"), "more of an attention sink",
                    "less of an attention sink")
    if text:
        ref = _mean(r[baseline].get("first_token_attention_uniform_causal"))
        out["first_token_attention"] = ("Attention the first token receives, mean over layers: " + text
                                        + (f"; uniform causal attention would give {_num(ref)}" if ref is not None
                                           else "") + ".")
    text = _against(r, labels, baseline, lambda x: (x.get("hidden_norm") or [None])[-1], "larger", "smaller")
    if text:
        out["hidden_norm"] = f"Hidden-state norm at the last block's output (before the final norm): {text}."
    text = _against(r, labels, baseline, _get("token_similarity", slice(1, None)),
                    "hidden states more alike (over-smoothing)", "hidden states more distinct")
    if text:
        out["token_similarity"] = f"Token similarity (mean off-diagonal cosine), mean over the block outputs: {text}."
    for label in labels:
        sc = r.get(label, {}).get("shortcut")
        if not isinstance(sc, dict):
            continue
        names = sc.get("depth_labels") or [str(d) for d in sc.get("depths", [])]
        weights = sc.get("depth_weights")
        if isinstance(weights, list) and len(weights) == len(names) and names:
            top = max(range(len(weights)), key=lambda i: weights[i])
            shares = ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights))
            out.setdefault("depth_weights", "")
            uniform = 1 / len(weights)
            lean = (f"most on {names[top]}" if max(abs(w - uniform) for w in weights) > NEAR_UNIFORM * uniform
                    else f"all within {NEAR_UNIFORM:.0%} of uniform ({uniform:.2f}): no depth is preferred")
            out["depth_weights"] += (f"{label}'s shortcut spreads its attention over depth as {shares} (mean over "
                                     f"tokens), {lean}. ")
        sentence = depth_map_sentence(label, names, sc.get("depth_map"))
        if sentence:
            out[f"depth_map_{label}"] = sentence
    if "depth_weights" in out:
        out["depth_weights"] = out["depth_weights"].strip()
    return out


def _num(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 1e-3:
        return f"{value:.3g}"
    return f"{value:.3f}" if magnitude < 10 else f"{value:.2f}"


def depth_map_sentence(label: str, names: list[str], depth_map: Any) -> str | None:
    """Which depth the shortcut of ``label`` attends to most, token by token, on the first window of
    a depth map (rows: tokens, columns: the depths ``names``); None when the map is empty."""
    if not (isinstance(depth_map, list) and depth_map and isinstance(depth_map[0], list) and names):
        return None
    tops = [max(range(len(row)), key=lambda i: row[i]) for row in depth_map if row]
    counts = {names[i]: tops.count(i) for i in sorted(set(tops)) if i < len(names)}
    shares = ", ".join(f"{n} for {c / len(tops):.0%}" for n, c in sorted(counts.items(), key=lambda kv: -kv[1]))
    kind = "varies with the token" if len(counts) > 1 else "is the same for every token"
    return (f"On the first window, the depth that {label}'s shortcut attends to most {kind}: "
            f"{shares} of the {len(tops)} tokens.")
