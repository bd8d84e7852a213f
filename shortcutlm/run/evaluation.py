"""``shortcutlm evaluate``: next-token loss per domain for one or more checkpoints, side by side.

Python API::

    results = evaluate_checkpoints(["runs/a", "runs/b"], shard_dir=None, split="test", batch_size=8)
    write_report(results, "runs/eval")        # results.md (tables) + results.json

CLI::

    shortcutlm evaluate CKPT [CKPT ...] [--data SHARD_DIR] [--split test] [--batch-size 8]
        [--max-batches N] [--device auto] [--precision auto] --out DIR

What is measured. One exact, deterministic pass over the split (the loader's ``eval_batches``:
documents packed ``EOS d1 EOS d2 EOS ...`` into ``block_size + 1`` windows; every position after
the leading EOS is a target exactly once). The loss is the **sum of token losses over the count
of valid targets** — not a mean of batch means, so the last, padded window weighs what its
tokens weigh. Targets equal to the pad id (the final window's padding) and, for the acoustic
``delay`` layout, the ``empty`` id (the pattern's unfilled corners) are masked.

For every domain: nats per token, bits per token (nats / ln 2) and perplexity (e^nats).

* **text** — bits per byte = total nats / ln 2 / the UTF-8 bytes of the split's documents (the
  manifest's ``splits[split].bytes``). The pass also predicts the EOS that closes each document
  (one per document, not a byte of the text); its loss **is included** in ``bits_per_byte``
  (the model must spend those bits to say where a document ends), and ``bits_per_byte_excl_eos``
  leaves it out. ``eos`` reports how many EOS targets there were and their loss, so both
  conventions can be checked. Per token family: SentencePiece ``piece`` / ``byte`` / ``special``.
* **acoustic** — per codebook: for ``delay`` by stream (stream k is codebook k; the EOS columns
  between documents count in every stream); for ``flatten`` by the target id's codebook family
  (``codebook_k``; EOS targets fall under ``special``). ``bits_per_second`` divides the total bits
  by the split's audio seconds, which compares layouts (their tokens differ, their seconds do not).
* **midi** — loss per token family from the tokenizer's ``token_families()`` (Pitch, Velocity,
  Duration, Position, Bar, ...; BPE ids under ``BPE``, specials under ``special``), and
  ``bits_per_second`` over the split's seconds of music.

The groups (per codebook, per token family) are the tokenizer's ``loss_groups()`` and the masked
targets its ``ignored_ids()``; this module never looks at the domain.

Families partition the targets, so the count-weighted mean of the per-family (or per-codebook)
losses is the overall loss exactly. With ``max_batches`` the pass is partial (``complete:
false``): per-byte and per-second figures then scale the split's bytes/seconds by the share
of targets seen, and are marked approximate (``≈`` in the table).

A joint checkpoint (one decoder over several domains, :mod:`shortcutlm.run.joint`) gives one record per
domain, each on that domain's own split through the tokenizer's view of it, with the same figures;
with several checkpoints the rows are lined up by domain, so joint and separate models read side by side.

Each checkpoint is evaluated on its own shards by default (the ``shard_dir`` in its
``data.json``); a checkpoint whose tokenizer fingerprint differs from the shards' manifest is
refused with :class:`~shortcutlm.tokenizers.FingerprintMismatch` naming both fingerprints.
The model runs in fp32, or under bf16 autocast on a GPU when asked (``precision``) or when
the checkpoint was trained in bf16 (``auto``); losses are always accumulated in float64.

``results.json`` and ``results.md`` are written and read by :mod:`shortcutlm.artifacts.results`
(non-finite numbers: see there).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Sequence

import torch

from shortcutlm.artifacts.checkpoint import (DATA, Checkpoint, ShardFolderError, checkpoint_labels,
                                          load_folder)
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.artifacts.remote import remote_location
from shortcutlm.artifacts.results import EosStats, EvaluationRecord, EvaluationResults, LossStats, write_results
from shortcutlm.datasets.batches import eval_batches
from shortcutlm.core.allocator import keep_freed_memory
from shortcutlm.core.devices import resolve_device
from shortcutlm.core.errors import UserError
from shortcutlm.core.formatting import markdown_table, param_count
from shortcutlm.core.options import add_fields
from shortcutlm.run.recipe import EvaluateSettings
from shortcutlm.run.joint import evaluation_targets
from shortcutlm.models import token_losses
from shortcutlm.tokenizers import FingerprintMismatch

LN2 = math.log(2.0)
PRECISIONS = ("auto", "fp32", "bf16")

__all__ = ["EvaluationError", "evaluate_checkpoint", "evaluate_checkpoints", "write_report", "render_markdown",
           "resolve_shard_dir", "checkpoint_labels", "token_losses", "configure", "run"]


class EvaluationError(UserError, ValueError):
    """An evaluation that cannot run as asked (missing shards or split, mismatched model); the message says why."""


# ------------------------------------------------------------------------------------ helpers

def _perplexity(nats: float) -> float:
    return math.exp(nats) if nats < 700 else float("inf")


def _stats(nats_sum: float, count: int) -> LossStats:
    loss = nats_sum / count if count else float("nan")
    nan = float("nan")
    return LossStats(int(count), loss, loss / LN2 if count else nan, _perplexity(loss) if count else nan)


def resolve_shard_dir(ckpt: Checkpoint, shard_dir: str | Path | None) -> Path:
    """The shard folder to evaluate on: ``shard_dir`` if given, else the one the checkpoint's
    ``data.json`` names (a relative path is tried against the working directory first, then
    against the checkpoint folder: :func:`shortcutlm.artifacts.checkpoint.resolve_shard_folder`)."""
    try:
        return ckpt.shard_folder(shard_dir, check=False)
    except ShardFolderError as exc:
        raise EvaluationError(str(exc)) from exc


def _check_data(ckpt: Checkpoint, shard_dir: Path, split: str) -> ShardManifest:
    """The shards' manifest, once they fit the checkpoint: same tokenizer, finished, with the split."""
    manifest = ShardManifest.read(shard_dir, require_complete=False)
    theirs = manifest.tokenizer
    ours = ckpt.tokenizer.fingerprint()
    if theirs.fingerprint != ours:
        raise FingerprintMismatch(
            f"checkpoint {ckpt.folder} uses tokenizer fingerprint {ours} ({ckpt.tokenizer.domain}, vocab "
            f"{ckpt.tokenizer.vocab_size}), but the shards in {shard_dir} were made with tokenizer fingerprint "
            f"{theirs.fingerprint} ({theirs.domain}, vocab {theirs.vocab_size}): their ids mean different "
            f"things, so the loss would be meaningless. Evaluate on shards prepared with this checkpoint's "
            f"tokenizer (its {DATA} names {ckpt.trained_on.shard_dir}).")
    if not manifest.complete:
        raise EvaluationError(f"{manifest.path}: not complete (prepare was interrupted?); re-run prepare")
    if not manifest.split(split).documents:
        raise EvaluationError(f"{shard_dir}: no {split!r} split here (splits: {', '.join(manifest.splits) or 'none'})")
    cfg = ckpt.model.config
    if cfg.n_streams != ckpt.tokenizer.n_streams:
        raise EvaluationError(f"checkpoint {ckpt.folder}: the model has {cfg.n_streams} stream(s) but its tokenizer "
                              f"{ckpt.tokenizer.n_streams}")
    if cfg.vocab_size < ckpt.tokenizer.vocab_size:
        raise EvaluationError(f"checkpoint {ckpt.folder}: the model's vocab_size {cfg.vocab_size} is smaller than its "
                              f"tokenizer's {ckpt.tokenizer.vocab_size}")
    return manifest


