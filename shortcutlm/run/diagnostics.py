"""What a trained decoder does inside: attention concentration, value-state drain, hidden-state
growth, token similarity, and the shortcut's attention over depth — as JSON and PNG plots.

Public API::

    diagnose_checkpoint(folder, data_dir=None, split="valid", windows=4, tokens=None) -> dict
    compare_checkpoints(folders, out_dir, data_dir=None, labels=None, **kw) -> {"json", "plots", "results"}
    depth_map_for_checkpoint(folder, data_dir, out_png)    # one shortcut map (used by report.py)
    shortcutlm diagnose CKPT [CKPT ...] --out DIR [--data SHARDS] [--windows N] [--tokens N] [--labels a,b]

The sample. The first ``windows`` windows of the split (``valid``; falling back to ``test``,
then ``train``) in the loader's deterministic evaluation order, each ``T`` tokens long with
``T = tokens`` or, by default, the model's ``block_size`` capped at 512. Windows that hold
padding are skipped (a split too short for one full window gives its first window cut before
the padding). Every number below is an average over these windows. For several streams
(``n_streams > 1``, acoustic ``delay``) the window is what the model takes: ``[K, T]`` ids,
whose summed embeddings form one sequence of T positions.

Definitions (layers ``l = 1..L``; attention probabilities ``P[h, i, j]`` of query ``i`` over key
``j ≤ i`` in head ``h``, as ``GPT.forward(return_internals=True)`` returns them):

* **token-importance entropy** (ResFormer's attention-concentration measure):
  ``A = mean over heads and windows of P``; ``a_j = Σ_i A_ij`` (the attention token ``j``
  receives); ``a' = a / Σ_j a_j``; ``H = −Σ_j a'_j log a'_j`` in nats. Lower = more
  concentrated; all mass on one token gives 0, equal mass on every token gives ``log T``.
  Causal attention gives early tokens more mass by construction, so the same entropy is also
  computed for uniform causal attention (``A_ij = 1/(i+1)`` for ``j ≤ i``) and reported as
  ``entropy_uniform_causal``; ``entropy_normalised = H / entropy_uniform_causal`` is below 1
  when attention is more concentrated than that causal baseline.
* **first-token value norm**: ``‖v_0‖₂`` of the value states the layer attends with (for
  ``resformer`` the mixed ``V_n'``, for ``svformer`` layers ≥ 2 the shared ``V_1``), averaged
  over (key/value) heads and windows; ``other_token_value_norm`` is the mean ``‖v_j‖₂`` over
  heads, tokens ``j ≥ 1`` and windows; ``first_token_value_ratio`` is first / other.
* **first-token attention**: ``mean over heads, queries i (all T of them) and windows of
  P[h, i, 0]``; for uniform causal attention it is ``(Σ_{i=1..T} 1/i) / T``
  (``first_token_attention_uniform_causal``).
* **hidden-state norm**: mean ``‖h_t‖₂`` over tokens and windows, for the embedding output
  and each block's output (``L + 1`` values, before the final norm and the shortcut).
* **token similarity**: mean over ``i ≠ j`` of ``cos(h_i, h_j)`` of the same ``L + 1``
  hidden states, averaged over windows (near 1 = tokens collapse onto one direction).
* **shortcut depth weights** (``shortcut`` models only): the final layer's attention over
  the depths it reads (``emb`` = embedding output, ``Ln`` = output of block n), averaged over
  heads: ``depth_map`` is the token × depth matrix of the first window (each row sums to 1;
  for ``full`` and ``last_layer`` a depth's weight is summed over the positions it offers;
  ``last_layer``'s final-layer attention map above is summed over depths), ``depth_weights`` its
  average over tokens and windows, ``depth_weights_per_head`` the same per head.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np
import torch

from shortcutlm.artifacts.files import jsonable, write_json
from shortcutlm.artifacts.checkpoint import DATA, Checkpoint, checkpoint_labels, load_folder
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.datasets.batches import eval_batches
from shortcutlm.core.devices import resolve_device
from shortcutlm.core.errors import UserError
from shortcutlm.models import GPT
from shortcutlm.drawing.diagnostic_plots import DEPTH_MAP_COLORBAR, write_plots
from shortcutlm.drawing.plots import plot_heatmap

DIAGNOSTICS_JSON = "diagnostics.json"
MAX_TOKENS = 512

DEFINITIONS = {
    "entropy": "A = mean over heads and windows of the causal attention matrix; a_j = sum_i A_ij; "
               "a' = a / sum(a); H = -sum a' log a' (nats). Lower = more concentrated.",
    "entropy_uniform_causal": "H of uniform causal attention (A_ij = 1/(i+1), j <= i) with the same T",
    "entropy_normalised": "entropy / entropy_uniform_causal (< 1: more concentrated than uniform causal)",
    "first_token_value_norm": "||v_0||_2 of the values the layer attends with, mean over kv heads and windows",
    "other_token_value_norm": "mean ||v_j||_2 over kv heads, tokens j >= 1 and windows",
    "first_token_value_ratio": "first_token_value_norm / other_token_value_norm",
    "first_token_attention": "mean over heads, queries i and windows of A_i0",
    "first_token_attention_uniform_causal": "the same for uniform causal attention: H_T / T",
    "hidden_norm": "mean ||h_t||_2 over tokens and windows; embedding output then each block's output",
    "token_similarity": "mean off-diagonal cosine similarity of the hidden states, per depth, mean over windows",
    "shortcut.depth_map": "token x depth attention of the shortcut, mean over heads, first window (rows sum to 1)",
    "shortcut.depth_weights": "depth_map averaged over tokens and windows",
}



class DiagnosticsError(UserError, ValueError):
    """Diagnostics cannot run as asked (no tokens, bad window count or labels); the message says why."""


def depth_labels(model: GPT) -> list[str]:
    """Names of the depths the shortcut reads: ``emb`` (embedding output), ``L1``, …"""
    return ["emb" if d == 0 else f"L{d}" for d in model.config.depths]


def hidden_labels(n_layer: int) -> list[str]:
    """Names of the L + 1 hidden states: ``emb``, ``L1`` … ``L{n_layer}``."""
    return ["emb"] + [f"L{i}" for i in range(1, n_layer + 1)]


# ------------------------------------------------------------------------------------ the sample

def _splits(split: str) -> list[str]:
    return list(dict.fromkeys((split, "test", "train")))


def validation_window(data_dir: str | Path, block_size: int, split: str = "valid") -> torch.Tensor:
    """The first evaluation window of a split (falls back to test, then train): [1, (K,) T+1]."""
    for name in _splits(split):
        try:
            batch = next(iter(eval_batches(data_dir, name, block_size, 1)), None)
        except (KeyError, ValueError):
            continue
        if batch is not None:
            return batch
    raise DiagnosticsError(f"{data_dir}: no split has any tokens to diagnose")


def validation_windows(data_dir: str | Path, block_size: int, count: int = 4, split: str = "valid",
                       pad_id: int | None = None) -> tuple[torch.Tensor, str]:
    """The first ``count`` evaluation windows without padding: ([N, (K,) T+1], the split used).

    Falls back to ``test`` then ``train`` when the split has none. N may be smaller than
    ``count`` on a short split; if no window is free of padding, the first is cut before it.
    """
    if count < 1:
        raise DiagnosticsError(f"windows must be >= 1, got {count}")
    for name in _splits(split):
        full: list[torch.Tensor] = []
        partial: torch.Tensor | None = None
        try:
            for batch in eval_batches(data_dir, name, block_size, 1):
                window = batch[0]
                if pad_id is not None:
                    padded = window[..., :-1] == pad_id
                    if padded.dim() > 1:
                        padded = padded.any(0)
                    if padded.any():
                        if partial is None:
                            partial = window[..., :int(padded.nonzero()[0, 0]) + 1]
                        continue
                full.append(window)
                if len(full) == count:
                    break
        except (KeyError, ValueError):
            continue
        if full:
            return torch.stack(full), name
        if partial is not None and partial.shape[-1] >= 2:
            return partial[None], name
    raise DiagnosticsError(f"{data_dir}: no split has any tokens to diagnose")


# ------------------------------------------------------------------------------------ pure measures

def token_importance(attention: torch.Tensor) -> torch.Tensor:
    """a' (float64, length T): column mass of the mean attention matrix, normalised to sum 1.

    ``attention`` is ``[..., T, T]`` (rows are queries); every leading dim (heads, windows)
    is averaged first.
    """
    t = attention.shape[-1]
    a = attention.detach().to(torch.float64).reshape(-1, attention.shape[-2], t).mean(0).sum(0)
    return a / a.sum()


def _entropy(p: torch.Tensor) -> float:
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def token_importance_entropy(attention: torch.Tensor) -> float:
    """H = −Σ a' log a' (nats) of :func:`token_importance`: 0 for all mass on one token, log T for equal mass."""
    return _entropy(token_importance(attention))


def uniform_causal_importance(t: int) -> torch.Tensor:
    """a' of uniform causal attention (A_ij = 1/(i+1) for j ≤ i): a_j = Σ_{i ≥ j} 1/(i+1), normalised."""
    inv = 1.0 / torch.arange(1, t + 1, dtype=torch.float64)
    a = inv.flip(0).cumsum(0).flip(0)
    return a / a.sum()


