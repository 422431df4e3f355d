"""Baselines without error feedback: gd (uncompressed) and dcgd (naive compressed GD).

DCGD with a biased compressor is the method that can diverge under heterogeneity, even for
strongly convex f (Beznosikov et al. 2020; check R2 in specs/ef-family.md):
x^{t+1} = x^t - lr (1/n) sum_i C(grad f_i(x^t)).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from ..compressors import Identity
from .base import Method, Sent, send, send_plain


@dataclasses.dataclass(frozen=True)
class GD(Method):
    """Distributed gradient descent: every worker sends its full gradient."""

    name: ClassVar[str] = "gd"
    needs_contractive: ClassVar[bool] = False
    summary: ClassVar[str] = "uncompressed gradient descent (the baseline)"
    theory: ClassVar[str] = "1/L"

    def __post_init__(self):
        if not isinstance(self.compressor, Identity):
            raise ValueError(f"gd sends uncompressed gradients, but compressor {self.compressor.spec!r} was given; "
                             "use 'dcgd' to compress without error feedback, or an error-feedback method (ef21, ef14, econtrol)")

    def init_worker(self, grad0, rng, lr):
        return self.worker_step(grad0, (), rng, lr)

    def init_server(self, agg0, lr):
        return agg0, ()

    def worker_step(self, grad, state, rng, lr, donate=False) -> tuple[Sent, tuple]:
        return send_plain(grad), ()

    def server_step(self, agg, state, lr):
        return agg, ()


@dataclasses.dataclass(frozen=True)
class DCGD(Method):
    """Distributed compressed GD without error feedback: x -= lr mean_i C(grad_i). The
    compressor is used as given (unbiased ones unscaled, as in DCGD's analysis)."""

    name: ClassVar[str] = "dcgd"
    needs_contractive: ClassVar[bool] = False
    summary: ClassVar[str] = "naive compressed GD, no error feedback (diverges with biased C)"
    theory: ClassVar[str] = "1/L (no guarantee with biased compressors)"

    def init_worker(self, grad0, rng, lr):
        return self.worker_step(grad0, self.compressor.init_state(grad0, rng), rng, lr)

    def init_server(self, agg0, lr):
        return agg0, ()

    def worker_step(self, grad, state, rng, lr, donate=False):
        return send(self.compressor, grad, rng, state)

    def server_step(self, agg, state, lr):
        return agg, ()
