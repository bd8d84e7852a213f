"""``shortcutlm bench gpu`` (``make gpu-check``): everything a lent GPU should measure, in one run.

No GPU has run this code before, and a GPU is lent rarely and briefly, so the check is ready
before one comes: it fits in about 8 minutes on one H100/H200 and writes one JSON per section
plus ``check.json`` (the device, every section's status and figures, the GPU targets) under
``docs/bench/gpu/``. Sections, each with its own time limit so that one hang costs only itself:

* ``tests``     the tests that need CUDA (``pytest -m gpu``): bf16-mixed and 16-mixed training,
                flash attention, compile, compiled decoding, FSDP with every variant;
* ``mfu``       ``bench mfu`` at the paper preset's size, compiled, bf16 generation beside fp32;
* ``model``     ``bench model`` at the paper preset's size;
* ``peer``      ``bench peer`` at the paper preset's size (no loss phase);
* ``decode``    batch-1 decoding against the device's memory-bandwidth bound on reading the weights;
* ``loader``    loader tokens/s against the GPU's training tokens/s at the paper size (``mfu``'s);
* ``ablation``  a short ``--preset gpu`` ablation on ``shakespeare``.

``--dry-run`` runs the CPU-safe sections at tiny sizes in this process (CI runs it); the
sections that need CUDA are recorded as ``"skipped: needs CUDA"``, so the JSON has every section.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch

from shortcutlm.artifacts import files
from shortcutlm.artifacts.files import read_json
from shortcutlm.bench.common import machine, not_judged, target, write_json

SKIPPED = "skipped: needs CUDA"
DRY_RUN_NOTE = "dry run: tiny sizes on the CPU; GPU targets are judged on a GPU only"
OUT_OF_TIME = "skipped: the check's time budget was spent"
#: The repository (the tests and recipes/ the check runs); subprocesses start here.
ROOT = Path(__file__).resolve().parents[2]
#: The GPU targets judged: MFU with compile at the paper size, decoding against the HBM read bound, loader feeding.
MFU_TARGET = 0.5
DECODE_TARGET = 0.6
LOADER_TARGET = 2.0
#: Dense bf16 peaks (FLOP/s, no sparsity) by device name, for MFU against the datasheet as well
#: as against the measured matmul peak.
DENSE_BF16_PEAKS = {"H100 SXM": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12,
                    "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "B200": 2250e12}


@dataclass
class Size:
    """The model size a section measures at: the paper preset's, or a tiny one for the dry run."""

    layers: int
    width: int
    heads: int
    context: int
    vocab: int
    batch: int
    steps: int
    new_tokens: int

    def args(self) -> list[str]:
        return ["--layers", str(self.layers), "--width", str(self.width), "--heads", str(self.heads),
                "--context", str(self.context), "--vocab", str(self.vocab), "--batch", str(self.batch)]


#: recipes/shakespeare.yaml's ``paper`` preset: 12 layers x 768, context 1024, vocabulary 8000.
PAPER = Size(layers=12, width=768, heads=12, context=1024, vocab=8000, batch=8, steps=5, new_tokens=128)
TINY = Size(layers=2, width=64, heads=2, context=64, vocab=256, batch=2, steps=1, new_tokens=8)


@dataclass
class Section:
    name: str
    run: Callable[[Check], dict[str, Any]]
    timeout_s: int
    needs_cuda: bool = False


