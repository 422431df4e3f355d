"""Process bodies for the DDP tests (gloo, world size 2): top-level functions so that
``torch.multiprocessing`` can start them."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def finish() -> None:
    """End a rank: wait for the other, tear the group down, and exit without running the
    destructors of this rank's DDP objects. Rarely (once in a full CI run) the last Reducer's
    destructor joined a gloo worker thread forever after the other rank had exited, and the test
    hung; the results are already on disk, so nothing is lost by skipping them."""
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


class LogReg(nn.Module):
    """The logreg workload's loss as a module with one parameter x (float64)."""

    def __init__(self, d: int, reg: float):
        super().__init__()
        self.x = nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.reg = reg

    def forward(self, A, b):
        x = self.x
        return torch.nn.functional.softplus(-b * (A @ x)).mean() + self.reg * (x * x / (1 + x * x)).sum()


def mlp(seed: int, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)  # test fixture weights only; the methods draw from Noise
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def mlp_batch(rank: int, step: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(100 * rank + step)
    x = torch.randn(12, 6, generator=g, dtype=dtype)
    return x, torch.sin(x[:, :3]) + 0.5 * x[:, 3:]  # a learnable target


def _train_mlp(state, steps: int, dtype=torch.float64, start_sd=None, save_at=None, path=None):
    import distopt.ddp as D

    rank = dist.get_rank()
    model = mlp(0, dtype)
    ddp = DDP(model)
    if state is not None:
        ddp.register_comm_hook(state, D.comm_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    first = 0
    if start_sd is not None:  # every rank resumes from its own checkpoint: worker state is local
        ck = torch.load(f"{start_sd}.{rank}", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state.load_state_dict(ck["comm"])
        first = ck["step"]
    losses = []
    for t in range(first, steps):
        x, y = mlp_batch(rank, t, dtype)
        loss = ((ddp(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if save_at is not None and t + 1 == save_at:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "comm": state.state_dict(), "step": t + 1},
                       f"{path}.{rank}")
        if save_at is not None and t + 1 == save_at:
            dist.barrier()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), losses


def run_identity_vs_default(rank, world, port, out):
    setup(rank, world, port)
    from distopt.ddp import CommState

    ours, _ = _train_mlp(CommState(method="gd", compressor="identity"), 6)
    ref, _ = _train_mlp(None, 6)
    if rank == 0:
        torch.save({"ours": ours, "ref": ref}, out)
    finish()


def _ef21_logreg(data, rank, **ddp_options):
    """EF21 + Top-k on this rank's logreg shard through DDP: the iterates [steps + 1, d], the state."""
    import distopt.ddp as D
    from distopt.ddp import CommState

    A, b = data["shards"][rank]
    model = LogReg(A.shape[1], data["reg"])
    ddp = DDP(model, **ddp_options)
    state = CommState(method="ef21", compressor=f"topk:k={data['k']}", seed=3)
    ddp.register_comm_hook(state, D.comm_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=data["lr"])
    xs = [model.x.detach().clone()]
    for _ in range(data["steps"]):
        opt.zero_grad()
        ddp(A, b).backward()
        opt.step()
        xs.append(model.x.detach().clone())
    return torch.stack(xs), state


def run_ef21_parity_and_resume(rank, world, port, out, data):
    setup(rank, world, port)
    from distopt.ddp import CommState

    xs, state = _ef21_logreg(data, rank)
    result = {"xs": xs, "bits": state.bits_sent, "bits_last": state.bits_last_step}
    # DDP keeps its first bucket buffers (no rebuild after step 0) with find_unused_parameters
    result["xs_unused"], _ = _ef21_logreg(data, rank, find_unused_parameters=True)
    result["xs_view"], _ = _ef21_logreg(data, rank, gradient_as_bucket_view=True)  # grads live in the buckets
    result["xs_static"], _ = _ef21_logreg(data, rank, static_graph=True)
    # resume: an EControl + Rand-K run (random draws, three state tensors), stopped and restarted
    ck = out + ".ck"
    full, _ = _train_mlp(CommState(method="econtrol:eta=0.2", compressor="randk:ratio=0.3"), 10)
    _train_mlp(CommState(method="econtrol:eta=0.2", compressor="randk:ratio=0.3"), 5, save_at=5, path=ck)
    dist.barrier()
    resumed, _ = _train_mlp(CommState(method="econtrol:eta=0.2", compressor="randk:ratio=0.3"), 10, start_sd=ck)
    result.update(full=full, resumed=resumed)
    # flat vs layerwise, and bfloat16 gradients
    flat, lf = _train_mlp(CommState(method="ef21", compressor="topk:ratio=0.2", granularity="flat"), 25)
    layer, ll = _train_mlp(CommState(method="ef21", compressor="topk:ratio=0.2", granularity="layerwise"), 25)
    _, lb = _train_mlp(CommState(method="ef21", compressor="topk:ratio=0.2"), 5, dtype=torch.bfloat16)
    result.update(flat=flat, layer=layer, loss_flat=lf, loss_layer=ll, loss_bf16=lb)
    if rank == 0:
        torch.save(result, out)
    finish()


def run_workload_ddp(rank, world, port, out, workload, rounds):
    """experiments.ddp_train's loop for one zoo workload, 2 gloo ranks, EF21 + Top-K."""
    import argparse

    setup(rank, world, port)
    from experiments.ddp_train import train

    args = argparse.Namespace(workload=workload, method="ef21", compressor="topk:ratio=0.1", lr=None, optimizer=None,
                              rounds=rounds, seed=0, dtype="float32", granularity="flat", eval_every=1, backend="gloo",
                              out=out)
    train(args, rank, world)
    finish()


def run_donated_bucket(rank, world, port, out):
    """EF21 / EControl + Top-K on one bucket long enough for the native kernel (the hook donates
    its state: k entries updated in place): the same parameters, to the bit, as the torch path
    (DISTOPT_NATIVE=0), and a state_dict taken mid-run that does not change afterwards."""
    setup(rank, world, port)
    import distopt.ddp as D
    from distopt.ddp import CommState

    def run(method, native):
        os.environ["DISTOPT_NATIVE"] = "1" if native else "0"
        torch.manual_seed(0)
        model = nn.Linear(256, 300).double()  # 77,100 parameters: one bucket, a long row
        ddp = DDP(model, bucket_cap_mb=100)
        state = CommState(method=method, compressor="topk:ratio=0.01", seed=1)
        ddp.register_comm_hook(state, D.comm_hook)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
        kept = None
        for t in range(6):
            g = torch.Generator().manual_seed(10 * rank + t)
            x = torch.randn(16, 256, generator=g, dtype=torch.float64)
            opt.zero_grad()
            (ddp(x) ** 2).mean().backward()
            opt.step()
            if t == 2:
                kept = state.state_dict()
                frozen = {k: [v.clone() for v in vs] for k, vs in kept["worker"].items()}
        unchanged = all(torch.equal(a, b) for k in frozen for a, b in zip(kept["worker"][k], frozen[k]))
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), unchanged

    result = {}
    for method in ("ef21", "econtrol:eta=0.2"):
        (a, ua), (b, _) = run(method, True), run(method, False)
        result[method] = (torch.equal(a, b), ua)
    os.environ.pop("DISTOPT_NATIVE")
    if rank == 0:
        torch.save(result, out)
    finish()
