"""Timing helpers for benchmarks.

Wall times on a shared machine are noisy and only ever too long, so a benchmark that compares
two things runs them interleaved -- every round times each candidate once, back to back, so
background load and cache state hit baseline and candidate alike -- and reports the minimum
over the rounds (the median alongside, as a check).

Each comparison starts from a trimmed C heap (:func:`release_free_memory`), so it does not
inherit free memory that earlier benchmarks left at the top of the heap: a 40 MB ``x.clone()``
then costs what it costs in steady state -- fresh pages from mmap, page faults included
(~10 ms here) -- rather than ~1.5 ms on pages some earlier row happened to leave free, which
made a ratio against ``clone`` depend on the order of the rows.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from typing import Callable

try:
    _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


def release_free_memory() -> None:
    """Give the C heap's free memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def median_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times in seconds of each of ``fns`` over ``rounds`` rounds; a round calls every
    function once, in order. Starts from a trimmed heap; ``warmup`` untimed rounds first."""
    release_free_memory()
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def rounds_for(fn: Callable[[], object], budget_s: float, most: int, least: int = 3) -> int:
    """How many rounds of ``fn`` fit in ``budget_s`` (between ``least`` and ``most``), from one
    timed call (which also warms it up)."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return max(least, min(most, int(budget_s / max(dt, 1e-9))))
