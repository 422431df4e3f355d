"""``distopt train --backend sim|ray-train``: the same study on the in-process simulator or on
real processes (Ray Train workers running DDP with our comm hook). Accepts every flag of
``distopt simulate`` and writes the same outputs."""
from __future__ import annotations

from experiments.commands.simulate import add_run_arguments

BACKENDS = ("sim", "ray-train")


def add_arguments(p) -> None:
    add_run_arguments(p)
    p.add_argument("--backend", choices=BACKENDS, default="sim",
                   help="sim: in-process simulator; ray-train: Ray Train TorchTrainer + DDP with our hook")
    p.add_argument("--address", default=None, help="Ray cluster address (host:6379); default: start a local Ray")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--granularity", choices=["flat", "layerwise"], default="flat", help="DDP backends: per bucket or per parameter")


def run(args) -> int:
    if args.backend == "sim":
        from experiments.commands import simulate

        return simulate.run(args)
    import argparse

    from experiments.ray_train import fit

    if args.participation < 1 or args.down_compressor or args.batch is not None:
        raise ValueError("--participation, --down-compressor and --batch are simulator options; use --backend sim")
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