def uniform_causal_entropy(t: int) -> float:
    """The token-importance entropy of uniform causal attention over ``t`` tokens (the causal baseline)."""
    return _entropy(uniform_causal_importance(t))


def uniform_causal_first_attention(t: int) -> float:
    """Mean over queries of A_i0 under uniform causal attention: (Σ_{i=1..t} 1/i) / t."""
    return float((1.0 / torch.arange(1, t + 1, dtype=torch.float64)).sum() / t)


def token_similarity(hidden: torch.Tensor) -> float:
    """Mean off-diagonal cosine similarity of the rows of ``hidden`` [T, d] (nan for T < 2)."""
    h = hidden.detach().to(torch.float64)
    t = h.shape[0]
    if t < 2:
        return float("nan")
    unit = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    total = float(unit.sum(0).square().sum())  # Σ_ij cos(h_i, h_j), diagonal included
    diagonal = float(unit.square().sum())  # t, less any zero rows
    return (total - diagonal) / (t * (t - 1))


def value_norms(values: torch.Tensor) -> tuple[float, float]:
    """(‖v_0‖₂, mean ‖v_j‖₂ for j ≥ 1) of value states [Hkv, T, hd], each averaged over heads."""
    norms = values.detach().to(torch.float64).norm(dim=-1)  # [Hkv, T]
    other = float(norms[:, 1:].mean()) if norms.shape[1] > 1 else float("nan")
    return float(norms[:, 0].mean()), other


