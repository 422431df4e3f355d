"""Train any registered workload in real DistributedDataParallel with a distopt comm hook.

    torchrun --nproc_per_node=2 -m experiments.ddp_train --workload logreg --method ef21 \\
        --compressor topk:ratio=0.1 --rounds 100 --out runs/ddp

Rank r trains on ``workload.batch(r, world, step)``; the hook runs the method; the optimizer
(``--optimizer sgd|momentum|adam``) applies the returned direction, as in the simulator.
Worker-local parameters (``workload.local_params``) live outside the DDP module: each rank
steps its own copy, nothing of them is communicated. Rank 0 writes ``history.csv`` (loss
averaged over ranks, bits per worker, wall time) and ``config.json``, atomically.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


class WorkloadModule(nn.Module):
    """A workload's communicated parameters as an nn.Module whose forward is its pure loss."""

    def __init__(self, workload, params: dict, dtype: torch.dtype):
        super().__init__()
        self.workload = workload
        self.names = list(params)
        self.p = nn.ParameterList([nn.Parameter(params[k].to(dtype) if params[k].is_floating_point() else params[k])
                                   for k in self.names])

    def as_dict(self) -> dict:
        return dict(zip(self.names, self.p))

    def forward(self, batch, local: dict):
        return self.workload.loss({**self.as_dict(), **local}, batch)


def _cast(batch, dtype):
    return torch.utils._pytree.tree_map(
        lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, batch)


def _optimizer(spec: str, params, lr: float):
    from distopt import optim

    o = optim.make(spec)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if o.name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=o.beta, nesterov=o.nesterov)
    return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), eps=o.eps)


def resolve_lr(args, workload, world: int):
    """A number: --lr as given, the workload's default, or the theory rule via the simulator."""
    lr = args.lr if args.lr is not None else getattr(workload, "default_lr", None)
    try:
        return float(lr)
    except (TypeError, ValueError):
        pass
    from simulator.engine import RunConfig, Simulation

    oracle = workload.oracle(world, dtype=torch.float64)
    return Simulation(oracle, RunConfig(method=args.method, compressor=args.compressor, lr=lr or "theory")).lr


def train(args, rank: int, world: int, report=None, wrap=None) -> dict:
    """The training loop every launcher runs (torchrun, Ray Train): returns the final metrics.

    ``wrap``: turns the module into a DDP module (default ``DistributedDataParallel``; Ray
    Train passes ``ray.train.torch.prepare_model``). ``report(row)``: called on rank 0 with
    each logged row (Ray Train's ``ray.train.report``)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    import distopt.ddp as D
    from experiments.workloads import make
    from simulator.history import History, write_json

    dtype = getattr(torch, args.dtype)
    workload = make(args.workload)
    lr = resolve_lr(args, workload, world)
    params = workload.init_params(args.seed)
    local_names = tuple(getattr(workload, "local_params", ()) or ())
    local = {k: params.pop(k).to(dtype).requires_grad_(True) for k in local_names}
    local_lr = float(getattr(workload, "local_lr", None) or lr)
    module = WorkloadModule(workload, params, dtype)
    model = (wrap or DDP)(module)
    state = D.CommState(method=args.method, compressor=args.compressor, seed=args.seed, lr=lr,
                        granularity=args.granularity, model=module)
    model.register_comm_hook(state, D.comm_hook)
    opt = _optimizer(args.optimizer or getattr(workload, "default_optimizer", "sgd"), model.parameters(), lr)
    out = Path(args.out) if args.out and rank == 0 else None
    hist = History(out)
    config = {**vars(args), "lr": lr, "world_size": world, "backend": args.backend, "command": "ddp_train"}
    if out:
        write_json(out / "config.json", {**config, "status": "running"})
    t0 = time.perf_counter()
    row = {}
    for step in range(args.rounds):
        batch = _cast(workload.batch(rank, world, step), dtype)
        loss = model(batch, local)
        opt.zero_grad()
        for t in local.values():
            t.grad = None
        loss.backward()
        opt.step()
        with torch.no_grad():
            for t in local.values():  # worker-local parameters: a local step, nothing sent
                if t.grad is not None:
                    t -= local_lr * t.grad
        mean_loss = loss.detach().to(torch.float64).reshape(1)
        dist.all_reduce(mean_loss)
        row = {"round": step + 1, "loss": float(mean_loss) / world, "bits_up": state.bits_sent,
               "bits_last_step": state.bits_last_step, "wall_s": time.perf_counter() - t0}
        if (step + 1) % args.eval_every == 0 or step + 1 == args.rounds:
            if rank == 0:
                hist.log({**row, "grad_norm_sq": float("nan"), "bits_down": float("nan")})
            if report is not None:  # on every rank (Ray Train's report synchronises the workers)
                report(row)
    if out:
        hist.flush()
        write_json(out / "config.json", {**config, "status": "finished", "final": row})
    return row


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="train a workload in DDP with a distopt comm hook (launch with torchrun)")
    p.add_argument("--workload", default="logreg")
    p.add_argument("--method", default="ef21")
    p.add_argument("--compressor", default="topk:ratio=0.01")
    p.add_argument("--lr", default=None, help="a number, or theory (logreg/lstsq); default: the workload's")
    p.add_argument("--optimizer", default=None, help="sgd | momentum:beta=0.9 | adam (default: the workload's)")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64", "bfloat16"], default="float32")
    p.add_argument("--granularity", choices=["flat", "layerwise"], default="flat")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--backend", choices=["gloo", "nccl"], default=None, help="default: nccl with CUDA, else gloo")
    p.add_argument("--out", default="runs/ddp")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    args.backend = backend
    if "RANK" not in os.environ:
        print("launch with torchrun, e.g. torchrun --nproc_per_node=2 -m experiments.ddp_train ...", file=sys.stderr)
        return 2
    dist.init_process_group(backend)
    try:
        row = train(args, dist.get_rank(), dist.get_world_size())
        dist.barrier()  # tear the group down together (gloo: a rank whose peer has already
        # exited can wait forever in the process group's destructor; tests/ddp_procs.finish)
        if dist.get_rank() == 0:
            print(f"finished {args.rounds} steps: loss {row['loss']:.4g}, uplink bits per worker {row['bits_up']:,}")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
