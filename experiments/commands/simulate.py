"""``distopt simulate``: one run of a method x compressor on a workload in the in-process
simulator (DESIGN.md "Simulation CLI"). Writes DIR/history.csv, DIR/config.json, DIR/history.png.

Stragglers and coded gradients (issue 5 part 4, specs/sgc.md):

    distopt simulate --workload logreg --workers 8 --method gd --compressor identity \
        --code m-sgc:B=1,W=2,lam=2 --stragglers gilbert-elliott:p=0.1,q=0.5 --rounds 100 --out DIR

trains T+1 models round-robin, each job's decoded gradient applied when it completes; the
history carries the simulated wall-clock (``time_s``), stragglers and wait-outs beside rounds
and bits. Without ``--code``, ``--delays``/``--stragglers`` drops the late workers' messages.
"""
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
                   "momentum:beta=0.9, adam (default: the workload's default_optimizer, else sgd). With a "
                   "sparsifier, adam favours dcgd over ef21: it gives EF21's stale entries full steps "
                   "(experiments/results/sequence.md)")
    p.add_argument("--target", type=float, default=None, help="stop once ||grad f||^2 <= target")
    p.add_argument("--out", default=None, help="output folder (default runs/<workload>-<method>-<compressor>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("stragglers and coded gradients (specs/sgc.md)")
    g.add_argument("--code", default=None, help="train with a gradient code: uncoded | gc:s=.. | sr-sgc:B=..,W=..,lam=.. | "
                   "m-sgc:B=..,W=..,lam=.. (T+1 models round-robin; --method gd, or dcgd with a linear compressor)")
    g.add_argument("--delays", "--stragglers", dest="delays", default=None,
                   help="straggler/delay model: gilbert-elliott:p=..,q=.. | bernoulli:p=.. | bursty:B=..,W=..,lam=..,p=..,q=.. "
                   "| shifted-exp | lognormal | lambda-like (simulated time; on Ray, real sleeps in the actors)")
    g.add_argument("--master", default=None, help="master rule: pattern (default for flagging models) | deadline:mu=1 "
                   "(default for delay models) | timeout:t=SECONDS | fastest:k=K")
    g.add_argument("--delay-scale", type=float, default=1.0, help="real seconds per second of the model (whole duration)")
    g.add_argument("--c", type=float, default=2.2, help="time model: seconds per unit of normalized load (Lambda fit: 2.2)")
    g.add_argument("--comm", type=float, default=0.0, help="time model: seconds per uploaded result vector")
    g.add_argument("--checkpoint-every", type=int, default=0, help="write DIR/checkpoint.pt every K rounds (atomic)")
    g.add_argument("--resume", default=None, help="continue the run checkpointed in this folder (same flags; --rounds may grow)")


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
                     optimizer=args.optimizer or getattr(workload, "default_optimizer", None) or "sgd",
                     code=args.code, delays=args.delays, master=args.master, delay_scale=args.delay_scale, c=args.c,
                     comm=args.comm, checkpoint_every=args.checkpoint_every)


def build_driver(args, workload, oracle, cfg, out, executor=None, backend: str = "sim"):
    """The run's driver: ``Simulation`` (method rounds) or ``CodedSimulation`` (``--code``);
    ``executor``: another backend's workers (default: in this process)."""
    from simulator.coded import CodedSimulation
    from simulator.engine import Simulation

    extra = {"workload": args.workload, "data": args.data, "batch": args.batch, "backend": backend,
             "command": getattr(args, "command", "simulate")}
    if cfg.code:
        if args.batch is not None:
            raise ValueError("--code computes full partial gradients over the code's data parts; drop --batch")
        parts = None
        if executor is None:
            from distopt.coding import make as make_code
            from simulator.parts import parts_for

            parts = parts_for(workload, oracle.n, make_code(cfg.code, n=oracle.n), dtype=oracle.dtype)
        return CodedSimulation(oracle, cfg, out, extra, parts=parts, executor=executor, resume=args.resume)
    return Simulation(oracle, cfg, out, extra, executor=executor, resume=args.resume)


def report(sim, out: str) -> None:
    from experiments.report import format_table

    last = sim.history.last
    cols = ("round", "loss", "grad_norm_sq", "bits_up", "bits_down", "jobs_decoded", "time_s", "wait_outs", "erased")
    print(format_table([{k: last[k] for k in cols if k in last}]))
    print(f"status: {sim.status}; written: {out}/history.csv, config.json, history.png")


def run(args) -> int:
    workload = build_workload(args)
    cfg = run_config(args, workload)  # validate flags before building data
    oracle = build_oracle(args, workload)
    out = args.out or default_out(args)
    sim = build_driver(args, workload, oracle, cfg, out)
    code = f", code {sim.config['code']} ({sim.M} models)" if cfg.code else ""
    print(f"{sim.method.spec} + {sim.method.compressor.spec}: n={oracle.n}, d={oracle.d}, lr={sim.lr:.6g} ({cfg.lr}){code}")
    sim.run()
    report(sim, out)
    return 0
