"""Adapters over the libraries' private parts: one module per library, and nothing else touches them.

Lightning (its loop counters and the checkpoint's ``loops`` state), miditok (its BPE tables) and
webdataset (its tar iterators) give no public way to do what the suite needs there. Each use goes
through a function here that checks the attribute is where the tested version keeps it and raises
:class:`LibraryChanged` (naming the installed and the tested version) when it is not, instead of
silently setting a new attribute or reading nothing. ``pyproject.toml`` bounds these packages to
the tested minor versions; ``tests/test_compat.py`` fails loudly when an installed one differs.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


class LibraryChanged(RuntimeError):
    """An installed library no longer has a private part this suite relies on."""


def installed(package: str) -> str:
    """The installed version of ``package`` ("not installed" when it is absent)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def changed(package: str, tested: str, what: str) -> LibraryChanged:
    """The error for a private part of ``package`` that is not where version ``tested`` keeps it."""
    return LibraryChanged(f"{package} {installed(package)}: {what} is not where {package} {tested} keeps it, and "
                          f"shortcutlm relies on it (see shortcutlm.compat); install {package}=={tested}.*")