@dataclass
class Check:
    """One run of the check: where it writes, at which size, and on which device."""

    out: Path
    dry_run: bool
    device: str
    size: Size
    shards: Path | None = None
    deadline: float = float("inf")
    results: dict[str, Any] = field(default_factory=dict)

    def limit(self, section: str) -> int:
        """A section's time limit: its own, or what is left of the whole check's budget."""
        return max(1, int(min(SECTIONS_BY_NAME[section].timeout_s, self.deadline - time.monotonic())))

    def json(self, name: str) -> Path:
        return self.out / f"{name}.json"

    def command(self, argv: list[str], timeout_s: float) -> dict[str, Any]:
        """Run ``shortcutlm ARGV``: in this process for the dry run (fast), else in a fresh one with
        a time limit (isolated CUDA state; a hang costs one section)."""
        start = time.perf_counter()
        if self.dry_run:
            from shortcutlm.cli import main

            with contextlib.redirect_stdout(io.StringIO()) as captured:
                rc = main(argv)
            tail = captured.getvalue()[-2000:]
        else:
            try:
                done = subprocess.run([sys.executable, "-m", "shortcutlm.cli", *argv], capture_output=True,
                                      text=True, timeout=timeout_s, cwd=ROOT)
                rc, tail = done.returncode, (done.stdout + done.stderr)[-2000:]
            except subprocess.TimeoutExpired as exc:
                out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
                rc, tail = 124, f"timed out after {timeout_s} s\n{out[-2000:]}"
        return {"command": "shortcutlm " + " ".join(argv), "returncode": rc,
                "seconds": round(time.perf_counter() - start, 1), "output_tail": tail}


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
def section_tests(check: Check) -> dict[str, Any]:
    """The CUDA test subset: ``pytest -m gpu`` (the tests skip themselves without CUDA)."""
    report = check.out / "tests.xml"
    argv = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=check.limit("tests"), cwd=ROOT)
        rc, tail = done.returncode, (done.stdout + done.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        rc, tail = 124, "timed out"
    counts = junit_counts(report) if report.exists() else {}
    return {"command": " ".join(argv[1:]), "returncode": rc, **counts, "output_tail": tail,
            "status": "ok" if rc == 0 else "failed"}


def junit_counts(path: Path) -> dict[str, int]:
    """Tests, failures, errors and skips from a JUnit XML report."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else {}


def section_mfu(check: Check) -> dict[str, Any]:
    s = check.size
    argv = ["bench", "mfu", *s.args(), "--steps", str(s.steps), "--warmup", "2", "--device", check.device,
            "--json", str(check.json("mfu")), "--new-tokens", str(s.new_tokens)]
    argv += (["--peak-size", "256", "--generation-repeats", "1"] if check.dry_run
             else ["--compile", "--peak-size", "8192"])
    return figures(check, "mfu", check.command(argv, check.limit("mfu")),
                   lambda r: {"results": r["results"], "targets": r.get("targets", {}),
                              "compiled_speedup": r.get("compiled_speedup")})


def section_model(check: Check) -> dict[str, Any]:
    s = check.size
    argv = ["bench", "model", *s.args(), "--steps", str(s.steps), "--warmup", "1", "--device", check.device,
            "--new-tokens", str(s.new_tokens), "--paired", "--json", str(check.json("model"))]
    if not check.dry_run:
        argv += ["--dtype", "bf16"]
    return figures(check, "model", check.command(argv, check.limit("model")),
                   lambda r: {"step_time_ratio_to_baseline": r.get("step_time_ratio_to_baseline"),
                              "paired_step_time_ratio": (r.get("paired") or {}).get("step_time_ratio"),
                              "targets": r.get("targets", {})})


def section_peer(check: Check) -> dict[str, Any]:
    from shortcutlm.bench.peer.config import peer_missing

    if peer_missing():
        return {"status": f"skipped: {peer_missing()}"}
    s = check.size
    argv = ["bench", "peer", *s.args(), "--steps", str(s.steps), "--warmup", "2", "--device", check.device,
            "--new-tokens", str(s.new_tokens), "--generation-repeats", "2", "--loss-steps", "0", "--skip-memory",
            "--json", str(check.json("peer"))]
    return figures(check, "peer", check.command(argv, check.limit("peer")),
                   lambda r: {"ratios": r["ratios"], "targets": r.get("targets", {})})


def figures(check: Check, name: str, ran: dict[str, Any], pick: Callable[[dict], dict[str, Any]]) -> dict[str, Any]:
    """A benchmark section's record: how it ran, and the headline figures from its JSON."""
    path = check.json(name)
    if ran["returncode"] != 0 or not path.exists():
        return {**ran, "status": "failed"}
    return {**ran, "status": "ok", "json": path.name, **pick(read_json(path, f"bench {name} result"))}


#: What the decode section's compiled rows run, and how CUDA graphs would capture it.
COMPILED_DECODING = (
    "generate(compile=True): chunks of models.decoding.CHUNK steps (model step + sampling, the noise drawn "
    "outside the graph) compiled as one graph each, dynamic cache length, Inductor's default mode. That chunk "
    "is the unit CUDA graphs would capture: one replay per CHUNK tokens. It is not captured here because its "
    "cache length is a dynamic size, which makes CUDA graph trees record a new graph per length; capturing it "
    "needs the position as a tensor input and attention over the whole preallocated cache under a mask "
    "(static shapes, as gpt-fast does), then torch.compile(mode='reduce-overhead') on the same chunk.")


def section_decode(check: Check) -> dict[str, Any]:
    """Batch-1 decoding against the bound set by reading every weight once per token at the
    device's measured copy bandwidth; eager and compiled, fp32 and bf16 weights. It runs in this
    process, so its limit is checked between settings (a setting past it is skipped, and says so)."""
    from shortcutlm.bench.model import default_config
    from shortcutlm.bench.decode_bound import decode_bound

    s = check.size
    config = default_config(argparse.Namespace(layers=s.layers, width=s.width, heads=s.heads,
                                               context=s.context, vocab=s.vocab))
    modes = [("fp32", False), ("bf16", False)] + ([] if check.dry_run else [("bf16", True)])
    stop = time.monotonic() + check.limit("decode")
    rows: dict[str, Any] = {}
    for dtype, compiled in modes:
        name = f"{dtype}{'_compiled' if compiled else ''}"
        rows[name] = (decode_bound(config, check.device, dtype, compiled, s.new_tokens if check.dry_run else 256)
                      if time.monotonic() < stop else {"status": "skipped: the section's time limit was spent"})
    best = max(r.get("share_of_bound", 0.0) for r in rows.values())
    result = {"benchmark": "decode", "machine": machine(), "setup": config.to_dict(), "results": rows,
              "compiled_path": COMPILED_DECODING,
              "targets": {"batch1_decode_share_of_weight_read_bound": target(round(best, 3), DECODE_TARGET, ">=")}}
    files.write_json(check.json("decode"), result, sort_keys=False)
    return {"status": "ok", "json": "decode.json", "results": rows, "targets": result["targets"]}


def section_loader(check: Check) -> dict[str, Any]:
    """Loader tokens/s (2 workers, the paper context) against the training tokens/s that ``mfu``
    measured on this device at the paper size (its fastest setting)."""
    from shortcutlm.bench.data import bench_loader

    shards = check.shards or prepare_shakespeare(check.out / "work" / "shakespeare", tiny=check.dry_run)
    s = check.size
    loader = bench_loader(shards, s.context, s.batch, 20 if check.dry_run else 200, 0 if check.dry_run else 2)
    mfu = check.results.get("mfu", {})
    training = max((r["tokens_per_second"] for r in mfu.get("results", {}).values()), default=None)
    result: dict[str, Any] = {"benchmark": "loader", "machine": machine(), "shards": str(shards), "loader": loader,
                              "training_tokens_per_second": training}
    if training:
        result["targets"] = {"loader_over_training": target(round(loader["tokens_per_s"] / training, 3),
                                                            LOADER_TARGET, ">=")}
    files.write_json(check.json("loader"), result, sort_keys=False)
    return {"status": "ok", "json": "loader.json", **{k: v for k, v in result.items() if k not in ("machine",)}}


def prepare_shakespeare(out: Path, tiny: bool) -> Path:
    """Shakespeare shards (the paper preset's 8000-id tokenizer; a few plays and 512 ids when tiny)."""
    from shortcutlm.artifacts.manifest import ShardManifest
    from shortcutlm.datasets.prepare import prepare

    if ShardManifest.read_or_none(out, require_complete=True) is None:  # prepared before: reused
        source = {"name": "shakespeare", **({"limit": 3} if tiny else {})}
        prepare(source, {"domain": "text", "vocab_size": 512 if tiny else 8000}, out, workers=1 if tiny else 2,
                progress=False)
    return out


def section_ablation(check: Check) -> dict[str, Any]:
    argv = ["ablate", str(ROOT / "recipes" / "ablation.yaml"), "--preset", "gpu", "--datasets", "shakespeare",
            "--set", "train.max_steps=150", "--set", "train.val_every=75", "--set", "seeds=[0]",
            "--set", "variants={baseline: {}, resformer: {value_residual: resformer}, "
                     "shortcut_depth: {shortcut: depth}, shortcut_full: {shortcut: full}}",
            "--out", str(check.out / "work" / "ablation"), "--docs", str(check.out / "ablation"), "--no-progress"]
    ran = check.command(argv, check.limit("ablation"))
    page = check.out / "ablation" / "results.json"
    return {**ran, "status": "ok" if ran["returncode"] == 0 else "failed",
            **({"results": str(page.relative_to(check.out))} if page.exists() else {})}


#: The paired recipe at tiny sizes (a dry run's, or a test's): seconds on a CPU.
PAIRS_DRY_SETS = ("pairs.source.limit=4", "pairs.source.segments=2", "pairs.per_task=1",
                  "pairs.tokenizers.acoustic.kmeans_iters=2", "pairs.tokenizers.midi.vocab_size=600",
                  "train.max_steps=2", "train.val_every=2", "train.val_batches=1", "evaluate.max_batches=2")


def section_pairs(check: Check) -> dict[str, Any]:
    """The paired recipe (score ↔ audio, recipes/chorales_pairs.yaml) end to end at its tiny preset:
    what the source is worth to each task, and each task's scores beside chance and the ceiling."""
    work = check.out / "work" / "pairs"
    argv = ["recipe", str(ROOT / "recipes" / "chorales_pairs.yaml"), "--preset", "tiny", "--variant", "baseline",
            "--out", str(work), "--no-progress"]
    for item in PAIRS_DRY_SETS if check.dry_run else ():
        argv += ["--set", item]
    ran = check.command(argv, check.limit("pairs"))
    figures: dict[str, Any] = {}
    found = work / "pairs.json"
    if found.is_file():
        body = (read_json(found, "pairs results") or {}).get("baseline", {})
        figures = {"source_worth_nats_per_token": {t: w["source_worth_nats_per_token"]
                                                   for t, w in (body.get("worth") or {}).items()},
                   "scores": {t: s["means"] for t, s in (body.get("scores") or {}).items()}}
    return {**ran, "status": "ok" if ran["returncode"] == 0 else "failed", "results": figures}


#: In order of what matters most, since a section that would start after the budget is skipped.
SECTIONS = [
    Section("tests", section_tests, 150, needs_cuda=True),
    Section("mfu", section_mfu, 180),
    Section("decode", section_decode, 45),
    Section("peer", section_peer, 60),
    Section("loader", section_loader, 45),
    Section("model", section_model, 60),
    Section("ablation", section_ablation, 150, needs_cuda=True),
    Section("pairs", section_pairs, 150, needs_cuda=True),
]
SECTIONS_BY_NAME = {s.name: s for s in SECTIONS}


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="folder for the JSON (default docs/bench/gpu, or "
                                                    "runs/gpu-check-dry for --dry-run)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on this machine's CPU, in this process; CUDA-only sections are skipped")
    parser.add_argument("--sections", default=",".join(SECTIONS_BY_NAME),
                        help="comma-separated subset of " + ",".join(SECTIONS_BY_NAME))
    parser.add_argument("--shards", help="prepared shakespeare shards for the loader section (default: prepare them)")
    parser.add_argument("--budget-s", type=int, default=470,
                        help="the whole check's wall-clock budget; sections that would start later are skipped")


