"""Maps of what a trained decoder attends to: the shortcut's attention over depth per token.

Reads a checkpoint folder and a window of its validation data; writes PNG + JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from shortcutlm.checkpoint import load_folder
from shortcutlm.datasets.loader import eval_batches
from shortcutlm.models import GPT
from shortcutlm.plots import plot_heatmap


def depth_labels(model: GPT) -> list[str]:
    return ["emb" if d == 0 else f"L{d}" for d in model.config.depths]


def validation_window(data_dir: str | Path, block_size: int, split: str = "valid") -> torch.Tensor:
    """The first evaluation window of a split (falls back to test, then train): [1, (K,) T+1]."""
    for name in (split, "test", "train"):
        try:
            batch = next(iter(eval_batches(data_dir, name, block_size, 1)), None)
        except (KeyError, ValueError):
            continue
        if batch is not None:
            return batch
    raise ValueError(f"{data_dir}: no split has any tokens to diagnose")


@torch.no_grad()
def shortcut_depth_weights(model: GPT, window: torch.Tensor) -> np.ndarray | None:
    """Token × depth attention of the shortcut, averaged over heads; None without a shortcut."""
    if model.shortcut is None:
        return None
    out = model.eval()(window[..., :-1], return_internals=True)
    return out.shortcut_weights[0].mean(0).float().cpu().numpy()


def depth_map_for_checkpoint(folder: str | Path, data_dir: str | Path | None, out_png: Path,
                             max_tokens: int = 64) -> Path | None:
    """PNG (and JSON beside it) of the shortcut's depth attention for the first validation window."""
    ck = load_folder(folder)
    if ck.model.shortcut is None:
        return None
    block = min(max_tokens, ck.model.config.block_size)
    window = validation_window(data_dir or ck.data["shard_dir"], block)
    weights = shortcut_depth_weights(ck.model, window)
    ids = window[0, ..., :-1]
    lead = ids if ids.dim() == 1 else ids[0]
    labels = [str(int(t)) for t in lead]
    png = plot_heatmap(weights, Path(out_png), f"shortcut attention over depth — {ck.name}", "depth", "token (id)",
                       depth_labels(ck.model), labels)
    Path(out_png).with_suffix(".json").write_text(json.dumps(
        {"checkpoint": str(folder), "depths": depth_labels(ck.model), "token_ids": [int(t) for t in lead],
         "weights": weights.round(5).tolist()}, indent=1))
    return png


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint folder")
    parser.add_argument("--data", help="shard folder (default: the one the checkpoint was trained on)")
    parser.add_argument("--out", required=True, help="output folder for PNG and JSON")
    parser.add_argument("--tokens", type=int, default=64, help="tokens in the diagnosed window")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    png = depth_map_for_checkpoint(args.checkpoint, args.data, out / "depth_map.png", args.tokens)
    print(png or f"{args.checkpoint}: no shortcut, no depth map")
    return 0
