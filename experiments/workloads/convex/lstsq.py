"""``lstsq`` -- least squares in the PL setting (EF21's ``Least squares (PL setting)`` scripts).

f_i(x) = (1/(2 m_i)) ||A_i x - y_i||^2 on contiguous shards of a generated (A, y). The
official script reports (1/m)||Ax - y||^2 with gradient (1/m)A^T(Ax - y), a factor-2
mismatch; here loss and gradient agree. f is mu-PL with mu = lambda_min(mean_i A_i^T A_i/m_i)
(the script uses sigma_min(X)^2 without dividing by N). ``--lr theory-pl`` uses EF21's PL rule.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import torch
from torch import Tensor

from simulator.oracles import QuadraticOracle

from . import data as D


@dataclasses.dataclass(frozen=True)
class LeastSquares:
    rows: int = 1000
    features: int = 20
    noise: float = 0.1
    scale: float = 1.0
    scaled_frac: float = 0.0
    data_seed: int = 0

    name: ClassVar[str] = "lstsq"
    paper: ClassVar[str] = "EF21: A New, Simpler, Theoretically Better, and Practically Faster Error Feedback"
    primary_metric: ClassVar[str] = "grad_norm_sq"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[object] = "theory"
    default_rounds: ClassVar[int] = 300

    def dataset(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.data_seed)
        A = torch.randn(self.rows, self.features, generator=g, dtype=torch.float64)
        k = int(round(self.scaled_frac * self.rows))
        A[:k] *= self.scale
        w = torch.randn(self.features, generator=g, dtype=torch.float64)
        y = A @ w + self.noise * torch.randn(self.rows, generator=g, dtype=torch.float64)
        return A, y

    def oracle(self, num_workers: int, dtype: torch.dtype = torch.float64, batch: Optional[int] = None, seed: int = 0):
        if batch is not None:
            raise ValueError("lstsq runs with full gradients; drop --batch")
        A, y = self.dataset()
        shards = D.split(A, y, num_workers)
        H = torch.stack([a.T @ a / a.shape[0] for a, _ in shards]).to(dtype)  # [n, d, d]
        # centers: any minimiser of f_i; f_i = 1/2 (x - c_i)^T H_i (x - c_i) + const with H_i c_i = A_i^T y_i / m_i
        rhs = torch.stack([a.T @ b / a.shape[0] for a, b in shards]).to(dtype)
        c = torch.linalg.lstsq(H, rhs.unsqueeze(-1)).solution.squeeze(-1)
        return QuadraticOracle(c, H=H, seed=seed)

    def init_params(self, seed: int) -> dict[str, Tensor]:
        return {"x": torch.zeros(self.features, dtype=torch.float64)}

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        A, y = batch
        r = A.to(params["x"].dtype) @ params["x"] - y
        return 0.5 * (r * r).mean()

    def batch(self, worker: int, num_workers: int, step: int):
        A, y = self.dataset()
        return D.split(A, y, num_workers)[worker]

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, float]:
        A, y = self.dataset()
        x = params["x"].detach().requires_grad_(True)
        loss = self.loss({"x": x}, (A, y))
        (g,) = torch.autograd.grad(loss, x)
        return {"loss": float(loss), "grad_norm_sq": float(g @ g)}