def device_record(device: str) -> dict[str, Any]:
    """What the figures were measured on: the GPU's name, memory and dense bf16 peak where known."""
    if device != "cuda":
        return {"type": "cpu", "name": machine()["processor"], "note": "dry run: no GPU figures"}
    props = torch.cuda.get_device_properties(0)
    peak = next((v for k, v in DENSE_BF16_PEAKS.items() if k in props.name), None)
    return {"type": "cuda", "name": props.name, "memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}", "dense_bf16_peak_flops": peak,
            "cuda": torch.version.cuda}


def gpu_targets(results: dict[str, Any], device: dict[str, Any]) -> dict[str, Any]:
    """The GPU targets, from the sections' figures (absent where a section did not run)."""
    out: dict[str, Any] = {}
    mfu = results.get("mfu", {}).get("results", {})
    peak = device.get("dense_bf16_peak_flops")
    bf16 = mfu.get("bf16_compiled") or mfu.get("bf16")
    if bf16 and peak:
        out["bf16_compiled_mfu_of_dense_peak"] = target(round(bf16["achieved_flops"] / peak, 3), MFU_TARGET, ">=")
    decode = results.get("decode", {}).get("targets", {})
    out.update(decode)
    out.update(results.get("loader", {}).get("targets", {}))
    return out


