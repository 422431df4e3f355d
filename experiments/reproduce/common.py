"""Helpers the EF-family reproductions share: run a config, read rounds/bits to a target."""
from __future__ import annotations

import math
from typing import Optional

from simulator.engine import RunConfig, Simulation
from simulator.history import History


def run_sim(oracle, keep_iterates: bool = False, **cfg) -> Simulation:
    """A finished Simulation of ``RunConfig(**cfg)`` (no progress bar, divergence recorded)."""
    cfg.setdefault("progress", False)
    cfg.setdefault("on_nonfinite", "stop")
    sim = Simulation(oracle, RunConfig(**cfg), keep_iterates=keep_iterates)
    sim.run()
    return sim


def first_reaching(hist: History, target: float, key: str = "grad_norm_sq") -> Optional[dict]:
    """The first history row whose ``key`` is <= target (None if never)."""
    for r in hist.rows:
        v = r.get(key, math.nan)
        if v == v and v <= target:
            return r
    return None


def rounds_and_bits(hist: History, target: float, key: str = "grad_norm_sq") -> tuple[float, float]:
    """(rounds, uplink bits per worker) to reach ``key <= target``; (inf, inf) if never."""
    r = first_reaching(hist, target, key)
    return (float(r["round"]), float(r["bits_up"])) if r else (math.inf, math.inf)


def fmt(v: float) -> str:
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    return f"{v:.4g}"
