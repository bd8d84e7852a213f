"""Checks that the installed binary packages work together, with messages a user can act on.

torch and torchaudio ship compiled libraries built against each other: a torchaudio patch
release can need symbols that the installed torch lacks, and the failure then surfaces deep
inside an audio command as ``undefined symbol: ...``. Checking once, up front, turns that into
one line that says which pair is installed and how to get the pinned one.
"""
from __future__ import annotations

import importlib
from importlib import metadata

from shortcutlm.core.errors import UserError

PINNED_PAIR = "torch==2.11.0 torchaudio==2.11.0"


class EnvironmentProblem(UserError, RuntimeError):
    """An installed package cannot be used; the message says which and how to fix it."""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def torch_pair_problem(error: BaseException) -> str:
    """The one-line message for a torchaudio whose compiled parts do not load against torch."""
    detail = " ".join(str(error).split())  # loader errors can span lines
    return (f"torchaudio {_version('torchaudio')} cannot load its compiled library against torch "
            f"{_version('torch')} ({type(error).__name__}: {detail}); install the matched pair the "
            f"project pins: `make venv` (requirements.lock) or `pip install {PINNED_PAIR}`")


def check_torch_pair() -> None:
    """Load torchaudio's compiled extension (what its audio functions need), or raise one line."""
    try:
        importlib.import_module("torchaudio._extension")
    except (ImportError, OSError, RuntimeError) as err:
        raise EnvironmentProblem(torch_pair_problem(err)) from err