# ------------------------------------------------------------------------------------ a model on windows

@torch.no_grad()
def diagnose_model(model: GPT, ids: torch.Tensor) -> dict[str, Any]:
    """Every measure of the module docstring for input ids ``[N, T]`` or ``[N, K, T]`` (N windows).

    The ids are model inputs (the windows without their last target). Windows run one at a
    time on the model's device, so memory holds one window's attention maps.
    """
    cfg = model.config
    model.eval()
    if ids.dim() != (2 if cfg.n_streams == 1 else 3):
        raise DiagnosticsError(f"expected ids [windows, {'' if cfg.n_streams == 1 else 'streams, '}time], "
                         f"got {tuple(ids.shape)}")
    device = next(model.parameters()).device
    n, t, layers = ids.shape[0], ids.shape[-1], cfg.n_layer
    mean_attention = [torch.zeros(t, t, dtype=torch.float64) for _ in range(layers)]
    first_attention = np.zeros(layers)
    v_first, v_other = np.zeros(layers), np.zeros(layers)
    h_norm, h_sim = np.zeros(layers + 1), np.zeros(layers + 1)
    depth_sum: torch.Tensor | None = None
    depth_map: torch.Tensor | None = None
    for w in range(n):
        out = model(ids[w:w + 1].to(device), return_internals=True)
        for layer in range(layers):
            probs = out.attention[layer][0].to(torch.float64)  # [H, T, T]
            mean_attention[layer] += probs.mean(0).cpu() / n
            first_attention[layer] += float(probs[:, :, 0].mean()) / n
            first, other = value_norms(out.values[layer][0])
            v_first[layer] += first / n
            v_other[layer] += other / n
        for depth, hidden in enumerate(out.hidden_states):
            h = hidden[0].to(torch.float64)
            h_norm[depth] += float(h.norm(dim=-1).mean()) / n
            h_sim[depth] += token_similarity(h) / n
        if out.shortcut_weights is not None:
            weights = out.shortcut_weights[0].to(torch.float64).cpu()  # [H, T, S]
            depth_sum = weights.mean(1) / n + (depth_sum if depth_sum is not None else 0)
            if depth_map is None:
                depth_map = weights.mean(0)

    entropy = [token_importance_entropy(a) for a in mean_attention]
    baseline = uniform_causal_entropy(t)
    result: dict[str, Any] = {
        "windows": n, "tokens": t, "n_layer": layers,
        "layers": [f"L{i}" for i in range(1, layers + 1)],
        "hidden_labels": hidden_labels(layers),
        "entropy": entropy,
        "entropy_uniform_causal": baseline,
        "entropy_log_t": math.log(t),
        "entropy_normalised": [e / baseline if baseline > 0 else float("nan") for e in entropy],
        "first_token_value_norm": v_first.tolist(),
        "other_token_value_norm": v_other.tolist(),
        "first_token_value_ratio": (v_first / v_other).tolist(),
        "first_token_attention": first_attention.tolist(),
        "first_token_attention_uniform_causal": uniform_causal_first_attention(t),
        "hidden_norm": h_norm.tolist(),
        "token_similarity": h_sim.tolist(),
        "shortcut": None,
    }
    if depth_sum is not None and depth_map is not None:
        result["shortcut"] = {
            "mode": cfg.shortcut,
            "depths": list(cfg.depths),
            "depth_labels": depth_labels(model),
            "depth_weights": depth_sum.mean(0).tolist(),
            "depth_weights_per_head": depth_sum.tolist(),
            "depth_map": depth_map.tolist(),
        }
    return result