def _groups(ckpt: Checkpoint) -> tuple[str | None, list[str], torch.Tensor | None]:
    """How targets are grouped (the tokenizer's ``loss_groups()``): ``(kind, names, id -> group
    lookup)``; the lookup is None when groups go by stream, and ``kind`` None when there are none."""
    groups = ckpt.tokenizer.loss_groups()
    if not groups:
        return None, [], None
    if groups.by_stream:
        return groups.kind, groups.names, None
    vocab = ckpt.model.config.vocab_size
    names = groups.names
    lookup = torch.full((vocab,), -1, dtype=torch.long)
    for index, name in enumerate(names):
        ids = torch.as_tensor(groups.families[name], dtype=torch.long)
        ids = ids[(ids >= 0) & (ids < vocab)]
        unassigned = ids[lookup[ids] < 0]  # an id listed twice counts in the first family only
        lookup[unassigned] = index
    if bool((lookup < 0).any()):
        names.append("other")
        lookup[lookup < 0] = len(names) - 1
    return groups.kind, names, lookup


def _autocast(precision: str, device: torch.device, ckpt: Checkpoint):
    """The context the forward runs in, and the name of the compute dtype."""
    if precision not in PRECISIONS:
        raise EvaluationError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    param_dtype = next(ckpt.model.parameters()).dtype
    if param_dtype != torch.float32:
        return nullcontext(), str(param_dtype).replace("torch.", "")
    want_bf16 = precision == "bf16"
    if precision == "auto":
        want_bf16 = "bf16" in (ckpt.hparams.precision or "")  # the run's train.precision, e.g. bf16-mixed
    if want_bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), "bf16-autocast"
    if precision == "bf16" and device.type != "cuda":
        return torch.autocast("cpu", dtype=torch.bfloat16), "bf16-autocast"
    return nullcontext(), "float32"


