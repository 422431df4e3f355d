"""EF14 / EF-SGD (Seide et al. 2014; Stich & Karimireddy; Karimireddy et al. 2019), in model
units exactly as the EF21 repository's ``tkef_distributed_stable.py`` (specs/ef-family.md §3.2):

    p_i = e_i + lr g_i;   D_i = C(p_i);   e_i = p_i - D_i;   send D_i;   x -= (1/n) sum_i D_i

e_i^0 = 0. With heterogeneous f_i and a constant stepsize it stalls at a floor that grows
like zeta^2 lr^2 (check R6).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import Method, send_error


class EF14State(NamedTuple):
    e: Tensor  # [..., d] error memory, model units
    comp: tuple  # the compressor's own state (PowerSGD's Q), () otherwise


@dataclasses.dataclass(frozen=True)
class EF14(Method):
    name: ClassVar[str] = "ef14"
    model_units: ClassVar[bool] = True
    summary: ClassVar[str] = "classic error feedback (residual memory), model units"
    theory: ClassVar[str] = "EF21's 1/(L + L_AM xi(alpha)) reused, as in the EF21 repository"

    def init_worker(self, grad0, rng, lr):
        state = EF14State(torch.zeros_like(grad0), self.compressor.init_state(grad0, rng))
        return self.worker_step(grad0, state, rng, lr)

    def init_server(self, agg0, lr):
        return agg0, ()

    def worker_step(self, grad, state: EF14State, rng, lr, donate=False):  # (e changes everywhere)
        sent, e, comp = send_error(self.compressor, grad, state.e, lr, rng, state.comp)  # p = e + lr g; e = p - D
        return sent, EF14State(e, comp)

    def server_step(self, agg, state, lr):
        return agg, ()
