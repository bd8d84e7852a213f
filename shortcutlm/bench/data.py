"""``shortcutlm bench data``: prepare and loader throughput, beside what training consumes.

* prepare, per domain, on the corpora that ship with the packages (no download): documents
  and tokens per second of the encoding phase (tokenizer training and source collection
  timed apart);
* the loader: training tokens per second with 0, 1 and 2 DataLoader workers, and one exact
  evaluation pass; with ``--mixture DIR``, the same for a joint model's mixed loader;
* the decoder benchmark's default config training on this machine
  (``shortcutlm.bench.model.training_tokens_per_second``): the loader should feed at least
  10× that.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

from shortcutlm.bench.common import machine, target, write_json

#: Corpus and tokenizer per domain; small enough for a 2-core machine, large enough to time.
DOMAINS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "text": ({"name": "shakespeare"}, {"domain": "text", "vocab_size": 2048}),
    "midi": ({"name": "bach_chorales", "limit": 120}, {"domain": "midi"}),
    "acoustic": ({"name": "chorales_audio", "limit": 6},
                 {"domain": "acoustic", "weights": "mel_kmeans", "bandwidth": 1.5, "layout": "delay",
                  "kmeans_iters": 5, "kmeans_max_frames": 5000}),
}
LOADER_TARGET = 10.0


def bench_prepare(domain: str, out: Path, workers: int, limit: int | None) -> dict[str, Any]:
    """One fresh prepare run; throughput counts the encoding phase only."""
    from shortcutlm.datasets.prepare import prepare

    source, tokenizer = DOMAINS[domain]
    source = dict(source)
    if limit is not None and "limit" in source:
        source["limit"] = limit
    start = time.perf_counter()
    manifest = prepare(source, tokenizer, out, workers=workers, progress=False)
    total = time.perf_counter() - start
    run = manifest["last_run"]
    return {
        "source": source, "tokenizer": tokenizer, "workers": workers,
        "documents": run["encoded_documents"], "tokens": run["encoded_tokens"],
        "rejected": manifest["inputs"]["rejected"],
        "collect_s": round(run["collect_s"], 3), "tokenizer_train_s": round(run["tokenizer_s"], 3),
        "encode_s": round(run["encode_s"], 3), "total_s": round(total, 3),
        "documents_per_s": run["encoded_documents"] / run["encode_s"],
        "tokens_per_s": run["encoded_tokens"] / run["encode_s"],
    }


def bench_loader(shard_dir: Path, block: int, batch: int, batches: int | None, workers: int) -> dict[str, Any]:
    """Steady-state training tokens/s (after the first batch, which includes worker start-up).

    By default the timed batches cover two epochs of the train split, so every shard is
    read, checksummed and parsed (twice) inside the measurement.
    """
    from shortcutlm.datasets.batches import train_batches

    loader = train_batches(shard_dir, block, batch, seed=0, num_workers=workers)
    if batches is None:
        batches = max(100, -(-2 * loader.data.total_tokens // (batch * block)))
    stream = iter(loader)
    start = time.perf_counter()
    next(stream)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in itertools.islice(stream, batches):
        pass
    seconds = time.perf_counter() - start
    del stream
    return {"workers": workers, "mode": loader.mode, "batches": batches, "first_batch_s": round(first, 3),
            "tokens_per_s": batches * batch * block / seconds}


def bench_eval(shard_dir: Path, split: str, block: int, batch: int) -> dict[str, Any]:
    from shortcutlm.datasets.batches import eval_batches

    loader = eval_batches(shard_dir, split, block, batch)
    start = time.perf_counter()
    n = sum(1 for _ in loader)
    seconds = time.perf_counter() - start
    return {"split": split, "batches": n, "targets": loader.targets, "tokens_per_s": loader.targets / seconds}


def training_rate(steps: int) -> tuple[float | None, str]:
    try:
        from shortcutlm.bench.model import training_tokens_per_second
    except ImportError as exc:
        return None, f"shortcutlm.bench.model.training_tokens_per_second is not available ({exc})"
    return training_tokens_per_second(steps=steps), ""


def summary(result: dict[str, Any]) -> list[str]:
    """The terminal's view: prepare per domain, the loader per worker count, and the comparison."""
    from shortcutlm.core.formatting import count
    from shortcutlm.core.formatting import text_table as table

    rows = [[domain, "-", "-", "-", "-", "-", r["error"]] if "error" in r else
            [domain, str(r["documents"]), count(r["tokens"]), f"{r['encode_s']:.2f}", count(r["documents_per_s"]),
             count(r["tokens_per_s"]), ""] for domain, r in result["prepare"].items()]
    lines = ["bench data: prepare (encoding phase)",
             *table(["domain", "documents", "tokens", "encode s", "docs/s", "tokens/s", ""], rows)]
    loader = result["loader"]
    if loader:
        lines += [f"loader on the {loader['shards']} shards, block {loader['block']}, batch {loader['batch']}",
                  *table(["workers", "mode", "first batch s", "tokens/s"],
                         [[str(x["workers"]), str(x["mode"]), f"{x['first_batch_s']:.2f}", count(x["tokens_per_s"])]
                          for x in loader["train"]]),
                  f"exact {loader['eval']['split']} pass: {count(loader['eval']['tokens_per_s'])} tokens/s"]
    mixed = result.get("mixture_loader")
    if mixed:
        lines += [f"mixed loader on {mixed['shards']}, block {mixed['block']}, batch {mixed['batch']}",
                  *table(["workers", "mode", "first batch s", "tokens/s"],
                         [[str(x["workers"]), str(x["mode"]), f"{x['first_batch_s']:.2f}", count(x["tokens_per_s"])]
                          for x in mixed["train"]]),
                  *(f"  {w} workers: not timed: {why}" for w, why in mixed.get("refused", {}).items())]
    rate = result["training_tokens_per_s"]
    lines.append(f"training consumes {count(rate)} tokens/s (the decoder benchmark's default config)"
                 if isinstance(rate, float) else f"training rate: {rate}")
    if "loader_over_training" in result:
        t = result["loader_over_training"]
        lines.append(f"slowest loader over training: {count(t['value'])} times (target {t['target']})  "
                     f"{'pass' if t['pass'] else 'FAIL'}")
    return lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write the figures here as JSON")
    parser.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated subset of " + ",".join(DOMAINS))
    parser.add_argument("--limit", type=int, default=None, help="override the chorale count (midi, acoustic)")
    parser.add_argument("--workers", type=int, default=2, help="prepare's encoding processes")
    parser.add_argument("--block", type=int, default=512, help="loader block size (the decoder default's context)")
    parser.add_argument("--batch", type=int, default=8, help="loader batch size (the decoder default's batch)")
    parser.add_argument("--loader-batches", type=int, default=None,
                        help="timed batches per loader setting (default: two epochs of the train split)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps for the comparison")
    parser.add_argument("--work", help="folder for the prepared shards (default: a temporary folder)")
    parser.add_argument("--mixture", metavar="DIR",
                        help="also time the mixed loader of this mixture folder (a joint model's data, "
                             "e.g. runs/multimodal-tiny/data); --domains '' times it alone")


