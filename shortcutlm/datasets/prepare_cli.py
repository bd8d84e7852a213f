"""``shortcutlm prepare`` on the command line: its arguments, a spec file merged under them, the step
they ask for (one prepare, or the tokenizer step, a job or the merge of a prepare across machines),
and what it prints. Running the step is :func:`shortcutlm.datasets.prepare.run`'s.

The error policy: a mistake in the spec or the data (:data:`REPORTED`: a PrepareError or any other
ValueError, a missing file or package, a RuntimeError from a reader) is one line on stderr and exit
status 2; anything else is a bug and keeps its traceback."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from shortcutlm.artifacts.manifest import MANIFEST, TOKENIZER_FOLDER
from shortcutlm.core.config_schema import yaml_file, yaml_text
from shortcutlm.datasets import parallel
from shortcutlm.datasets.parallel import Job
from shortcutlm.datasets.prepare_common import DEFAULT_SHARD_DOCUMENTS, DEFAULT_SHARD_TOKENS, PrepareError
from shortcutlm.datasets.sources import READERS
from shortcutlm.datasets.tokenizer_fit import tokenizer_from

REPORTED = (ValueError, FileNotFoundError, ModuleNotFoundError, RuntimeError)


def _parse_pairs(pairs: Iterable[str], what: str) -> dict[str, Any]:
    """``k=v`` pairs; values are read as YAML scalars / lists (``limit=20``, ``fractions=[90,5,5]``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PrepareError(f"{what} {pair!r}: expected key=value")
        out[key.strip()] = yaml_text(value, f"{what} {pair}") if value.strip() else ""
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", help="JSON or YAML file with 'source', 'tokenizer' and optionally 'out', 'workers'")
    parser.add_argument("--source", help=f"one of: {', '.join(READERS)}")
    parser.add_argument("--path", help="where the dataset lies (its published layout)")
    parser.add_argument("--option", action="append", default=[], metavar="K=V", help="source option, repeatable")
    parser.add_argument("--tokenizer", metavar="DOMAIN", help="text, midi or acoustic")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="tokenizer setting, repeatable")
    parser.add_argument("--tokenizer-from", metavar="CKPT",
                        help="encode with the saved tokenizer of a checkpoint (or shard) folder, untrained and "
                             "unchanged, so the shards fit the checkpoint (for train --init-from); instead of "
                             "--tokenizer and --set")
    parser.add_argument("--out", help=f"output folder for shards, {MANIFEST} and {TOKENIZER_FOLDER}/")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes that read and encode files (default 2; 0: this process, "
                             "with no protection from a reader that crashes)")
    parser.add_argument("--file-timeout", type=float, default=None, metavar="SECONDS",
                        help="reject a file whose reading takes longer than this (default: no limit)")
    parser.add_argument("--shard-tokens", type=int, default=None,
                        help=f"close a shard at this many ids (default {DEFAULT_SHARD_TOKENS})")
    parser.add_argument("--shard-documents", type=int, default=None,
                        help=f"close a shard at this many documents (default {DEFAULT_SHARD_DOCUMENTS})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    jobs = parser.add_argument_group("prepare across machines (see shortcutlm.datasets.parallel)")
    jobs.add_argument("--tokenizer-only", action="store_true",
                      help="step 1: train and save the tokenizer and the plan the jobs check against")
    jobs.add_argument("--num-jobs", type=int, default=None, metavar="N", help="step 2: the number of jobs")
    jobs.add_argument("--job", type=int, default=None, metavar="I",
                      help="step 2: encode job I's part of the documents (0 <= I < N), e.g. $SLURM_ARRAY_TASK_ID")
    jobs.add_argument("--merge", action="store_true",
                      help=f"step 3: join the finished jobs' partial manifests into {MANIFEST} (needs only --out)")


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge a spec file with the command line (the command line wins)."""
    spec: dict[str, Any] = {}
    if args.spec:
        spec = yaml_file(args.spec, "prepare spec file")
        if not isinstance(spec, dict):
            raise PrepareError(f"{args.spec}: a prepare spec is a mapping of keys, got {type(spec).__name__}")
        unknown = set(spec) - {"source", "tokenizer", "out", "workers", "shard_tokens", "shard_documents",
                               "file_timeout_s"}
        if unknown:
            raise PrepareError(f"{args.spec}: unknown key(s) {', '.join(sorted(unknown))}")
    source = dict(spec.get("source") or {})
    if args.source:
        source = {"name": args.source} if source.get("name") != args.source else source
    if args.path:
        source["path"] = args.path
    source.update(_parse_pairs(args.option, "--option"))
    tokenizer = dict(spec.get("tokenizer") or {})
    if getattr(args, "tokenizer_from", None):
        if args.tokenizer or args.set:
            raise PrepareError("--tokenizer-from uses the saved tokenizer as it is: "
                               "give it without --tokenizer and --set")
        tokenizer = tokenizer_from(args.tokenizer_from)
    elif args.tokenizer:
        tokenizer = {"domain": args.tokenizer} if tokenizer.get("domain") != args.tokenizer else tokenizer
    tokenizer.update(_parse_pairs(args.set, "--set"))
    out = args.out or spec.get("out")
    if not source.get("name") or not tokenizer.get("domain") or not out:
        raise PrepareError("need --source, --tokenizer and --out (or a --spec file that gives them)")
    return {"source": source, "tokenizer": tokenizer, "out": out,
            "workers": args.workers if args.workers is not None else int(spec.get("workers", 2)),
            "shard_tokens": int(args.shard_tokens or spec.get("shard_tokens", DEFAULT_SHARD_TOKENS)),
            "shard_documents": int(args.shard_documents or spec.get("shard_documents", DEFAULT_SHARD_DOCUMENTS)),
            "file_timeout_s": getattr(args, "file_timeout", None) or spec.get("file_timeout_s")}


def job_of(args: argparse.Namespace) -> Job | None:
    """The job of ``--job I --num-jobs N`` (None for a one-job prepare); refuses a mix of steps."""
    steps = [name for name, given in (("--tokenizer-only", args.tokenizer_only), ("--merge", args.merge),
                                      ("--job", args.job is not None or args.num_jobs is not None)) if given]
    if len(steps) > 1:
        raise PrepareError(f"{' and '.join(steps)} are separate steps; give one of them")
    if (args.job is None) != (args.num_jobs is None):
        raise PrepareError("give --job I together with --num-jobs N")
    return Job(args.job, args.num_jobs) if args.job is not None else None


def say_error(exc: BaseException) -> int:
    """A mistake (see :data:`REPORTED`) as one line on stderr; the exit status."""
    print(f"shortcutlm prepare: error: {exc}", file=sys.stderr)
    return 2


def say_result(args: argparse.Namespace, manifest: dict[str, Any], where: Path, elapsed: float) -> int:
    """What the step wrote: the plan, or each split's documents and tokens and what was rejected; the exit status."""
    if args.tokenizer_only:
        plan = manifest[parallel.PLAN]
        print(f"tokenizer {plan['fingerprint']} saved; {plan['documents']:,} documents to encode, "
              f"{len(manifest['rejected'])} rejected; manifest: {where} ({elapsed:.1f} s)")
        return 0
    if args.quiet:  # with the bars on they were said before reading
        for line in manifest.get("found") or []:
            print(f"found {line}")
    for split, entry in manifest["splits"].items():
        extra = "".join(f", {k} {entry[k]:,.6g}" if isinstance(entry[k], float) else f", {k} {entry[k]:,}"
                        for k in entry if k not in ("documents", "tokens", "shards"))
        print(f"{split}: {entry['documents']:,} documents, {entry['tokens']:,} tokens "
              f"in {len(entry['shards'])} shard(s){extra}")
    skipped = [r for r in manifest["rejected"] if r.get("skipped")]
    failed = [r for r in manifest["rejected"] if not r.get("skipped")]
    print(f"{len(failed)} rejected of {manifest['inputs']['total']} inputs"
          + (f", {len(skipped)} file(s) skipped" if skipped else "") + f"; manifest: {where} ({elapsed:.1f} s)")
    for item in failed[:10]:
        print(f"  rejected {item['input']}: {item['reason']}")
    if skipped:
        kinds = Counter(r["reason"].split(";")[0].removeprefix("skipped: ") for r in skipped)
        print("  skipped (not read, listed in the manifest): "
              + "; ".join(f"{n} × {kind}" for kind, n in kinds.most_common(4)))
    return 0
