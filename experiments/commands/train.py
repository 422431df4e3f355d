"""``distopt train --backend sim|ray|ray-train``: the same study on the in-process simulator,
on real processes on a Ray cluster (one actor per worker, our driver), or in Ray Train
(TorchTrainer + DDP with our hook). Accepts every flag of ``distopt simulate`` and writes the
same outputs (history.csv, config.json, history.png).

    distopt train --backend ray --workers 8 --cpus-per-worker 0.25 --method ef21 \\
        --compressor topk:ratio=0.1 --rounds 200 --out DIR                       # local Ray
    distopt train --backend ray --address HEAD:6379 ...                          # a cluster
    distopt train --backend ray --code m-sgc:B=1,W=2,lam=2 --method gd --compressor identity \\
        --delays gilbert-elliott:p=0.1,q=0.5 --delay-scale 0.2 ...               # a straggler study

Cluster: ``ray start --head`` on one node, ``ray start --address=HEAD:6379`` on the others,
distopt installed on every node. ``--backend sim`` runs the identical study in one process
(simulated clock, same delay sample).
"""
from __future__ import annotations

from experiments.commands.simulate import add_run_arguments

BACKENDS = ("sim", "ray", "ray-train")


def add_arguments(p) -> None:
    add_run_arguments(p)
    p.add_argument("--backend", choices=BACKENDS, default="sim",
                   help="sim: in-process simulator; ray: one Ray actor per worker, our driver (stragglers, codes, "
                   "faults); ray-train: Ray Train TorchTrainer + DDP with our hook")
    p.add_argument("--address", default=None, help="Ray cluster address (host:6379); default: start a local Ray")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="GPUs reserved per worker (ray: reserved for the actor; the built-in oracles compute on CPU)")
    p.add_argument("--granularity", choices=["flat", "layerwise"], default="flat", help="DDP backends: per bucket or per parameter")
    p.add_argument("--snapshot-every", type=int, default=None,
                   help="ray: pull the workers' states every K rounds for fault recovery (default: --checkpoint-every, else 10)")
    p.add_argument("--inject-fault", action="append", default=[], metavar="ROUND:WORKER",
                   help="ray: kill that worker's actor right after dispatching that round (a fault drill; repeatable)")


def _faults(specs: list[str]) -> list[tuple[int, int]]:
    out = []
    for s in specs:
        r, sep, w = s.partition(":")
        if not sep or not r.strip().isdigit() or not w.strip().isdigit():
            raise ValueError(f"--inject-fault {s!r}: write ROUND:WORKER, e.g. --inject-fault 5:2")
        out.append((int(r), int(w)))
    return out


def run(args) -> int:
    if args.backend == "sim":
        from experiments.commands import simulate

        return simulate.run(args)
    if args.backend == "ray":
        return _run_ray(args)
    return _run_ray_train(args)


def _run_ray(args) -> int:
    from experiments.commands import simulate as S

    faults = _faults(args.inject_fault)
    workload = S.build_workload(args)
    cfg = S.run_config(args, workload)
    oracle = S.build_oracle(args, workload)  # the driver's: x^0, evaluation, smoothness
    _precheck(cfg, oracle, args)
    out = args.out or S.default_out(args)
    import ray

    from workers.cluster import connect
    from workers.executor import RayExecutor
    from workers.runtime import WorkerSpec

    started = not ray.is_initialized()
    connect(args.address, need_cpus=args.workers * args.cpus_per_worker, need_gpus=args.workers * args.gpus_per_worker)
    every = args.snapshot_every or args.checkpoint_every or 10

    def executor(method, lr):
        spec = WorkerSpec(workload, args.workers, method, lr, args.seed, oracle.dtype, args.batch, cfg.code)
        return RayExecutor(spec, oracle.d, args.cpus_per_worker, args.gpus_per_worker, every, faults)

    sim = None
    try:
        sim = S.build_driver(args, workload, oracle, cfg, out, executor=executor, backend="ray")
        sim.config.update({"address": args.address or "local", "cpus_per_worker": args.cpus_per_worker,
                           "gpus_per_worker": args.gpus_per_worker, "snapshot_every": every, "faults": faults})
        code = f", code {sim.config['code']} ({sim.M} models)" if cfg.code else ""
        print(f"Ray ({args.workers} actors, {args.address or 'local'}): {sim.method.spec} + "
              f"{sim.method.compressor.spec}, d={oracle.d}, lr={sim.lr:.6g}{code}")
        sim.run()
    finally:
        if sim is not None:
            sim.executor.close()
        if started:
            ray.shutdown()
    S.report(sim, out)
    return 0


def _precheck(cfg, oracle, args) -> None:
    """Fail on a bad method, stepsize or code before any Ray process starts."""
    from simulator.engine import build_method, resolve_lr

    method = build_method(cfg, oracle)
    resolve_lr(cfg, method, oracle)
    if cfg.code:
        from distopt.coding import make as make_code
        from simulator.coded import check_linear

        check_linear(method)
        make_code(cfg.code, n=oracle.n)
    if args.resume:
        from simulator.driver import load_checkpoint

        load_checkpoint(args.resume)


def _run_ray_train(args) -> int:
    import argparse

    from experiments.ray_train import fit

    if args.participation < 1 or args.down_compressor or args.batch is not None or args.code or args.delays:
        raise ValueError("--participation, --down-compressor, --batch, --code and --delays are not available in Ray "
                         "Train (DDP); use --backend ray or --backend sim")
    out = args.out or "runs/ray-train"
    ddp_args = argparse.Namespace(workload=args.workload, method=args.method, compressor=args.compressor, lr=args.lr,
                                  optimizer=args.optimizer, rounds=args.rounds or 100, seed=args.seed, dtype=args.dtype,
                                  granularity=args.granularity, eval_every=args.eval_every, backend="gloo", out=out)
    if args.data or args.reg is not None:
        extra = ",".join(f"{k}={v}" for k, v in (("data", args.data), ("reg", args.reg)) if v is not None)
        ddp_args.workload = f"{args.workload},{extra}" if ":" in args.workload else f"{args.workload}:{extra}"
    fit(ddp_args, args.workers, args.address, args.cpus_per_worker, args.gpus_per_worker)
    from experiments.report import format_table
    from simulator.history import History

    rows = History.read(out)
    print(format_table([{k: rows[-1][k] for k in ("round", "loss", "bits_up", "wall_s")}]))
    print(f"Ray Train ({args.workers} workers, DDP + {args.method} + {args.compressor}) finished; "
          f"written: {out}/history.csv, config.json")
    return 0
