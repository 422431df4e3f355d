"""``logreg`` -- the EF21 papers' nonconvex logistic regression (DESIGN.md contract).

f_i(x) = (1/m_i) sum_j log(1 + exp(-b_j a_j.x)) + reg sum_k x_k^2/(1 + x_k^2),  f = mean_i f_i,
x^0 = 0. Data: a LIBSVM file (``data=FILE``), scikit-learn's bundled breast cancer set
unnormalised (``data=sklearn:breast_cancer``, heterogeneous L_i like LIBSVM's australian), or a
generator (``rows, features`` and the heterogeneity knob ``scale, scaled_frac``). Rows in file
order are split into n contiguous shards as ``numpy.array_split`` splits them.
L_i = lambda_max(A_i^T A_i/(4 m_i)) + 2 reg;  L = lambda_max(mean_i A_i^T A_i/(4 m_i)) + 2 reg.
DP: each worker holds its shard; only gradients (compressed) travel.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import torch
from torch import Tensor

from simulator.oracles import LogisticOracle

from . import data as D


@dataclasses.dataclass(frozen=True)
class LogReg:
    data: Optional[str] = None
    reg: float = 0.1
    rows: int = 2000
    features: int = 30
    scale: float = 1.0
    scaled_frac: float = 0.0
    data_seed: int = 0

    name: ClassVar[str] = "logreg"
    paper: ClassVar[str] = "EF21: A New, Simpler, Theoretically Better, and Practically Faster Error Feedback"
    primary_metric: ClassVar[str] = "grad_norm_sq"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[object] = "theory"
    default_rounds: ClassVar[int] = 300

    def __post_init__(self):
        if self.reg < 0:
            raise ValueError(f"logreg: reg must be >= 0, got {self.reg}")

    def dataset(self) -> tuple[Tensor, Tensor]:
        if self.data is None:
            return D.generate(self.rows, self.features, self.data_seed, self.scale, self.scaled_frac)
        if self.data.startswith("sklearn:"):
            return D.load_sklearn(self.data.split(":", 1)[1])
        return D.read_libsvm(self.data)

    def shards(self, num_workers: int) -> list[tuple[Tensor, Tensor]]:
        A, b = self.dataset()
        return D.split(A, b, num_workers)

    # -- the simulator's vectorized oracle -----------------------------------------------------
    def oracle(self, num_workers: int, dtype: torch.dtype = torch.float64, batch: Optional[int] = None, seed: int = 0):
        return LogisticOracle(self.shards(num_workers), reg=self.reg, batch=batch, seed=seed, dtype=dtype)

    # -- the generic Workload protocol (DDP, Ray) ---------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        A, _ = self.dataset()
        return {"x": torch.zeros(A.shape[1], dtype=torch.float64)}

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        x = params["x"]
        A, b = batch
        data = torch.nn.functional.softplus(-b * (A.to(x.dtype) @ x)).mean()
        return data + self.reg * (x * x / (1 + x * x)).sum()

    def batch(self, worker: int, num_workers: int, step: int) -> tuple[Tensor, Tensor]:
        return self.shards(num_workers)[worker]

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, float]:
        A, b = self.dataset()
        x = params["x"].detach().requires_grad_(True)
        loss = self.loss({"x": x}, (A, b))
        (g,) = torch.autograd.grad(loss, x)
        return {"loss": float(loss), "grad_norm_sq": float(g @ g)}