# ------------------------------------------------------------------------------------ the pass

@dataclass
class _Sums:
    """Nats and target counts per loss group, and over the end-of-document targets, as a pass adds them."""
    nats: torch.Tensor
    counts: torch.Tensor
    eos_nats: torch.Tensor
    eos_count: torch.Tensor

    @classmethod
    def zeros(cls, groups: int, device: torch.device) -> _Sums:
        def zero(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=device)
        return cls(zero(groups), zero(groups), zero(), zero())


def _score(ckpt: Checkpoint, batches: Iterable[torch.Tensor], n_run: int, device: torch.device, precision: str,
           label: str, progress: bool) -> tuple[_Sums, str | None, list[str], str, float]:
    """One pass over ``n_run`` batches: the sums, the group kind and names, the compute dtype, seconds."""
    from tqdm import tqdm

    keep_freed_memory()  # each batch's activations reuse the last batch's pages (core.allocator)
    model, tok = ckpt.model, ckpt.tokenizer
    kind, names, lookup = _groups(ckpt)
    if lookup is not None:
        lookup = lookup.to(device)
    sums = _Sums.zeros(max(1, len(names)), device)
    masked = torch.tensor(tok.ignored_ids(), device=device)
    context, compute = _autocast(precision, device, ckpt)
    start = time.perf_counter()
    with tqdm(total=n_run, desc=label, unit="batch", disable=not progress, mininterval=1.0, file=sys.stderr) as bar:
        for batch in islice(batches, n_run):
            batch = batch.to(device, non_blocking=True)
            inputs, targets = batch[..., :-1], batch[..., 1:]
            with context:
                logits = model(inputs)
            token_nats, valid = token_losses(logits, targets, masked)
            targets = targets.reshape(valid.shape)
            b, k, t = valid.shape
            if lookup is not None:
                group = lookup[targets]
            elif kind is not None:  # groups by stream: group k is stream k
                group = torch.arange(k, device=device).view(1, k, 1).expand(b, k, t)
            else:
                group = torch.zeros_like(targets)
            sums.nats.index_add_(0, group[valid], token_nats[valid])
            sums.counts.index_add_(0, group[valid], torch.ones_like(token_nats[valid]))
            is_eos = valid & (targets == tok.eos_id)
            sums.eos_nats += token_nats[is_eos].sum()
            sums.eos_count += is_eos.sum()
            bar.update(1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return sums, kind, names, compute, time.perf_counter() - start


@torch.no_grad()
def evaluate_checkpoint(folder: str | Path, shard_dir: str | Path | None = None, split: str = "test",
                        batch_size: int = 8, max_batches: int | None = None, device: str | torch.device = "cpu",
                        precision: str = "auto", progress: bool = True,
                        checkpoint: Checkpoint | None = None) -> EvaluationRecord:
    """Evaluate one checkpoint folder on one split; returns its result record (see the module docstring)."""
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        raise EvaluationError(f"max_batches must be >= 1, got {max_batches}")
    device = torch.device(device)
    ckpt = checkpoint or load_folder(folder, device)
    model = ckpt.model.to(device).eval()
    tok, cfg = ckpt.tokenizer, model.config
    data_dir = resolve_shard_dir(ckpt, shard_dir)
    manifest = _check_data(ckpt, data_dir, split)
    batches = eval_batches(data_dir, split, cfg.block_size, batch_size)
    n_total = len(batches)
    n_run = n_total if max_batches is None else min(n_total, max_batches)
    sums, kind, names, compute, elapsed = _score(ckpt, batches, n_run, device, precision,
                                                 f"evaluate {ckpt.name} [{split}]", progress)

    nats_l, counts_l = sums.nats.tolist(), [int(c) for c in sums.counts.tolist()]
    total_nats, total_count = float(sum(nats_l)), int(sum(counts_l))
    if total_count == 0:
        raise EvaluationError(f"{data_dir}: split {split!r} gave no targets to score")
    complete = n_run == n_total
    split_info = manifest.split(split)
    # Share of the split's targets this pass scored (1 for a complete pass).
    all_targets = _split_targets(batches, ckpt) if not complete else total_count
    share = total_count / all_targets if all_targets else 1.0

    n_eos, eos_nats = int(sums.eos_count.item()), float(sums.eos_nats.item())
    n_bytes = float(split_info.bytes) * share if split_info.bytes else None
    seconds = split_info.seconds * share if split_info.seconds else None
    return EvaluationRecord(
        name=ckpt.name, folder=str(ckpt.folder), shard_dir=remote_location(data_dir) or str(data_dir), split=split,
        domain=tok.domain, fingerprint=tok.fingerprint(),
        params=int(model.num_params()), block_size=cfg.block_size, n_streams=cfg.n_streams,
        batch_size=batch_size, batches=n_run, batches_total=n_total, complete=complete,
        documents=split_info.documents, loss=_stats(total_nats, total_count),
        eos=EosStats(n_eos, eos_nats / max(1, n_eos)),
        device=str(device), compute_dtype=compute,
        elapsed_s=elapsed, tokens_per_s=total_count / elapsed if elapsed > 0 else None,
        tokenizer=dict(tok.describe()),
        bytes=split_info.bytes or None,
        bits_per_byte=total_nats / LN2 / n_bytes if n_bytes else None,
        bits_per_byte_excl_eos=(total_nats - eos_nats) / LN2 / n_bytes if n_bytes else None,
        seconds=split_info.seconds or None,
        bits_per_second=total_nats / LN2 / seconds if seconds else None,
        approximate=not complete, group_kind=kind,
        groups={name: replace(_stats(nats_l[i], counts_l[i]), share=counts_l[i] / total_count)
                for i, name in enumerate(names)} if kind is not None else {},
    )


def _split_targets(batches, ckpt: Checkpoint) -> int:
    """Valid targets in the whole split, from the manifest's counts (no reading).

    One stream: every document token plus one EOS per document. Delay layout: each stream has
    ``frames`` codes per document (``frames = T - K + 1``) plus the EOS columns.
    """
    data = batches.data
    if data.n_streams == 1:
        return int(batches.targets)
    k = data.n_streams
    per_doc = sum(int(max(n - k + 1, 0)) + 1 for d in data.doc_tokens for n in d.tolist())
    return per_doc * k


def evaluate_checkpoints(folders: Sequence[str | Path] | str | Path, shard_dir: str | Path | None = None,
                         split: str = "test", batch_size: int = 8, max_batches: int | None = None,
                         device: str | torch.device = "cpu", precision: str = "auto",
                         progress: bool = True) -> EvaluationResults:
    """Evaluate several checkpoints, each on ``shard_dir`` or on its own shards."""
    if isinstance(folders, (str, Path)):
        folders = [folders]
    if not folders:
        raise EvaluationError("give at least one checkpoint folder")
    groups = []  # per checkpoint: one record per domain it holds (a joint checkpoint: several)
    for folder in folders:
        groups.append([evaluate_checkpoint(folder, data, split, batch_size, max_batches, device, precision, progress,
                                           checkpoint=ckpt)
                       for ckpt, data in evaluation_targets(folder, shard_dir, device)])
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    labels = checkpoint_labels([g[0].name for g in groups], [g[0].folder for g in groups])
    # two runs of one recipe variant: told apart by folder
    records = [r.with_name(label) for group, label in zip(groups, labels) for r in group]
    if len(records) > len(groups):  # a joint checkpoint: rows lined up by domain, joint beside separate
        records.sort(key=lambda r: str(r.domain))
    return EvaluationResults(split, time.strftime("%Y-%m-%dT%H:%M:%S"), records)


# ------------------------------------------------------------------------------------ report

def _fmt(value: Any, digits: int = 4, approx: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "inf"
        text = f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.3g}"
        return ("≈" + text) if approx else text
    return str(value)


def render_markdown(results: EvaluationResults) -> str:
    """The report: one row per checkpoint for the shared metrics, then per-codebook / per-family tables."""
    records = results.checkpoints
    lines = [f"# Evaluation: next-token loss on the {results.split} split", ""]
    has_bpb = any(r.bytes is not None for r in records)
    has_bps = any(r.seconds is not None for r in records)
    header = ["checkpoint", "domain", "data", "targets", "nats/token", "bits/token", "perplexity"]
    header += ["bits/byte"] * has_bpb + ["bits/second"] * has_bps + ["params", "tokens/s"]
    rows = []
    for r in records:
        approx = r.approximate
        facts = r.tokenizer
        domain = r.domain + (f" ({facts['layout']}, K={facts['n_codebooks']})" if facts.get("layout") else "")
        data = Path(r.shard_dir).name + ("" if r.complete else f" ({r.batches}/{r.batches_total} batches)")
        row = [r.name, domain, data, str(r.tokens), _fmt(r.loss_nats), _fmt(r.loss_bits), _fmt(r.perplexity, 2)]
        if has_bpb:
            row.append(_fmt(r.bits_per_byte, approx=approx))
        if has_bps:
            row.append(_fmt(r.bits_per_second, 1, approx=approx))
        row += [param_count(r.params, 2), _fmt(r.tokens_per_s, 0)]
        rows.append(row)
    lines += markdown_table(header, rows)
    notes = ["Loss = sum of token losses / count of valid targets over one exact pass (pad and delay "
             "`empty` targets masked); the EOS closing each document is a target."]
    if has_bpb:
        notes.append("bits/byte = total bits (EOS targets included) / UTF-8 bytes of the split; "
                     "`bits_per_byte_excl_eos` in results.json leaves the EOS targets out.")
    if has_bps:
        notes.append("bits/second = total bits / seconds of audio or music in the split.")
    if any(r.approximate for r in records):
        notes.append("≈: partial pass (--max-batches); bytes and seconds scaled by the share of targets scored.")
    lines += [""] + [f"- {n}" for n in notes]

    for kind, title in (("codebook", "Per codebook"), ("family", "Per token family")):
        by_domain: dict[str, list[EvaluationRecord]] = {}
        for r in records:
            if r.group_kind == kind:
                by_domain.setdefault(r.domain, []).append(r)
        for domain, group in by_domain.items():
            names: list[str] = []
            for r in group:
                names += [n for n in r.groups if n not in names]
            lines += ["", f"## {title} — {domain}", "",
                      ("nats per target (targets in brackets); the count-weighted mean over columns "
                       "is the overall loss."),
                      ""]
            rows = []
            for r in group:
                row = [r.name]
                for name in names:
                    s = r.groups.get(name)
                    row.append("–" if s is None or not s.tokens else f"{_fmt(s.loss_nats)} ({s.tokens})")
                rows.append(row)
            lines += markdown_table(["checkpoint"] + names, rows)
    return "\n".join(lines) + "\n"


def write_report(results: EvaluationResults, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` into ``out_dir`` (atomically, through
    :mod:`shortcutlm.artifacts.results`); returns both paths."""
    return write_results(out_dir, results, render_markdown(results))


# ------------------------------------------------------------------------------------ CLI

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoint folder(s), evaluated side by side")
    parser.add_argument("--data", default=None, metavar="SHARD_DIR",
                        help=f"shard folder or its URL (default: each checkpoint's own, from its {DATA})")
    add_fields(parser, EvaluateSettings, ["split", "batch_size", "max_batches"])  # a recipe's evaluate defaults
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16 autocast on GPU when the checkpoint trained in bf16, else fp32")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for results.md and results.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # Mistakes (checkpoints, shards, split) are UserErrors: the command line prints them in one line.
    results = evaluate_checkpoints(args.checkpoints, args.data, args.split, args.batch_size, args.max_batches,
                                   resolve_device(args.device), args.precision, progress=not args.no_progress)
    md, js = write_report(results, args.out)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {md} and {js}")
    from shortcutlm.pairs.run import worth_of_paired  # paired checkpoints: what each task's source is worth

    worth = worth_of_paired(args.checkpoints, args.data, args.split, args.out)
    if worth:
        print("\n".join(worth))
        print(f"wrote {Path(args.out) / 'pairs.json'}")
    return 0
