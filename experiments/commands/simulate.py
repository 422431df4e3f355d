"""``distopt simulate``: one run of a method x compressor on a workload in the in-process
simulator (DESIGN.md "Simulation CLI"). Writes DIR/history.csv, DIR/config.json, DIR/history.png."""
from __future__ import annotations

import re


def add_run_arguments(p) -> None:
    """Flags shared by ``simulate`` and ``train`` (every backend accepts them)."""
    p.add_argument("--workload", default="logreg", help="workload id or spec, e.g. logreg, quadratic:zeta=10 (see `distopt workloads`)")
    p.add_argument("--data", default=None, help="logreg data: a LIBSVM file or sklearn:breast_cancer (default: generated)")
    p.add_argument("--reg", type=float, default=None, help="logreg regulariser (default 0.1)")
    p.add_argument("--workers", type=int, default=10, help="number of workers n")
    p.add_argument("--method", default="ef21", help="method spec, e.g. ef21, ef21-w, econtrol:eta=0.1 (see `distopt methods`)")
    p.add_argument("--compressor", default="topk:ratio=0.01", help="uplink compressor spec (see `distopt compressors`)")
    p.add_argument("--lr", default=None, help="a number, or theory (1/(L + L_AM xi)), theory-qm (1/(L + L_QM xi)), theory-pl; "
                   "default: the workload's default_lr, else theory")
    p.add_argument("--rounds", type=int, default=None, help="default: the workload's default_rounds, else 100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--eval-every", type=int, default=1, help="evaluate and write the history every this many rounds")
    p.add_argument("--batch", type=int, default=None, help="samples per worker per round (stochastic gradients); default full")
    p.add_argument("--participation", type=float, default=1.0, help="probability a worker takes part in a round (EF21-PP)")
    p.add_argument("--down-compressor", default=None, help="compress the server's broadcast too (EF21-BC)")
    p.add_argument("--optimizer", default=None, help="server optimizer on the aggregated direction: sgd (the methods' rule), "
                   "momentum:beta=0.9, adam (default: the workload's default_optimizer, else sgd)")
    p.add_argument("--target", type=float, default=None, help="stop once ||grad f||^2 <= target")
    p.add_argument("--out", default=None, help="output folder (default runs/<workload>-<method>-<compressor>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(p) -> None:
    add_run_arguments(p)


def lr_value(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def default_out(args) -> str:
    slug = "-".join(re.sub(r"[^A-Za-z0-9.=]+", "_", s) for s in (args.workload, args.method, args.compressor))
    return f"runs/{slug}"


def build_workload(args):
    import dataclasses

    from experiments.workloads import make

    ctx = {k: v for k, v in (("data", args.data), ("reg", args.reg)) if v is not None}
    w = make(args.workload)
    fields = {f.name for f in dataclasses.fields(w)} if dataclasses.is_dataclass(w) else set()
    unknown = set(ctx) - fields
    if unknown:
        raise ValueError(f"workload {w.name!r} takes no {', '.join('--' + k for k in sorted(unknown))}")
    return dataclasses.replace(w, **ctx) if ctx else w


def build_oracle(args, workload=None):
    import torch

    from simulator.oracles import VmapOracle

    w = workload or build_workload(args)
    dtype = getattr(torch, args.dtype)
    if hasattr(w, "oracle"):
        return w.oracle(args.workers, dtype=dtype, batch=args.batch, seed=args.seed)
    if args.batch is not None:
        raise ValueError(f"workload {w.name!r} defines its own batches; drop --batch")
    return VmapOracle(w, args.workers, seed=args.seed, dtype=dtype)


def run_config(args, workload=None):
    from simulator.engine import RunConfig

    lr = lr_value(args.lr) if args.lr is not None else getattr(workload, "default_lr", None) or "theory"
    rounds = args.rounds if args.rounds is not None else getattr(workload, "default_rounds", None) or 100
    return RunConfig(method=args.method, compressor=args.compressor, lr=lr, rounds=rounds,
                     seed=args.seed, eval_every=args.eval_every, participation=args.participation,
                     down_compressor=args.down_compressor, target=args.target, progress=not args.no_progress,
                     optimizer=args.optimizer or getattr(workload, "default_optimizer", None) or "sgd")


def run(args) -> int:
    from experiments.report import format_table
    from simulator.engine import Simulation

    workload = build_workload(args)
    cfg = run_config(args, workload)  # validate flags before building data
    oracle = build_oracle(args, workload)
    out = args.out or default_out(args)
    sim = Simulation(oracle, cfg, out, extra_config={"workload": args.workload, "data": args.data, "batch": args.batch,
                                                    "backend": "sim", "command": "simulate"})
    print(f"{sim.method.spec} + {sim.method.compressor.spec}: n={oracle.n}, d={oracle.d}, lr={sim.lr:.6g} ({cfg.lr})")
    hist = sim.run()
    last = hist.last
    print(format_table([{k: last[k] for k in ("round", "loss", "grad_norm_sq", "bits_up", "bits_down") if k in last}]))
    print(f"status: {sim.status}; written: {out}/history.csv, config.json, history.png")
    return 0
