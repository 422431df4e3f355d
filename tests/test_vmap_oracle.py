"""The generic path: any pure workload, gradients vmapped over workers, local parameters kept
on their workers and never sent."""
import dataclasses
from typing import ClassVar

import torch

from simulator.engine import RunConfig, Simulation
from simulator.oracles import VmapOracle


@dataclasses.dataclass(frozen=True)
class TinyRegression:
    """y = W2 tanh(W1 x) + per-worker bias (local), data drawn per worker from its seed."""

    name: ClassVar[str] = "tiny"
    paper: ClassVar[str] = "test fixture"
    local_params: ClassVar[tuple] = ("bias",)
    default_lr: ClassVar[float] = 0.1

    def init_params(self, seed):
        g = torch.Generator().manual_seed(seed)
        return {"w1": 0.5 * torch.randn(8, 3, generator=g), "w2": 0.5 * torch.randn(1, 8, generator=g), "bias": torch.zeros(1)}

    def batch(self, worker, num_workers, step):
        g = torch.Generator().manual_seed(1000 * worker + step)
        x = torch.randn(16, 3, generator=g)
        y = torch.sin(x.sum(1, keepdim=True)) + 0.5 * worker  # worker-specific offset: the local bias learns it
        return x, y

    def loss(self, params, batch):
        x, y = (t.to(params["w1"].dtype) for t in batch)
        pred = torch.tanh(x @ params["w1"].T) @ params["w2"].T + params["bias"]
        return ((pred - y) ** 2).mean()

    def evaluate(self, params):
        return {"loss": float(sum(self.loss({**params, "bias": params["bias"][w]}, self.batch(w, 3, 10**6)) for w in range(3)) / 3)}


def test_vmap_matches_per_worker_autograd_and_locals_stay_local():
    w = TinyRegression()
    o = VmapOracle(w, 3, seed=0, dtype=torch.float64)
    assert o.d == 8 * 3 + 8, "local parameters are not part of the communicated vector"
    x = o.x0()
    before = o.local["bias"].clone()
    g = o.grads(x, 5, torch.arange(3))
    for i in range(3):
        p = {k: v.detach().clone().requires_grad_(True) for k, v in o.spec.unflatten(x).items()}
        xb, yb = w.batch(i, 3, 5)
        loss = w.loss({**p, "bias": before[i]}, (xb.double(), yb.double()))
        ref = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, [p["w1"], p["w2"]])])
        assert torch.allclose(g[i], ref, atol=1e-12)
    assert not torch.equal(o.local["bias"], before), "a gradient step moves the local parameters"


def test_trains_through_the_simulator():
    o = VmapOracle(TinyRegression(), 3, seed=0, dtype=torch.float64)
    h = Simulation(o, RunConfig(method="ef21", compressor="topk:ratio=0.3", lr=0.1, rounds=150, progress=False)).run()
    assert h.last["loss"] < 0.5 * h.rows[0]["loss"]
    assert float(o.local["bias"][2] - o.local["bias"][0]) > 0.5  # learned the worker offsets locally


def test_server_optimizers_apply_to_the_direction():
    o = VmapOracle(TinyRegression(), 3, seed=0, dtype=torch.float64)
    h = Simulation(o, RunConfig(method="ef21", compressor="topk:ratio=0.3", lr=0.02, rounds=100, progress=False,
                                optimizer="adam")).run()
    assert h.last["loss"] < 0.5 * h.rows[0]["loss"]
    import pytest

    with pytest.raises(ValueError, match="model units"):
        Simulation(o, RunConfig(method="ef14", compressor="topk:k=2", lr=0.02, rounds=3, optimizer="adam", progress=False))
    with pytest.raises(ValueError, match="unknown optimizer"):
        Simulation(o, RunConfig(method="ef21", compressor="topk:k=2", lr=0.02, rounds=3, optimizer="adamw", progress=False))


def test_param_spec_round_trips_zero_dim_parameters():
    from distopt.workload import ParamSpec

    params = {"scale": torch.tensor(2.0), "w": torch.arange(6.0).reshape(2, 3)}
    spec = ParamSpec(params)
    x = spec.flatten(params)
    back = spec.unflatten(x)
    assert back["scale"].shape == () and float(back["scale"]) == 2.0
    assert torch.equal(back["w"], params["w"])
    stacked = spec.unflatten(torch.stack([x, 2 * x]))
    assert stacked["scale"].tolist() == [2.0, 4.0] and stacked["w"].shape == (2, 2, 3)
