"""Keep freed memory in the process, so that a training step's large tensors reuse pages already mapped.

glibc's malloc hands allocations above a threshold (128 KB, raised on the fly up to 32 MB) to
`mmap` and gives them back to the kernel on `free`, and trims the top of its heap when more than
twice that threshold is free. A CPU training step allocates and frees the same few MB-sized
tensors (an HSTU micro-batch's [16, 200, 200] scores and time gaps, the item-score blocks) dozens
of times, so each allocation is fresh memory: the first write to each 4 KB page is a page fault.
On the ML-100K HSTU recipe that was 78,100 minor page faults per epoch, 14,331 with this setting
(BENCHMARKS.md "HSTU training speed").

`keep_freed_memory()` sets the two thresholds once (mallopt: blocks below 32 MB, the largest value
glibc allows, come from the heap; up to 1 GB of freed heap stays mapped), which is what preloading
jemalloc or tcmalloc does for PyTorch on CPUs, without a preload. Peak memory is unchanged: the kept
pages are the ones the next step reuses. The `genrec` command calls it; library users who run
their own training loop may call it once at start-up. A user who chose the allocator's settings
(`GLIBC_TUNABLES` with malloc tunables, or another allocator through `LD_PRELOAD`) keeps them, and
`GENREC_KEEP_FREED_MEMORY=0` turns it off (benchmarks/hstu_speed.py measures both).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit machines
TRIM_THRESHOLD = 1 << 30


def _user_chose_allocator() -> bool:
    return (
        "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
        or bool(os.environ.get("LD_PRELOAD"))
        or os.environ.get("GENREC_KEEP_FREED_MEMORY") == "0"
    )


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring); returns whether they were
    set (False off glibc, or when the user chose the allocator's settings)."""
    if not sys.platform.startswith("linux") or _user_chose_allocator():
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False  # musl and others: no mallopt with these meanings
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