def run(args: argparse.Namespace) -> int:
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        raise SystemExit("bench gpu: no CUDA device here; --dry-run runs the CPU-safe parts at tiny sizes")
    names = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS_BY_NAME]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS_BY_NAME)}")
    out = Path(args.out or ("runs/gpu-check-dry" if args.dry_run else "docs/bench/gpu")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if cuda and not args.dry_run else "cpu"
    check = Check(out, args.dry_run, device, TINY if args.dry_run else PAPER,
                  Path(args.shards) if args.shards else None, deadline=time.monotonic() + args.budget_s)
    started = time.perf_counter()
    for section in SECTIONS:
        if section.name not in names:
            check.results[section.name] = {"status": "skipped: not selected (--sections)"}
        elif section.needs_cuda and device != "cuda":
            check.results[section.name] = {"status": SKIPPED}
        elif time.monotonic() >= check.deadline - 5:
            check.results[section.name] = {"status": OUT_OF_TIME}
        else:
            print(f"bench gpu: {section.name} (limit {check.limit(section.name)} s)", flush=True)
            begin = time.perf_counter()
            try:
                check.results[section.name] = section.run(check)
            except Exception as exc:  # one broken section must not hide the others' figures
                check.results[section.name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            check.results[section.name]["wall_seconds"] = round(time.perf_counter() - begin, 1)
    dev = device_record(device)
    result = {"benchmark": "gpu-check", "dry_run": args.dry_run, "device": dev, "machine": machine(),
              "size": vars(check.size), "wall_seconds": round(time.perf_counter() - started, 1),
              "sections": check.results, "targets": gpu_targets(check.results, dev)}
    if args.dry_run:  # tiny sizes on a CPU: the figures show the check works, not what a GPU does
        result["targets"] = {k: not_judged(t, DRY_RUN_NOTE) for k, t in result["targets"].items()}
    write_json(result, out / "check.json",
               [f"bench gpu on {dev['name']}: " + ", ".join(f"{k} {v['status']}" for k, v in check.results.items())])
    return 0 if all(r["status"] in ("ok", SKIPPED) or r["status"].startswith("skipped")
                    for r in check.results.values()) else 1
