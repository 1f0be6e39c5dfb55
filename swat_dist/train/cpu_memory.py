"""CPU training's allocator: keep freed heap memory instead of handing it back to the OS every step.

PyTorch's CPU allocator is plain ``malloc``. glibc's defaults return freed memory at the heap's top
to the OS (the trim threshold, ~2x a dynamic mmap threshold), so a training step that frees and
re-allocates tens of MB of activations page-faults them in again each step: SWAT-DeiT-S at batch 16
took 404k minor faults and 0.86 s of system time per 3.97 s step, its timm baseline 50k and 0.12 s
(docs/benchmarks.md, issue 12). GPUs have a caching allocator and no such cost, so without this the
CPU step overstates what SWAT's larger activations cost. Fixing both thresholds (mmap for blocks of
32 MiB and more, glibc's ceiling; never trim) took the faults to 19k and the system time to 0.05 s.
What it costs: the process keeps its peak heap resident until it exits, as a caching allocator does.
Blocks of 32 MiB and more are still mmap'ed (SWAT's stem maps: 103 MB at batch 16).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
_TRIM_NEVER = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process (its later allocations); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER))
