"""Gradient oracles: what the simulator asks of a problem, vectorized over workers.

An oracle answers, for the current point x ``[d]``:

* ``grads(x, step, workers)`` -> ``[len(workers), d]``: each listed worker's (stochastic)
  gradient, in one batched computation;
* ``evaluate(x)`` -> dict with at least ``loss`` = f(x) and ``grad_norm_sq`` = ||grad f(x)||^2
  (full gradient, f = mean_i f_i);
* ``smoothness`` (the L_i), ``L``, ``mu`` where known, for theory stepsizes.

Three implementations: quadratics (covers the EF papers' synthetic problems and PL least
squares), nonconvex logistic regression (the EF21 papers' problem), and a generic one that
vmaps a workload's pure loss over workers.
"""
from __future__ import annotations

import math
from typing import Optional, Protocol, Sequence

import torch
from torch import Tensor

from distopt.noise import STREAM_BATCH, STREAM_NOISE, Noise, bits32, normal
from distopt.workload import ParamSpec


class Oracle(Protocol):
    n: int
    d: int
    dtype: torch.dtype
    smoothness: Optional[tuple[float, ...]]
    L: Optional[float]
    mu: Optional[float]

    def x0(self) -> Tensor: ...

    def grads(self, x: Tensor, step: int, workers: Tensor) -> Tensor: ...

    def evaluate(self, x: Tensor) -> dict[str, float]: ...


def _minibatch(seed: int, step: int, workers: Tensor, sizes: Tensor, batch: int, width: int) -> Tensor:
    """Per worker, ``batch`` distinct sample indices drawn uniformly without replacement from
    its ``sizes[w]`` samples: the smallest of random keys, ``[len(workers), batch]``."""
    noise = Noise(seed, step, workers)
    keys = bits32(noise, width, STREAM_BATCH).to(torch.int64) & 0xFFFFFFFF  # [w, width]
    keys = torch.where(torch.arange(width) < sizes[workers].unsqueeze(1), keys, torch.full_like(keys, 1 << 40))
    return torch.topk(keys, batch, dim=1, largest=False).indices


def _rows(t: Tensor, workers: Tensor, n: int) -> Tensor:
    """Rows ``workers`` of a per-worker table: itself for everyone, a view for one worker (what
    a client holding its own data reads: the per-worker loop asks one at a time), else a gather."""
    if workers.numel() == n:
        return t
    if workers.numel() == 1:
        w = int(workers.reshape(-1)[0])
        return t[w:w + 1]
    return t[workers]


class QuadraticOracle:
    """f_i(x) = 1/2 (x - c_i)^T H_i (x - c_i) + const, with H_i = h * I (``H=None``, scalar h),
    diagonal ``[n, d]`` or dense ``[n, d, d]``; optional additive gradient noise sigma N(0, I)
    drawn from (seed, step, worker) (EControl's stochastic setting, check R8).

    x* solves (sum_i H_i) x = sum_i H_i c_i; ``evaluate`` reports ``dist_sq`` = ||x - x*||^2.
    """

    def __init__(self, centers: Tensor, H: Optional[Tensor] = None, sigma: float = 0.0, seed: int = 0,
                 x0: Optional[Tensor] = None, h: float = 1.0):
        self.c = centers  # [n, d]
        self.n, self.d = centers.shape
        self.dtype = centers.dtype
        self.H = H
        self.h = h
        self.sigma = float(sigma)
        self.seed = seed
        self._x0 = x0 if x0 is not None else torch.zeros(self.d, dtype=self.dtype)
        if H is None:
            self.Hc = h * centers
            self.x_star = centers.mean(0)
            eig_i = torch.full((self.n,), float(h), dtype=torch.float64)
            L = mu = float(h)
        elif H.dim() == 2:
            self.Hc = H * centers
            self.x_star = self.Hc.sum(0) / H.sum(0)
            eig_i = H.max(dim=1).values.double()
            hm = H.mean(0)
            L, mu = float(hm.max()), float(hm.min())
        else:
            self.Hc = torch.einsum("nij,nj->ni", H, centers)
            self.x_star = torch.linalg.solve(H.sum(0), self.Hc.sum(0))
            eig_i = torch.linalg.eigvalsh(H.double()).amax(dim=1)
            ev = torch.linalg.eigvalsh(H.mean(0).double())
            L, mu = float(ev.max()), float(ev.min())
        self.smoothness = tuple(float(v) for v in eig_i)
        self.L = L
        self.mu = mu if mu > 0 else None
        self._fstar = self._f(self.x_star)

    def x0(self) -> Tensor:
        return self._x0.clone()

    def _hx(self, x: Tensor, workers: Tensor) -> Tensor:
        if self.H is None:
            return (x if self.h == 1.0 else self.h * x).expand(len(workers), -1)  # (1.0 * x is x, to the bit)
        if self.H.dim() == 2:
            return _rows(self.H, workers, self.n) * x
        return _rows(self.H, workers, self.n) @ x

    def grads(self, x: Tensor, step: int, workers: Tensor) -> Tensor:
        g = self._hx(x, workers) - _rows(self.Hc, workers, self.n)
        if self.sigma > 0:
            g = g + self.sigma * normal(Noise(self.seed, step, workers), self.d, STREAM_NOISE, self.dtype)
        return g

    def _f(self, x: Tensor) -> float:
        diff = x - self.c  # [n, d]
        if self.H is None:
            quad = self.h * (diff * diff).sum(1)
        elif self.H.dim() == 2:
            quad = (self.H * diff * diff).sum(1)
        else:
            quad = torch.einsum("ni,nij,nj->n", diff, self.H, diff)
        return float(0.5 * quad.mean())

    def evaluate(self, x: Tensor) -> dict[str, float]:
        g = self.grads_full(x)
        return {"loss": self._f(x) - self._fstar, "grad_norm_sq": float(g @ g), "dist_sq": float(((x - self.x_star) ** 2).sum())}

    def grads_full(self, x: Tensor) -> Tensor:
        return (self._hx(x, torch.arange(self.n)) - self.Hc).mean(0)


