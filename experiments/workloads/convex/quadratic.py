"""``quadratic`` -- heterogeneous quadratics of the EControl experiments (specs/ef-family.md R6-R8).

f_i(x) = (h/2) ||x - c_i||^2 with local optima c_i = zeta N(0, I) (drawn from ``data_seed``),
optional additive gradient noise sigma N(0, I) from (seed, step, worker). x^0 = 0,
x* = mean_i c_i. ``zeta`` controls heterogeneity (EF14's floor grows like zeta^2), ``sigma``
the stochastic floor (EControl's falls like 1/n, EF21-SGD's does not).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import torch
from torch import Tensor

from simulator.oracles import QuadraticOracle


@dataclasses.dataclass(frozen=True)
class Quadratic:
    dim: int = 50
    zeta: float = 1.0
    sigma: float = 0.0
    h: float = 1.0
    data_seed: int = 0

    name: ClassVar[str] = "quadratic"
    paper: ClassVar[str] = "EControl: Fast Distributed Optimization with Compression and Error Control"
    primary_metric: ClassVar[str] = "dist_sq"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[object] = "theory"
    default_rounds: ClassVar[int] = 300

    def __post_init__(self):
        if self.dim < 1 or self.zeta < 0 or self.sigma < 0 or self.h <= 0:
            raise ValueError("quadratic: need dim >= 1, zeta >= 0, sigma >= 0, h > 0")

    def centers(self, num_workers: int, dtype=torch.float64) -> Tensor:
        g = torch.Generator().manual_seed(self.data_seed)
        return (self.zeta * torch.randn(num_workers, self.dim, generator=g, dtype=torch.float64)).to(dtype)

    def oracle(self, num_workers: int, dtype: torch.dtype = torch.float64, batch: Optional[int] = None, seed: int = 0):
        if batch is not None:
            raise ValueError("quadratic has no samples to batch; use sigma=<noise> for stochastic gradients")
        return QuadraticOracle(self.centers(num_workers, dtype), sigma=self.sigma, seed=seed, h=self.h)

    def init_params(self, seed: int) -> dict[str, Tensor]:
        return {"x": torch.zeros(self.dim, dtype=torch.float64)}

    def loss(self, params: dict[str, Tensor], batch: Tensor) -> Tensor:
        return 0.5 * self.h * ((params["x"] - batch) ** 2).sum()

    def batch(self, worker: int, num_workers: int, step: int) -> Tensor:
        if self.sigma > 0:
            raise ValueError("quadratic with sigma > 0 runs in the simulator only (noise is drawn per worker there)")
        return self.centers(num_workers)[worker]

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, float]:
        raise ValueError("quadratic's evaluation needs the number of workers: use its oracle")