def run(args: argparse.Namespace) -> int:
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise SystemExit(f"unknown domain(s) {unknown}; choose from {list(DOMAINS)}")
    with tempfile.TemporaryDirectory(prefix="shortcutlm-bench-data-") as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        result: dict[str, Any] = {"machine": machine(), "prepare": {}, "loader": {}}
        for domain in domains:
            out = work / domain
            if out.exists():
                raise SystemExit(f"{out} exists; give an empty --work folder so prepare is timed from scratch")
            try:
                result["prepare"][domain] = bench_prepare(domain, out, args.workers, args.limit)
            except Exception as exc:  # one domain's missing piece must not hide the others' figures
                result["prepare"][domain] = {"error": f"{type(exc).__name__}: {exc}"}
        # The loader is timed on the largest prepared corpus (text by default).
        ready = [d for d in domains if "error" not in result["prepare"][d]]
        if ready:
            shard_dir = work / max(ready, key=lambda d: result["prepare"][d]["tokens"])
            result["loader"] = {"shards": shard_dir.name, "block": args.block, "batch": args.batch,
                                "train": [bench_loader(shard_dir, args.block, args.batch, args.loader_batches, w)
                                          for w in (0, 1, 2)],
                                "eval": bench_eval(shard_dir, "valid", args.block, args.batch)}
        if args.mixture:  # one joint model's data: every part drawn, remapped and opened with its marker
            mixture = Path(args.mixture)
            timed_mix, refused = [], {}
            for w in (0, 1, 2):
                try:
                    timed_mix.append(bench_loader(mixture, args.block, args.batch, args.loader_batches, w))
                except ValueError as exc:  # a part too small to split over this many workers: said, not timed
                    refused[str(w)] = str(exc)
            result["mixture_loader"] = {"shards": str(mixture), "block": args.block, "batch": args.batch,
                                        "train": timed_mix, "refused": refused}
        rate, why = training_rate(args.train_steps)
        result["training_tokens_per_s"] = rate if rate is not None else why
        timed = [x for key in ("loader", "mixture_loader") for x in (result.get(key) or {}).get("train", [])]
        if rate is not None and timed:
            slowest = min(x["tokens_per_s"] for x in timed)
            result["loader_over_training"] = target(slowest / rate, LOADER_TARGET, ">=")
        write_json(result, args.json, summary(result))
    return 0
