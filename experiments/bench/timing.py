"""Timing helpers for benchmarks.

Wall times on a shared machine are noisy and only ever too long, so a benchmark that compares
two things runs them interleaved -- every round times each candidate once, back to back, so
background load and cache state hit baseline and candidate alike -- and reports the minimum
over the rounds (the median alongside, as a check).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable


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
    function once, in order. ``warmup`` untimed rounds first."""
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
