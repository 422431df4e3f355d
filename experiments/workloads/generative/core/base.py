"""The family's denoiser training workload and the trained-once base models.

:class:`DenoiserTraining` is a Workload (init_params / loss / batch / evaluate) for eps- or
v-prediction (DDPM L_simple; Salimans & Ho 2022) on digits or a 2-D mixture, over a discrete
schedule or the continuous VP SDE (then the eps loss is denoising score matching with
lambda = sigma^2, score = -eps/sigma). DP: each worker holds a contiguous shard of the data;
its minibatch, noise and times are drawn from (seed, worker, step); gradients of the loss are
what the communication layer carries.

:class:`BaseSpec` pins one base model (a DenoiserTraining config plus rounds, lr, workers, seed)
and :func:`base_model` returns its parameters: trained *through the simulator* with ``gd`` +
``identity`` + Adam on the first call, cached (cache.py) for every later call and process.
The presets :data:`DIGITS` (eps-MLP, ~120k parameters, linear T = 200; the NoiseDiffusion /
DIRE / BDIA / RED-diff spec) and :data:`RING8` (eps-MLP 3x128 on the 8-Gaussian ring, VP SDE;
AdjointDPM's spec) are the shared ones.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, Literal, Optional

import torch
from torch import Tensor

from . import data as D
from .denoisers import mlp_apply, mlp_init, unet_apply, unet_init
from .losses import eps_loss, v_loss, v_to_eps
from .schedules import Discrete, VPSDE

__all__ = ["train", "fit", "DenoiserTraining", "BaseSpec", "Base", "base_model", "DIGITS", "RING8"]


@functools.lru_cache(maxsize=16)
def _dataset(data: str, n_points: int, data_seed: int, split: str) -> Tensor:
    if data == "digits":
        return D.digits(split)[0]
    return D.mixture(data, n_points, D.rng(data, data_seed, split))[0]


@dataclasses.dataclass(frozen=True)
class DenoiserTraining:
    data: Literal["digits", "ring8", "moons"] = "digits"
    arch: Literal["mlp", "unet"] = "mlp"
    hidden: int = 192          # mlp width
    depth: int = 3             # mlp hidden layers
    base: int = 16             # unet channels at full resolution
    schedule: str = "linear"   # linear | cosine | scaled_linear (discrete, optional +zsnr) | vp (continuous)
    T: int = 200
    beta_start: Optional[float] = None
    beta_end: Optional[float] = None
    objective: Literal["eps", "v"] = "eps"
    batch_size: int = 128
    n_points: int = 8192       # size of a generated 2-D data set
    data_seed: int = 0

    name: ClassVar[str] = "denoiser"
    paper: ClassVar[str] = "Denoising Diffusion Probabilistic Models (the family's base model)"
    primary_metric: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[float] = 1e-3
    default_rounds: ClassVar[int] = 2000
    default_optimizer: ClassVar[str] = "adam"

    def __post_init__(self):
        if self.arch == "unet" and self.data != "digits":
            raise ValueError("arch=unet is for 8x8 digits; use arch=mlp for 2-D data")
        if self.objective == "v" and self.schedule == "vp":
            raise ValueError("objective=v is for discrete schedules; use objective=eps with schedule=vp")
        self.sched  # validate the schedule spec now

    # -- schedule and data ---------------------------------------------------------------------
    @property
    def sched(self):
        if self.schedule == "vp":
            return VPSDE()
        kind, _, suffix = self.schedule.partition("+")
        return Discrete(kind, self.T, self.beta_start, self.beta_end, zero_snr=suffix == "zsnr")

    @property
    def dim(self) -> int:
        return 64 if self.data == "digits" else 2

    def dataset(self, split: str = "train") -> Tensor:
        """``[N, dim]`` float32: digits in [-1, 1], or a generated 2-D set (test: a fresh draw)."""
        return _dataset(self.data, self.n_points, self.data_seed, split)

    # -- model ------------------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        g = D.rng("denoiser-init", seed)
        if self.arch == "unet":
            return unet_init(g, 1, 1, base=self.base)
        return mlp_init(g, self.dim, hidden=self.hidden, depth=self.depth)

    def apply(self, params, x: Tensor, tm: Tensor, cond=None) -> Tensor:
        """Network output for flat ``x [B, dim]`` at model times ``tm [B]``."""
        if self.arch == "unet":
            return unet_apply(params, x.reshape(-1, 1, 8, 8), tm).reshape(x.shape)
        return mlp_apply(params, x, tm)

    def eps(self, params, x: Tensor, t: Tensor) -> Tensor:
        """eps_theta(x, t) at schedule times ``t [B]`` (v-models converted)."""
        params = {k: v.to(x.dtype) for k, v in params.items()}
        out = self.apply(params, x, self.sched.model_time(t).to(x.dtype))
        if self.objective == "v":
            return v_to_eps(x, out, self.sched.alpha_bar(t).to(x.dtype))
        return out

    # -- the Workload protocol ----------------------------------------------------------------
    def loss(self, params, batch) -> Tensor:
        x0, t, noise = batch
        dtype = next(iter(params.values())).dtype
        fn = v_loss if self.objective == "v" else eps_loss
        return fn(self.apply, params, self.sched, x0.to(dtype), t, noise.to(dtype))

    def _draw(self, x: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        t = self.sched.sample_times(len(x), g)
        return x, t, torch.randn(x.shape, generator=g)

    def batch(self, worker: int, num_workers: int, step: int):
        """(x0 [B, dim], t [B], noise [B, dim]) from worker's shard, drawn from (data_seed, worker, step)."""
        data = self.dataset()
        idx = D.minibatch(len(data), self.batch_size, self.data_seed, worker, num_workers, step, "denoiser")
        return self._draw(data[idx], D.rng("denoiser-noise", self.data_seed, worker, step))

    def eval_batch(self, n: int = 512):
        data = self.dataset("test")
        return self._draw(data[:n], D.rng("denoiser-eval"))

    def evaluate(self, params) -> dict[str, float]:
        with torch.no_grad():
            return {"loss": float(self.loss(params, self.eval_batch()))}


