"""``distopt bench ray``: per-round driver overhead of the Ray runtime against a bare ``ray.get``
round trip, both on the same local Ray in the same run (target: at most 2x).

Ours: one method round of ``distopt train --backend ray`` -- EF21 + Top-K (1%) on a quadratic
with d = 1000, 8 actors: ``ray.put(x)``, 8 actor calls carrying the commit word, replies with
``ray.wait``, decoding the 8 payloads, aggregation, server step, optimizer (and, every 10
rounds, the pull of the workers' states for fault recovery). Measured as the history's
``time_s`` per round (evaluation excluded).

Baseline: the least any driver must do per round -- ``ray.put(x)`` then ``ray.get`` of 8
actor calls that each return a payload of the same size (K values and K int16 indices), no
computation. Blocks of rounds alternate between the two, so background load hits both alike;
the per-round median over blocks is reported, with the minimum as a check.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from experiments.report import atomic_write_json, format_table


def _echo_class():
    import ray

    @ray.remote
    class Echo:
        """The bare round trip's actor: returns a Top-K-sized payload, computes nothing."""

        def __init__(self, k: int):
            self.k = k

        def step(self, x):
            return x[: self.k].clone(), torch.arange(self.k, dtype=torch.int16)

    return Echo


def main(d: int | None = None, repeat: int | None = None, out: str | None = None, n: int = 8,
         cpus: float = 0.125) -> int:
    import ray

    from experiments.workloads import make
    from simulator.engine import RunConfig, Simulation, build_method, resolve_lr
    from workers.cluster import connect
    from workers.executor import RayExecutor
    from workers.runtime import WorkerSpec

    d = d or 1000
    blocks = repeat or 8
    per_block = 25
    torch.set_num_threads(1)
    started = not ray.is_initialized()
    connect(None, need_cpus=2 * n * cpus)
    w = make(f"quadratic:dim={d}")
    o = w.oracle(n)
    cfg = RunConfig(method="ef21", compressor="topk:ratio=0.01", lr=0.5, rounds=per_block, eval_every=10**9,
                    progress=False)
    method = build_method(cfg, o)
    ex = RayExecutor(WorkerSpec(w, n, method, resolve_lr(cfg, method, o)), o.d, cpus=cpus)
    k = method.compressor.k_for(d)
    echoes = [_echo_class().options(num_cpus=cpus).remote(k) for _ in range(n)]
    ray.get([e.step.remote(torch.zeros(d)) for e in echoes])
    x = torch.randn(d, dtype=torch.float64)

    def bare() -> float:
        t0 = time.perf_counter()
        for _ in range(per_block):
            ref = ray.put(x)
            ray.get([e.step.remote(ref) for e in echoes])
        return (time.perf_counter() - t0) / per_block

    def ours() -> float:
        hist = Simulation(o, cfg, executor=ex).run()
        return hist.last["time_s"] / per_block

    print(f"Ray runtime overhead: EF21 + topk:ratio=0.01 (K={k}), d = {d}, {n} actors at {cpus} CPU, "
          f"{blocks} blocks x {per_block} rounds, interleaved")
    bare(), ours()  # warm-up: workers, caches, object store
    t_ours, t_bare = [], []
    for _ in range(blocks):
        t_ours.append(ours())
        t_bare.append(bare())
    ex.close()
    for e in echoes:
        ray.kill(e)
    if started:
        ray.shutdown()
    med_o, med_b = statistics.median(t_ours), statistics.median(t_bare)
    rows = [
        {"round": "bare ray.put + ray.get (baseline)", "ms/round (median)": 1e3 * med_b, "ms/round (min)": 1e3 * min(t_bare)},
        {"round": "distopt driver (ours)", "ms/round (median)": 1e3 * med_o, "ms/round (min)": 1e3 * min(t_ours)},
    ]
    print(format_table(rows))
    ratio, ratio_min = med_o / med_b, min(t_ours) / min(t_bare)
    print(f"\noverhead ratio ours / bare: {ratio:.2f}x (medians), {ratio_min:.2f}x (minima); target <= 2x")
    if out:
        atomic_write_json(Path(out) / "bench_ray.json", {"n": n, "d": d, "k": k, "blocks": blocks, "per_block": per_block,
                                                         "ours_ms": [1e3 * t for t in t_ours],
                                                         "bare_ms": [1e3 * t for t in t_bare], "ratio_median": ratio,
                                                         "ratio_min": ratio_min})
    return 0
