"""The packed products' operators in C++ (``packed_linear.cpp``), built once per machine and torch.

Why C++: a compiled decoding chunk calls the packed product 25 times a token at 6 x 384, and the
Python operator in ``models.packed`` costs 26 µs a call where oneDNN's own product costs 14 µs (AMD
EPYC, two threads, a 384 x 384 weight); the C++ operator costs 14.8 µs, and Inductor's C++ wrapper
calls it without entering Python. Decoding at 6 x 384 ran 396-415 tokens/s compiled through the
Python operator and 525-605 through this one, with the same ids (two processes each, alternated).

The source is compiled with PyTorch's own extension builder (the C++ compiler ``torch.compile``
already needs, and ninja) into the suite's cache, some 8 s on first use, then loaded from there; a
changed source or torch rebuilds. Where it cannot be built (no compiler, no ninja, a read-only
cache) or ``SHORTCUTLM_NATIVE=0`` is set, the Python operator serves: the same oneDNN product, so
the same samples, only slower. :func:`operators` says which.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shortcutlm.core.cache_dir import cache_root

NAME = "shortcutlm_native"
SOURCE = Path(__file__).with_name("packed_linear.cpp")
#: Set to 0 to keep the Python operator (for comparing, or where building is unwanted).
ENV = "SHORTCUTLM_NATIVE"

log = logging.getLogger(__name__)


def build_directory() -> Path:
    """Where the operator library is built: per torch version and Python, so upgrading either rebuilds."""
    tag = f"torch{torch.__version__.replace('+', '_')}-py{sys.version_info.major}{sys.version_info.minor}"
    return cache_root() / "native" / tag


def _ninja_on_path() -> bool:
    """PyTorch's builder runs ``ninja`` from PATH; the venv's own (the ``ninja`` package) counts too."""
    if shutil.which("ninja"):
        return True
    venv_bin = Path(sys.executable).parent
    if (venv_bin / "ninja").exists():
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
        return True
    return False


@functools.cache
def operators() -> Any | None:
    """``torch.ops.shortcutlm_native`` once built and loaded (once per process), else None with the
    reason logged once. Why not: no oneDNN, the switch, no ninja or compiler, a failed build."""
    if os.environ.get(ENV, "1") == "0" or not torch.backends.mkldnn.is_available():
        return None
    if not _ninja_on_path():
        log.warning("packed products stay in Python: ninja is not installed (decoding is slower, not different)")
        return None
    builder_log = logging.getLogger("torch.utils.cpp_extension")
    level = builder_log.level
    builder_log.setLevel(logging.ERROR)  # its import warns "no CUDA runtime" on a CPU machine
    try:
        from torch.utils import cpp_extension

        folder = build_directory()
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / f"{NAME}.so").exists():  # a pause the user should not mistake for a hang
            log.warning("building the packed product's C++ operator in %s (once, some 10 s)", folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cpp_extension.load(name=NAME, sources=[str(SOURCE)], extra_cflags=["-O2"],
                               build_directory=str(folder), is_python_module=False, verbose=False)
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as err:
        log.warning("packed products stay in Python: the C++ operator did not build (%s)",
                    str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__)
        return None
    finally:
        builder_log.setLevel(level)
    _register_shapes()
    return torch.ops.shortcutlm_native


def _register_shapes() -> None:
    """The output's shape for ``torch.compile``'s tracing (the C++ side only runs real products)."""
    @torch.library.register_fake(f"{NAME}::packed_linear")
    def _stacked(x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor | None = None, b2: Tensor | None = None,
                 w3: Tensor | None = None, b3: Tensor | None = None) -> Tensor:
        rows = sum(w.shape[0] for w in (w1, w2, w3) if w is not None)
        return x.new_empty(*x.shape[:-1], rows)


def forget(tensors: list[Tensor]) -> int:
    """Drop the C++ operator's packed copies made from any of ``tensors``; how many (0 when not loaded)."""
    return forget_addresses([t._cdata for t in tensors])


def forget_addresses(addresses: list[int]) -> int:
    """:func:`forget` by the tensors' addresses (``Tensor._cdata``), for a finalizer that runs once the
    tensor itself is gone from Python."""
    ops = operators()
    return int(ops.forget(addresses)) if ops is not None else 0


def copies() -> int:
    """How many packed copies the C++ operator holds (0 when not loaded)."""
    ops = operators()
    return int(ops.copies()) if ops is not None else 0