def train(workload, seed: int, rounds: int, n: int = 2, method: str = "gd", compressor: str = "identity",
          lr: float | None = None, optimizer: str | None = None, eval_every: int | None = None,
          dtype: torch.dtype = torch.float32):
    """Train any pure workload in the vectorized simulator (``n`` workers, ``method`` +
    ``compressor``, the workload's defaults otherwise) from ``workload.init_params(seed)``.
    Returns (final params dict, History)."""
    from simulator.engine import RunConfig, Simulation
    from simulator.oracles import VmapOracle

    oracle = workload.oracle(n, dtype=dtype, seed=seed) if hasattr(workload, "oracle") else \
        VmapOracle(workload, n, seed=seed, dtype=dtype)
    cfg = RunConfig(method=method, compressor=compressor, lr=lr if lr is not None else workload.default_lr,
                    rounds=rounds, seed=seed, eval_every=eval_every or rounds, progress=False,
                    optimizer=optimizer or getattr(workload, "default_optimizer", "sgd"))
    sim = Simulation(oracle, cfg)
    hist = sim.run()
    return {k: v.clone() for k, v in oracle.spec.unflatten(sim.final_x).items()}, hist


def fit(workload, seed: int, rounds: int, n: int = 2, lr: float | None = None, optimizer: str | None = None,
        eval_every: int | None = None, dtype: torch.dtype = torch.float32):
    """The simulator's ``gd`` + ``identity`` run without its per-worker machinery: each round
    takes one gradient of the mean of the ``n`` workers' losses (= the mean of their
    gradients, what gd aggregates) and steps the server optimizer (distopt.optim) on the flat
    parameters -- the same iterates as :func:`train` with gd/identity (tests check parity in
    float64), 2-3x faster for conv nets, whose per-worker vmapped gradients are slow on CPU.
    For the mechanism checks, which compare models, not communication. Returns (params,
    [evaluate rows every ``eval_every`` rounds, with "round"])."""
    from distopt import optim
    from distopt.workload import ParamSpec

    params = {k: v.to(dtype) for k, v in workload.init_params(seed).items()}
    spec = ParamSpec(params)
    x = spec.flatten(params)
    opt = optim.make(optimizer or getattr(workload, "default_optimizer", "sgd"))
    state = opt.init(x)
    lr = float(lr if lr is not None else workload.default_lr)
    cast = lambda b: torch.utils._pytree.tree_map(lambda t: t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t, b)
    rows = []
    for t in range(rounds):
        if eval_every and t % eval_every == 0:
            rows.append({"round": t, **workload.evaluate(spec.unflatten(x))})
        xr = x.detach().requires_grad_(True)
        p = spec.unflatten(xr)
        loss = sum(workload.loss(p, cast(workload.batch(w, n, t))) for w in range(n)) / n
        (g,) = torch.autograd.grad(loss, xr)
        step, state = opt.step(g, state, lr)
        x = x - step
    if eval_every:
        rows.append({"round": rounds, **workload.evaluate(spec.unflatten(x))})
    return {k: v.clone() for k, v in spec.unflatten(x).items()}, rows


@dataclasses.dataclass(frozen=True)
class BaseSpec:
    """One base model: what to train and how (through the simulator: gd + identity + Adam)."""

    workload: DenoiserTraining = DenoiserTraining()
    rounds: int = 3000
    lr: float = 1e-3
    workers: int = 2
    seed: int = 0

    def key(self) -> dict:
        return {"workload": dataclasses.asdict(self.workload), "rounds": self.rounds, "lr": self.lr,
                "workers": self.workers, "seed": self.seed, "method": "gd+identity+adam"}

    def train(self) -> dict[str, Tensor]:
        return train(self.workload, self.seed, self.rounds, n=self.workers, lr=self.lr, optimizer="adam")[0]


@dataclasses.dataclass(frozen=True)
class Base:
    """A trained base model: its workload (schedule, architecture) and parameters."""

    spec: BaseSpec
    params: dict

    @property
    def workload(self) -> DenoiserTraining:
        return self.spec.workload

    @property
    def sched(self):
        return self.spec.workload.sched

    def eps_fn(self, dtype: torch.dtype = torch.float32):
        """``eps(x, t)`` with the parameters frozen (no grad), for the samplers."""
        params = {k: v.to(dtype) for k, v in self.params.items()}

        def eps(x: Tensor, t: Tensor) -> Tensor:
            with torch.no_grad():
                return self.workload.eps(params, x.to(dtype), t)
        return eps


@functools.lru_cache(maxsize=8)
def base_model(spec: BaseSpec) -> Base:
    """The trained base model of ``spec`` (loaded once per process; treat its params as read-only)."""
    from .cache import cached

    return Base(spec, cached("base", spec.key(), spec.train))


DIGITS = BaseSpec(DenoiserTraining(data="digits", arch="mlp", hidden=192, depth=3, schedule="linear", T=200),
                  rounds=3000, lr=1e-3)
RING8 = BaseSpec(DenoiserTraining(data="ring8", arch="mlp", hidden=128, depth=3, schedule="vp", batch_size=256),
                 rounds=2000, lr=2e-3)
