"""Keep freed large blocks in the process heap (glibc), so the simulator's big temporaries reuse
memory instead of page-faulting it back in every round.

glibc serves allocations above its mmap threshold (32 MB at most) with fresh ``mmap``s and
returns them to the OS on free; every round's ``[n, d]`` temporaries then pay page faults on
first touch -- measured ~8 ms per 40 MB on this project's VMs, several times a copy's cost. A
large mmap threshold and trim threshold (``mallopt``) keep them in the heap. This is what
jemalloc/tcmalloc, which PyTorch's CPU tuning guide recommends, do by default. Process-wide
and idempotent; a no-op off glibc, or with ``DISTOPT_KEEP_FREED_MEMORY=0``.
"""
from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory() -> bool:
    """Apply once per process; True if the allocator took the settings."""
    global _done
    if _done or os.environ.get("DISTOPT_KEEP_FREED_MEMORY", "1") == "0":
        return _done
    _done = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to do
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    return bool(ok)
