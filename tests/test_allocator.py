"""The allocator setting that keeps a step's freed pages for the next step (core.allocator)."""
from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import pytest

from shortcutlm.core import allocator

CHILD = textwrap.dedent("""
    import resource, sys, torch
    from shortcutlm.core.allocator import keep_freed_memory
    kept = keep_freed_memory() if sys.argv[1] == "keep" else None
    def step():  # like a forward pass: 72 MB of activations alive at once, freed after the backward
        kept_for_backward = [torch.ones(1_500_000) for _ in range(12)]
        return float(sum(t.sum() for t in kept_for_backward))
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_pages_are_reused_not_faulted_again() -> None:
    """Twenty steps that each hold 72 MB of tensors, then free them: with glibc's defaults the heap's
    freed top goes back to the kernel and every page faults in again each step; kept, none does."""
    kept, kept_faults = _faults("keep")
    _, default_faults = _faults("default")
    assert kept == "True"
    pages_a_step = 12 * 1_500_000 * 4 // resource.getpagesize()
    assert default_faults > 10 * pages_a_step  # the reason the setting exists, on this C library
    assert kept_faults < pages_a_step


def test_setting_is_applied_once() -> None:
    assert allocator.keep_freed_memory() is allocator.keep_freed_memory()
