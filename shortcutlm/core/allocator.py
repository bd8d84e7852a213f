"""Keep the memory a step frees for the next step, instead of handing it back to the kernel.

Why: glibc's malloc serves each large block by ``mmap`` and unmaps it when freed, and returns the
heap's free top beyond a threshold; every step of a CPU training run then faults the pages of its
activations in again, and the kernel zeroes each one. A bf16 step at 6 x 384 (batch 8 x 512) faulted
71-162 MiB of pages a step; kept, 3 MiB, and the step took 560 ms instead of 586-619 (AMD EPYC, two
threads, one process). jemalloc and tcmalloc do the same by default (Intel's PyTorch launcher
preloads one of them), but a preload has to be set up outside Python; glibc's own ``mallopt`` does it
from inside. An fp32 evaluation batch (8 x 512 at 6 x 384) faulted 75-260 MiB and took 0.64-0.67 s;
kept, 0.60-0.64 s. The cost: the process holds its peak heap until it exits, as PyTorch's CUDA caching
allocator does on a GPU. Training, evaluation and generation set it as they start.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

#: mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (whose freed memory is reused), not from mmap: a step's
#: largest activations at the recipe sizes (bf16 logits at 4096 x 3557 are 29 MB). glibc's upper limit.
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap that stays with the process: the most mallopt's int holds (2 GiB).
TRIM_THRESHOLD = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed blocks rather than return them (once per process); False
    where the C library is not glibc (macOS, musl) or refuses, and nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