@torch.no_grad()
def shortcut_depth_weights(model: GPT, window: torch.Tensor) -> np.ndarray | None:
    """Token × depth attention of the shortcut, averaged over heads; None without a shortcut."""
    if model.config.shortcut == "none":
        return None
    out = model.eval()(window[..., :-1], return_internals=True)
    return out.shortcut_weights[0].mean(0).float().cpu().numpy()


# ------------------------------------------------------------------------------------ checkpoints

def _shard_dir(ck: Checkpoint, data_dir: str | Path | None) -> Path:
    path = ck.shard_folder(data_dir, check=False)
    ck.tokenizer.check_fingerprint(ShardManifest.read(path).fingerprint, f"shard folder {path}")
    return path


def diagnose_checkpoint(folder: str | Path, data_dir: str | Path | None = None, split: str = "valid",
                        windows: int = 4, tokens: int | None = None,
                        device: str | torch.device | None = None) -> dict[str, Any]:
    """Diagnose a checkpoint folder on ``windows`` validation windows of ``tokens`` tokens (JSON-able dict).

    ``data_dir`` defaults to the shards the checkpoint names; ``tokens`` defaults to the
    model's ``block_size`` capped at 512 (and never exceeds ``block_size``); ``device``
    defaults to CUDA when available.
    """
    ck = load_folder(folder, resolve_device(device))
    cfg = ck.model.config
    shards = _shard_dir(ck, data_dir)
    if tokens is not None and tokens < 1:
        raise DiagnosticsError(f"tokens must be >= 1, got {tokens}")
    length = min(tokens or MAX_TOKENS, cfg.block_size)
    sample, used = validation_windows(shards, length, windows, split, ck.tokenizer.pad_id)
    ids = sample[..., :-1]
    result = diagnose_model(ck.model, ids)
    lead = ids if cfg.n_streams == 1 else ids[:, 0]  # stream 0 names the tokens
    result.update({
        "name": ck.name, "checkpoint": str(ck.folder), "shard_dir": str(shards), "split": used,
        "config": {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size",
                                                "n_streams", "value_residual", "shortcut")},
        "first_token_ids": [int(x) for x in lead[:, 0]],
    })
    if result["shortcut"] is not None:
        first = [int(x) for x in lead[0]]
        result["shortcut"]["depth_map_token_ids"] = first
        result["shortcut"]["depth_map_tokens"] = ck.tokenizer.token_labels(first)
    return result


def _unique_labels(results: list[dict[str, Any]]) -> list[str]:
    """The checkpoints' names as evaluation's tables give them (:func:`checkpoint_labels`)."""
    return checkpoint_labels([r["name"] for r in results], [r["checkpoint"] for r in results])


def _round(value: Any, digits: int = 6) -> Any:
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else value


