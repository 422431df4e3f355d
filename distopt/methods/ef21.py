"""EF21 and its variants (Richtarik, Sokolov, Fatkhullin 2021; specs/ef-family.md §3.3-3.9).

EF21 (§3.3):   c_i = C(grad f_i(x^{t+1}) - g_i);  g_i += c_i;  send c_i;  g += (1/n) sum_i c_i;
               x^{t+2} = x^{t+1} - lr g.   Init g_i^0 = grad f_i(x^0), sent uncompressed.
EF21+ (§3.4):  each worker forms a = C(grad_i) and b = g_i + C(grad_i - g_i) and keeps the one
               closer to grad_i (one extra bit says which). The server must hold every g_i to
               apply choice a (it replaces g_i); ``value`` is the change g_i^new - g_i.
EF21-W (§3.5): weights w_i = L_i / sum_j L_j; u_i = C(grad_i/(n w_i) - g_i); g_i += u_i;
               g += sum_i w_i u_i (weighted aggregation); init g_i^0 = grad_i(x^0)/(n w_i).
EF21-SGDM (§3.9): v_i = (1-eta) v_i + eta grad_i;  c_i = C(v_i - g_i);  g_i += c_i.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple, Optional

import torch
from torch import Tensor

from .base import Method, Sent, send, send_plain, send_shift


class EF21Worker(NamedTuple):
    g: Tensor  # [..., d] this worker's estimate of its gradient
    comp: tuple  # compressor state


class EF21Server(NamedTuple):
    g: Tensor  # [d] the average of the workers' g_i


@dataclasses.dataclass(frozen=True)
class EF21(Method):
    name: ClassVar[str] = "ef21"
    summary: ClassVar[str] = "EF21: compress the change of each worker's gradient estimate"
    theory: ClassVar[str] = "1/(L + L_AM xi(alpha)) (theory) or 1/(L + L_QM xi(alpha)) (theory-qm)"

    def init_worker(self, grad0, rng, lr):
        return send_plain(grad0), EF21Worker(grad0, self.compressor.init_state(grad0, rng))

    def init_server(self, agg0, lr):
        return agg0, EF21Server(agg0)

    def worker_step(self, grad, state: EF21Worker, rng, lr, donate=False):
        sent, g, comp = send_shift(self.compressor, grad, state.g, rng, state.comp, donate)
        return sent, EF21Worker(g, comp)

    def server_step(self, agg, state: EF21Server, lr):
        g = state.g + agg
        return g, EF21Server(g)


def _rowwise(cond: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """where(cond, a, b) with ``cond`` [rows] broadcast over the trailing dims."""
    return torch.where(cond.reshape(cond.shape + (1,) * (a.dim() - cond.dim())), a, b)


@dataclasses.dataclass(frozen=True)
class EF21Plus(EF21):
    name: ClassVar[str] = "ef21-plus"
    summary: ClassVar[str] = "EF21+: send C(grad) or the EF21 update, whichever is closer"

    def worker_step(self, grad, state: EF21Worker, rng, lr, donate=False):  # (g is read after: not donated)
        b, gb, comp = send_shift(self.compressor, grad, state.g, rng, state.comp)  # gb = g + C(grad - g)
        a, _ = send(self.compressor, grad, rng.fork(1), state.comp)
        ga = a.value
        # choose a where it is strictly closer to the gradient (ties: the EF21 update)
        use_a = (ga - grad).square().sum(-1) < (gb - grad).square().sum(-1)  # [rows] or []
        if any(pa.shape != pb.shape for pa, pb in zip(a.payload, b.payload)):
            raise ValueError(f"ef21-plus needs fixed-size payloads; {self.compressor.spec} varies in size")
        payload = tuple(_rowwise(use_a, pa, pb) if pa.dim() > 0 else torch.where(use_a, pa, pb)
                        for pa, pb in zip(a.payload, b.payload))
        g_new = _rowwise(use_a, ga, gb)
        rows = 1 if grad.dim() == 1 else grad.shape[0]
        sent = Sent(payload, g_new - state.g, self.compressor, extra_bits=rows)
        return sent, EF21Worker(g_new, comp)


@dataclasses.dataclass(frozen=True)
class EF21W(EF21):
    """``smoothness``: L_i of every worker (the simulator passes the workload's); weights
    w_i = L_i / sum_j L_j. With positively homogeneous compressors (Top-K, Rand-K, scaled
    sign, rank-r) EF21-W gives exactly EF21's iterates at the same stepsize (check R3)."""

    smoothness: Optional[tuple] = dataclasses.field(default=None, metadata={"spec": False})

    name: ClassVar[str] = "ef21-w"
    summary: ClassVar[str] = "weighted EF21 (Error Feedback Reloaded): weights L_i / sum L_j"
    theory: ClassVar[str] = "1/(L + L_AM xi(alpha))"

    def __post_init__(self):
        super().__post_init__()
        if self.smoothness is None:
            return
        ls = torch.tensor([float(v) for v in self.smoothness], dtype=torch.float64)
        if ls.numel() == 0 or not bool((ls > 0).all()) or not bool(torch.isfinite(ls).all()):
            raise ValueError("ef21-w needs positive, finite smoothness constants L_i, one per worker")
        object.__setattr__(self, "smoothness", tuple(float(v) for v in ls))

    def weights(self, workers: Tensor) -> Tensor:
        if self.smoothness is None:
            raise ValueError("ef21-w needs the workers' smoothness constants L_i: pass smoothness=(L_1, ..., L_n) "
                             "(the simulator takes them from the workload)")
        ls = torch.tensor(self.smoothness, dtype=torch.float64)
        n_w = ls / ls.mean()  # n w_i = L_i / L_AM
        return n_w[workers.to(torch.int64)]

    def _scale(self, rng, ref: Tensor) -> Tensor:
        a = self.weights(rng.workers()).to(ref.dtype)  # [rows]
        return a.reshape(-1, 1) if ref.dim() == 2 else a.reshape(())

    def init_worker(self, grad0, rng, lr):
        g0 = grad0 / self._scale(rng, grad0)
        return send_plain(g0), EF21Worker(g0, self.compressor.init_state(grad0, rng))

    def worker_step(self, grad, state: EF21Worker, rng, lr, donate=False):
        sent, g, comp = send_shift(self.compressor, grad / self._scale(rng, grad), state.g, rng, state.comp, donate)
        return sent, EF21Worker(g, comp)


class SGDMWorker(NamedTuple):
    v: Tensor  # [..., d] momentum of the stochastic gradients
    g: Tensor  # [..., d] EF21 estimate of v
    comp: tuple


@dataclasses.dataclass(frozen=True)
class EF21SGDM(EF21):
    momentum: float = 0.1

    name: ClassVar[str] = "ef21-sgdm"
    summary: ClassVar[str] = "EF21 with momentum on the stochastic gradients (eta = momentum)"
    theory: ClassVar[str] = "none verified: give a numeric --lr"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"ef21-sgdm: momentum must be in (0, 1], got momentum={self.momentum}")

    def init_worker(self, grad0, rng, lr):
        return send_plain(grad0), SGDMWorker(grad0, grad0, self.compressor.init_state(grad0, rng))

    def worker_step(self, grad, state: SGDMWorker, rng, lr, donate=False):
        v = (1.0 - self.momentum) * state.v + self.momentum * grad
        sent, g, comp = send_shift(self.compressor, v, state.g, rng, state.comp, donate)
        return sent, SGDMWorker(v, g, comp)