class LogisticOracle:
    """The EF21 papers' nonconvex logistic regression (DESIGN.md contract):

        f_i(x) = (1/m_i) sum_j log(1 + exp(-b_j a_j.x)) + reg sum_k x_k^2/(1 + x_k^2)

    Shards are padded into ``A [n, m_max, d]`` with per-sample weights 1/m_i (0 on padding),
    so every worker's gradient comes from one batched contraction. ``batch``: samples per
    worker per round drawn without replacement (EF21-SGD), None for full gradients.
    L_i = lambda_max(A_i^T A_i/(4 m_i)) + 2 reg; L = lambda_max(mean_i A_i^T A_i/(4 m_i)) + 2 reg.
    """

    def __init__(self, shards: Sequence[tuple[Tensor, Tensor]], reg: float = 0.1, batch: Optional[int] = None,
                 seed: int = 0, dtype: torch.dtype = torch.float64, x0: Optional[Tensor] = None):
        self.n = len(shards)
        self.d = shards[0][0].shape[1]
        self.dtype = dtype
        self.reg = float(reg)
        sizes = [a.shape[0] for a, _ in shards]
        if min(sizes) < 1:
            raise ValueError("every worker needs at least one sample: use fewer workers than data rows")
        m = max(sizes)
        self.sizes = torch.tensor(sizes)
        self.A = torch.zeros(self.n, m, self.d, dtype=dtype)
        self.b = torch.zeros(self.n, m, dtype=dtype)
        self.w = torch.zeros(self.n, m, dtype=dtype)
        for i, (a, b) in enumerate(shards):
            self.A[i, : a.shape[0]] = a.to(dtype)
            self.b[i, : a.shape[0]] = b.to(dtype)
            self.w[i, : a.shape[0]] = 1.0 / a.shape[0]
        if batch is not None and not 1 <= batch <= min(sizes):
            raise ValueError(f"--batch {batch}: each worker holds {min(sizes)} to {m} samples; use 1 <= batch <= {min(sizes)}")
        self.batch = batch
        self.seed = seed
        self._x0 = x0 if x0 is not None else torch.zeros(self.d, dtype=dtype)
        grams = torch.einsum("nmd,nm,nme->nde", self.A.double(), self.w.double() / 4.0, self.A.double())  # A_i^T A_i/(4 m_i)
        self.smoothness = tuple(float(v) + 2 * self.reg for v in torch.linalg.eigvalsh(grams).amax(dim=1))
        self.L = float(torch.linalg.eigvalsh(grams.mean(0)).max()) + 2 * self.reg
        self.mu = None

    def x0(self) -> Tensor:
        return self._x0.clone()

    def _reg_grad(self, x: Tensor) -> Tensor:
        return self.reg * 2 * x / (1 + x * x) ** 2

    def grads(self, x: Tensor, step: int, workers: Tensor) -> Tensor:
        if self.batch is None and workers.numel() == self.n:  # everyone: no gather copy
            A, b, w = self.A, self.b, self.w
        elif self.batch is None:
            A, b, w = self.A[workers], self.b[workers], self.w[workers]
        else:
            idx = _minibatch(self.seed, step, workers, self.sizes, self.batch, self.A.shape[1])  # [k, batch]
            rows = workers.unsqueeze(1)
            A, b = self.A[rows, idx], self.b[rows, idx]
            w = torch.full(b.shape, 1.0 / self.batch, dtype=self.dtype)
        z = A @ x  # [k, m]
        coef = -b * self._sigmoid(-b * z) * w  # d/dz of w log(1 + exp(-b z))
        return torch.bmm(coef.unsqueeze(1), A).squeeze(1) + self._reg_grad(x)  # [k, d]

    def _sigmoid(self, t: Tensor) -> Tensor:
        """sigmoid with values below ~1e15 x the smallest normal flushed to 0: well-fitted samples
        would otherwise make subnormal numbers (|b z| > 87 in float32), whose arithmetic is far slower on x86.
        The change is far below float64 (and float32) resolution of the gradient."""
        s = torch.sigmoid(t)
        return s.masked_fill_(s < torch.finfo(s.dtype).tiny * 2.0**50, 0.0)

    def evaluate(self, x: Tensor) -> dict[str, float]:
        z = self.A @ x  # [n, m]
        losses = (torch.nn.functional.softplus(-self.b * z) * self.w).sum(1)  # [n]
        reg = self.reg * float((x * x / (1 + x * x)).sum())
        coef = -self.b * self._sigmoid(-self.b * z) * self.w
        g = torch.bmm(coef.unsqueeze(1), self.A).squeeze(1).mean(0) + self._reg_grad(x)
        acc = float((((z > 0).to(self.dtype) * 2 - 1 == self.b).to(self.dtype) * self.w).sum(1).mean())
        return {"loss": float(losses.mean()) + reg, "grad_norm_sq": float(g @ g), "accuracy": acc}