def compare_checkpoints(folders: Sequence[str | Path] | str | Path, out_dir: str | Path,
                        data_dir: str | Path | None = None, labels: Sequence[str] | str | None = None,
                        **kw: Any) -> dict[str, Any]:
    """Diagnose each checkpoint (``kw`` go to :func:`diagnose_checkpoint`), write ``diagnostics.json`` and PNGs.

    Returns ``{"json": path, "plots": {name: path}, "results": {label: result}}``. Labels
    default to the checkpoints' names as evaluation gives them
    (:func:`shortcutlm.run.evaluation.checkpoint_labels`: the variant, with the folder's name when
    two checkpoints share a variant).
    """
    if isinstance(folders, (str, Path)):
        folders = [folders]
    folders = list(folders)
    if not folders:
        raise DiagnosticsError("no checkpoint to diagnose")
    if isinstance(labels, str):
        labels = [s.strip() for s in labels.split(",")]
    if labels is not None and len(labels) != len(folders):
        raise DiagnosticsError(f"{len(labels)} labels for {len(folders)} checkpoints")
    if labels is not None and len(set(labels)) != len(labels):
        raise DiagnosticsError(f"labels must be distinct, got {list(labels)}")
    found = [diagnose_checkpoint(f, data_dir, **kw) for f in folders]
    names = list(labels) if labels is not None else _unique_labels(found)
    results = {label: jsonable(r) for label, r in zip(names, found)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(results, out)
    body = {"definitions": DEFINITIONS,
            "results": _round(results),
            "plots": {k: p.name for k, p in plots.items()}}
    path = write_json(out / DIAGNOSTICS_JSON, body, sort_keys=False)
    return {"json": path, "plots": plots, "results": results}


def depth_map_for_checkpoint(folder: str | Path, data_dir: str | Path | None, out_png: Path,
                             max_tokens: int = 64) -> Path | None:
    """PNG (and JSON beside it) of the shortcut's depth attention for the first validation window."""
    ck = load_folder(folder)
    if ck.model.config.shortcut == "none":
        return None
    block = min(max_tokens, ck.model.config.block_size)
    window = validation_window(data_dir or ck.shard_folder(check=False), block)
    weights = shortcut_depth_weights(ck.model, window)
    assert weights is not None  # the model has a shortcut (checked above)
    ids = window[0, ..., :-1]
    lead = ids if ids.dim() == 1 else ids[0]
    labels = [str(int(t)) for t in lead]
    png = plot_heatmap(weights, Path(out_png), f"shortcut attention over depth — {ck.name}", "depth", "token (id)",
                       DEPTH_MAP_COLORBAR, depth_labels(ck.model), labels)
    write_json(Path(out_png).with_suffix(".json"),
               {"checkpoint": str(folder), "depths": depth_labels(ck.model), "token_ids": [int(t) for t in lead],
                "weights": weights.round(5).tolist()}, sort_keys=False)
    return png


# ------------------------------------------------------------------------------------ CLI

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint folder(s), compared side by side")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for diagnostics.json and PNGs")
    parser.add_argument("--data", default=None, metavar="SHARDS",
                        help=f"shard folder (default: each checkpoint's own, from its {DATA})")
    parser.add_argument("--split", default="valid", help="split to sample (default: valid; falls back to test, train)")
    parser.add_argument("--windows", type=int, default=4, help="validation windows averaged (default: 4)")
    parser.add_argument("--tokens", type=int, default=None,
                        help=f"tokens per window (default: the model's block_size, at most {MAX_TOKENS})")
    parser.add_argument("--labels", default=None, help="comma-separated names, one per checkpoint")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")


def _summary(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["model | T | windows | entropy/uniform-causal (mean over layers) | first-token attention (max) | "
             "first-token value ratio (max) | token similarity (last)"]
    for label, r in results.items():
        def stat(key: str, how) -> str:
            vals = [v for v in r[key] if v is not None]
            return f"{how(vals):.3f}" if vals else "-"
        lines.append(f"{label} | {r['tokens']} | {r['windows']} | {stat('entropy_normalised', np.mean)} | "
                     f"{stat('first_token_attention', max)} | {stat('first_token_value_ratio', max)} | "
                     f"{stat('token_similarity', lambda v: v[-1])}")
    return lines


def run(args: argparse.Namespace) -> int:
    # A mistake (a checkpoint, shard folder or setting) is a UserError: the command line prints it in one line.
    done = compare_checkpoints(args.checkpoints, args.out, args.data, args.labels, split=args.split,
                               windows=args.windows, tokens=args.tokens, device=args.device)
    print("\n".join(_summary(done["results"])))
    print(f"wrote {done['json']}")
    for path in done["plots"].values():
        print(f"wrote {path}")
    return 0
