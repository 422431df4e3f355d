"""``distopt bench simulator``: rounds per second of the vectorized engine against a per-worker
Python loop over the same math (how FL_PyTorch, Flower and FedML simulate clients), side by
side in one process; one round's time against the memory floor; and a 10,000-worker run.

Problem: EF21 + Top-K (ratio 0.01) on f_i(x) = 1/2 ||x - c_i||^2, n = 1000 workers,
d = 10^4, float32 -- a gradient oracle that costs one pass, so the rounds measure the
communication method, not the model.

Memory floor: a round must at least read each worker's data c_i and its EF21 state g_i
(2 n d float32 values); at copy bandwidth (measured here: a clone of an [n, d] tensor moves
2 n d values) that takes one copy's time. Both a fresh-buffer copy (``clone``, what an
out-of-place round pays on this VM's page faults) and a warm ``copy_`` are reported.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from experiments.bench.timing import median_time
from experiments.report import atomic_write_json, format_table
from simulator.engine import RunConfig, Simulation
from simulator.oracles import QuadraticOracle


def _oracle(n: int, d: int, seed: int = 0) -> QuadraticOracle:
    g = torch.Generator().manual_seed(seed)
    return QuadraticOracle(torch.randn(n, d, generator=g, dtype=torch.float32))


def _rounds_per_s(oracle, workers: str, rounds: int, warmup: int = 2) -> float:
    cfg = dict(method="ef21", compressor="topk:ratio=0.01", lr=0.5, progress=False, eval_every=10**9)
    Simulation(oracle, RunConfig(rounds=warmup, workers=workers, **cfg)).run()
    t0 = time.perf_counter()
    Simulation(oracle, RunConfig(rounds=rounds, workers=workers, **cfg)).run()
    return rounds / (time.perf_counter() - t0)


def main(d: int | None = None, repeat: int | None = None, out: str | None = None, n: int = 1000) -> int:
    from distopt._alloc import keep_freed_memory

    keep_freed_memory()  # both engines run under the same allocator setting
    d = d or 10_000
    rounds = repeat or 20
    oracle = _oracle(n, d)
    print(f"EF21 + topk:ratio=0.01, n = {n} workers, d = {d:,}, float32, {torch.get_num_threads()} threads")
    vec = _rounds_per_s(oracle, "vectorized", rounds)
    loop = _rounds_per_s(oracle, "loop", max(3, rounds // 5), warmup=1)
    state = torch.randn(n, d)
    t_clone = median_time(lambda: state.clone(), 5)
    buf = torch.empty_like(state)
    t_copy = median_time(lambda: buf.copy_(state), 5)
    t_round = 1.0 / vec
    rows = [
        {"engine": "vectorized (ours)", "rounds/s": vec, "ms/round": 1e3 * t_round},
        {"engine": "per-worker Python loop", "rounds/s": loop, "ms/round": 1e3 / loop},
    ]
    print(format_table(rows))
    speedup = vec / loop
    print(f"\nspeedup vectorized / loop: {speedup:.1f}x (target >= 30x)")
    print(f"memory floor (read c and g once = one copy of [n, d]): clone {1e3 * t_clone:.2f} ms, warm copy_ "
          f"{1e3 * t_copy:.2f} ms; round / floor = {t_round / t_clone:.2f}x (clone), {t_round / t_copy:.2f}x (warm copy_) "
          "(target within 5x)")
    # the 10,000-worker run
    big = _oracle(10_000, 1000, seed=1)
    t0 = time.perf_counter()
    hist = Simulation(big, RunConfig(method="ef21", compressor="topk:ratio=0.01", lr=0.5, rounds=10, eval_every=10,
                                     progress=False)).run()
    t_big = time.perf_counter() - t0
    ok = hist.last["round"] == 10
    print(f"10,000 workers x d = 1000: 10 rounds in {t_big:.2f} s ({10 / t_big:.1f} rounds/s), finished: {ok}, "
          f"final ||grad||^2 {hist.last['grad_norm_sq']:.3g}")
    if out:
        atomic_write_json(Path(out) / "bench_simulator.json", {
            "n": n, "d": d, "rows": rows, "speedup": speedup, "clone_ms": 1e3 * t_clone, "copy_ms": 1e3 * t_copy,
            "round_over_floor_clone": t_round / t_clone, "round_over_floor_copy": t_round / t_copy,
            "big_run_s": t_big, "big_run_finished": ok})
    return 0
