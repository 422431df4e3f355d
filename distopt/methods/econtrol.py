"""EControl (Gao, Islamov, Stich, ICLR 2024; specs/ef-family.md §3.11).

Worker i with error e_i and shift h_i, stochastic gradient g_i at the current point:

    D_i = C(eta e_i + g_i - h_i);   e_i += g_i - h_i - D_i;   h_i += D_i;   send D_i
    server: h += (1/n) sum_i D_i;   x -= lr h

Init (``init_shift="grad"``, the paper's): h_i^0 = g_i^0 sent uncompressed, e_i^0 = 0, so the
first step is uncompressed. ``init_shift="zero"`` starts from h_i^0 = 0 with a normal first
step (the third-party library's option). Special cases (tests, check R10): eta = 0 is EF21;
eta = 1 with the shift frozen at 0 (``learn_shift=false, init_shift=zero``) is EF14 in
gradient units. The paper tunes eta (theory suggests delta/400); eta >= 0.5 diverges with
delta = 0.1 in independent runs (R7).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import Tensor

from .base import Method, send_error_shift, send_plain


class EControlWorker(NamedTuple):
    e: Tensor  # [..., d] accumulated error (all of it; only eta of it is fed back)
    h: Tensor  # [..., d] shift
    comp: tuple


class EControlServer(NamedTuple):
    h: Tensor  # [d] mean of the shifts


@dataclasses.dataclass(frozen=True)
class EControl(Method):
    eta: float = 0.1
    init_shift: Literal["grad", "zero"] = "grad"
    learn_shift: bool = True

    name: ClassVar[str] = "econtrol"
    summary: ClassVar[str] = "EControl: error feedback with a learned shift and fed-back fraction eta"
    theory: ClassVar[str] = "none verified (gamma = O(delta/L)): give a numeric --lr"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"econtrol: eta must be in [0, 1], got eta={self.eta}")

    def init_worker(self, grad0, rng, lr):
        comp = self.compressor.init_state(grad0, rng)
        zero = torch.zeros_like(grad0)
        if self.init_shift == "grad":
            return send_plain(grad0), EControlWorker(zero, grad0, comp)
        return self.worker_step(grad0, EControlWorker(zero, zero, comp), rng, lr)

    def init_server(self, agg0, lr):
        if self.init_shift == "grad":
            return agg0, EControlServer(agg0)
        return self.server_step(agg0, EControlServer(torch.zeros_like(agg0)), lr)

    def worker_step(self, grad, state: EControlWorker, rng, lr, donate=False):
        sent, e, h, comp = send_error_shift(self.compressor, grad, state.h, state.e, self.eta, rng, state.comp,
                                            self.learn_shift, donate)
        return sent, EControlWorker(e, h, comp)

    def server_step(self, agg, state: EControlServer, lr):
        h = state.h + agg
        if self.learn_shift:
            return h, EControlServer(h)
        return h, state
