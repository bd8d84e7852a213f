"""One entry point: ``shortcutlm COMMAND``.

Each command lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
modules are imported only when their command runs, so ``shortcutlm --help`` stays fast and a
broken optional dependency only breaks the command that needs it. Every command also takes
``--config FILE``: a YAML file of its options (:mod:`shortcutlm.core.options`), which the command
line overrides.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from shortcutlm.artifacts.files import disk_full, is_no_space
from shortcutlm.core.errors import UserError
from shortcutlm.core.options import CONFIG_OPTION, apply_config, config_path
from shortcutlm.core.stopping import Interrupted

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("shortcutlm.datasets.prepare", "turn a dataset into token shards and their manifest"),
    "train": ("shortcutlm.run.training", "train a model from a recipe"),
    "evaluate": ("shortcutlm.run.evaluation", "next-token loss per domain for one or more checkpoints"),
    "generate": ("shortcutlm.run.generation", "continue a prompt file or sample from a checkpoint"),
    "recipe": ("shortcutlm.stages", "run a recipe's stages: prepare, train, evaluate, generate, report"),
    "diagnose": ("shortcutlm.run.diagnostics", "attention-concentration and shortcut-depth maps for a checkpoint"),
    "ablate": ("shortcutlm.ablation", "train every variant × seed on each embedded dataset; write docs/results.md"),
}

BENCHMARKS: dict[str, tuple[str, str]] = {
    "model": ("shortcutlm.bench.model", "decoder variants: step time, tokens/s, KV cache, generation"),
    "tokenizers": ("shortcutlm.bench.tokenizers", "per-domain tokenizer throughput"),
    "codec": ("shortcutlm.bench.codec", "offline acoustic codec: identity, prepare and generation speed"),
    "data": ("shortcutlm.bench.data", "prepare and loader throughput"),
    "peer": ("shortcutlm.bench.peer", "side by side with x-transformers"),
    "mfu": ("shortcutlm.bench.mfu", "training MFU against the measured matmul peak, fp32 and bf16"),
    "gpu": ("shortcutlm.bench.gpu", "the GPU check: CUDA tests and benchmarks into docs/bench/gpu (--dry-run on CPU)"),
}


def _add_lazy(sub: argparse._SubParsersAction, name: str, module: str, help_text: str, chosen_name: list[str],
              argv: list[str]) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(_module=module)
    # Only the chosen command's module is imported (to build its options).
    if name in chosen_name:
        importlib.import_module(module).configure(parser)
        parser.add_argument(CONFIG_OPTION, metavar="FILE",
                            help="a YAML file of this command's options (names as on the command line, e.g. "
                                 "top-k: 40); options given on the command line win")
        chosen = config_path(argv)
        if chosen is not None:
            apply_config(parser, chosen)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shortcutlm", description=__doc__.splitlines()[0],
                                     epilog="Mistakes are reported in one line; add --debug anywhere "
                                            "(or set SHORTCUTLM_DEBUG=1) for the traceback.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        _add_lazy(sub, name, module, help_text, argv[:1], argv)
    bench = sub.add_parser("bench", help="benchmarks with JSON output", description="benchmarks with JSON output")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        _add_lazy(bench_sub, name, module, help_text, argv[1:2] if argv[:1] == ["bench"] else [], argv)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user's mistake prints one line and exits 2 (``--debug`` anywhere on the
    line, or ``SHORTCUTLM_DEBUG=1``, shows the traceback instead); a bug keeps its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # A file name that is not UTF-8 (kept as surrogate escapes) prints as \xNN instead of failing.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    debug = "--debug" in argv or os.environ.get("SHORTCUTLM_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    command = " ".join(argv[:2] if argv[:1] == ["bench"] else argv[:1])
    try:
        args = build_parser(argv).parse_args(argv)
        return int(importlib.import_module(args._module).run(args) or 0)
    except Interrupted as stopped:  # Ctrl-C in training: state saved, nothing to trace back
        if stopped.primary:
            print(stopped, file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, NotADirectoryError) as err:
        if debug:
            raise
        print(f"shortcutlm {command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:  # a full device met where no writer of ours named the file
        if debug or not is_no_space(err):
            raise
        where = getattr(err, "filename", None) or os.getcwd()
        print(f"shortcutlm {command}: error: {_one_line(disk_full(where, 'its output'))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
