"""``distopt demo``: the main job. Five methods on one heterogeneous problem with 100 workers
(nonconvex logistic regression, 5 of 100 clients with features x10, Top-1): EF21 at its
original theory stepsize 1/(L + L_QM xi), EF21-W at 1/(L + L_AM xi), EControl, EF14 and naive
compressed GD (DCGD) at that same stepsize. Prints final ||grad f||^2 and rounds/bits to a
target; writes each run's history and one comparison plot."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--workers", type=int, default=100)
    p.add_argument("--rounds", type=int, default=6000)
    p.add_argument("--target", type=float, default=1e-4, help="||grad f||^2 target for rounds/bits to target")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import math
    import time
    from pathlib import Path

    from experiments.reproduce.common import rounds_and_bits
    from experiments.report import format_table
    from experiments.workloads import make
    from simulator.engine import RunConfig, Simulation
    from simulator.history import plot_runs

    out = Path(args.out)
    oracle = make("logreg:rows=2000,features=30,scale=10,scaled_frac=0.05,reg=0.1").oracle(args.workers)
    t0 = time.perf_counter()
    w_lr = Simulation(oracle, RunConfig(method="ef21-w", compressor="topk:k=1", lr="theory")).lr
    runs = [
        ("EF21 (lr 1/(L+L_QM xi))", "ef21", "theory-qm"),
        ("EF21-W (lr 1/(L+L_AM xi))", "ef21-w", "theory"),
        ("EControl eta=0.1", "econtrol:eta=0.1", w_lr),
        ("EF14", "ef14", w_lr),
        ("DCGD (no error feedback)", "dcgd", w_lr),
    ]
    print(f"logistic regression, n={oracle.n} workers, d={oracle.d}, Top-1; L={oracle.L:.3g}, "
          f"L_AM={sum(oracle.smoothness) / oracle.n:.3g}, L_QM={(sum(v * v for v in oracle.smoothness) / oracle.n) ** 0.5:.3g}")
    rows, curves = [], {}
    for label, method, lr in runs:
        slug = method.split(":")[0]
        cfg = RunConfig(method=method, compressor="topk:k=1", lr=lr, rounds=args.rounds, eval_every=10,
                        on_nonfinite="stop", progress=not args.no_progress)
        sim = Simulation(oracle, cfg, out / slug, extra_config={"workload": "logreg (demo)", "command": "demo"})
        hist = sim.run()
        r, b = rounds_and_bits(hist, args.target)
        rows.append({"method": label, "lr": sim.lr, "final ||grad f||^2": hist.last["grad_norm_sq"],
                     f"rounds to {args.target:g}": r, "bits/worker to target": b, "status": sim.status.split(":")[0]})
        curves[label] = hist.rows
    fig = plot_runs(curves, out / "demo.png", metrics=("grad_norm_sq",),
                    title=f"n={oracle.n}, heterogeneous L_i, Top-1: ||grad f||^2 against rounds and bits")
    print(format_table(rows))
    best = min(rows, key=lambda r: r[f"rounds to {args.target:g}"])
    if math.isfinite(best[f"rounds to {args.target:g}"]):
        print(f"\nfastest to the target: {best['method']}")
    print(f"{time.perf_counter() - t0:.1f} s; written: {fig} and one history per method under {out}/")
    return 0