class VmapOracle:
    """Any pure workload: per-worker gradients of ``workload.loss`` by ``torch.func`` (vmap over
    workers when every worker's batch has the same shapes, else one call per worker).

    ``x`` holds the communicated parameters. Parameters named in ``workload.local_params``
    stay on their workers: one copy per worker (stacked ``[n, ...]``), stepped locally with
    ``local_lr`` whenever the worker computes a gradient, never compressed or sent.
    ``evaluate`` passes them stacked under their names.
    """

    def __init__(self, workload, num_workers: int, seed: int = 0, dtype: torch.dtype = torch.float32):
        self.workload = workload
        self.n = num_workers
        self.dtype = dtype
        params = {k: v.to(dtype) if v.is_floating_point() else v for k, v in workload.init_params(seed).items()}
        local_names = tuple(getattr(workload, "local_params", ()) or ())
        missing = [k for k in local_names if k not in params]
        if missing:
            raise ValueError(f"workload {workload.name!r}: local_params {missing} are not among its parameters")
        self.local = {}  # name -> [n, *shape], one copy per worker
        for k in local_names:
            v = params.pop(k)
            self.local[k] = v.unsqueeze(0).expand(num_workers, *v.shape).clone()
        self.local_lr = float(getattr(workload, "local_lr", None) or getattr(workload, "default_lr", 0.0) or 0.0)
        self.spec = ParamSpec(params)
        self.d = self.spec.dim
        self._x0 = self.spec.flatten(params)
        sm = getattr(workload, "smoothness", None)
        info = sm(num_workers) if callable(sm) else None
        self.smoothness = tuple(info[0]) if info else None
        self.L = info[1] if info else None
        self.mu = None

    def x0(self) -> Tensor:
        return self._x0.clone()

    def _cast(self, batch):
        """Floating tensors of a batch in the run's dtype (data are often made in float32)."""
        return torch.utils._pytree.tree_map(
            lambda t: t.to(self.dtype) if isinstance(t, Tensor) and t.is_floating_point() else t, batch)

    def _loss(self, x: Tensor, local: dict, batch) -> Tensor:
        return self.workload.loss({**self.spec.unflatten(x), **local}, batch)

    def grads(self, x: Tensor, step: int, workers: Tensor) -> Tensor:
        from torch.func import grad, vmap

        batches = [self._cast(self.workload.batch(int(w), self.n, step)) for w in workers]
        local = {k: v[workers] for k, v in self.local.items()}
        g = grad(self._loss, argnums=(0, 1))
        try:
            stacked = torch.utils._pytree.tree_map(lambda *t: torch.stack(t), *batches)
            gx, gl = vmap(g, in_dims=(None, 0, 0))(x, local, stacked)
        except (RuntimeError, ValueError, TypeError):  # ragged batches or ops vmap cannot batch
            parts = [g(x, {k: v[j] for k, v in local.items()}, b) for j, b in enumerate(batches)]
            gx = torch.stack([p[0] for p in parts])
            gl = {k: torch.stack([p[1][k] for p in parts]) for k in local}
        for k, v in gl.items():  # local parameters: a plain local step, nothing sent
            self.local[k][workers] = local[k] - self.local_lr * v
        return gx

    def evaluate(self, x: Tensor) -> dict[str, float]:
        out = dict(self.workload.evaluate({**self.spec.unflatten(x), **self.local}))
        if "grad_norm_sq" not in out:
            saved = {k: v.clone() for k, v in self.local.items()}
            g = self.grads(x, 0, torch.arange(self.n)).mean(0)
            self.local = saved  # evaluation must not move the local parameters
            out["grad_norm_sq"] = float(g @ g)
        return out
