"""Server-side optimizers: what turns the aggregated direction of a method into the model
update (x -= update). Pure steps with explicit state, like the methods.

``sgd`` is the methods' own rule (x -= lr * direction; the EF papers' setting, and the one
theory stepsizes are for). ``momentum`` and ``adam`` apply heavy-ball or Adam (Kingma & Ba
2015) to the direction, as a DDP user's torch optimizer would apply them to the
communicated gradient -- the usual way compressed methods are used to train networks.
Model-unit methods (EF14, whose direction already includes lr) accept ``sgd`` only.

Adam and error feedback: Adam divides each coordinate by its own running scale, so the entries
of EF21's estimate g that a round did not refresh -- stale, often small -- still move the model
by about lr each. A compressed method without a running estimate (DCGD) sends zeros there, and
Adam's moments on them decay. 1-bit Adam (Tang et al. 2021) freezes the second moment before it
compresses for the same reason. ``distopt results FAMILY --optimizers default,sgd`` shows the
effect on each workload (experiments/results/sequence.md).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from ._spec import build


@dataclasses.dataclass(frozen=True)
class SGD:
    name: ClassVar[str] = "sgd"

    def init(self, x: Tensor) -> tuple:
        return ()

    def step(self, direction: Tensor, state: tuple, lr: float) -> tuple[Tensor, tuple]:
        return lr * direction, state


class MomentumState(NamedTuple):
    buf: Tensor


@dataclasses.dataclass(frozen=True)
class Momentum:
    beta: float = 0.9
    nesterov: bool = False

    name: ClassVar[str] = "momentum"

    def __post_init__(self):
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"momentum: beta must be in [0, 1), got {self.beta}")

    def init(self, x: Tensor) -> MomentumState:
        return MomentumState(torch.zeros_like(x))

    def step(self, direction, state: MomentumState, lr):
        buf = self.beta * state.buf + direction
        d = direction + self.beta * buf if self.nesterov else buf
        return lr * d, MomentumState(buf)


class AdamState(NamedTuple):
    m: Tensor
    v: Tensor
    t: Tensor  # [] step count


@dataclasses.dataclass(frozen=True)
class Adam:
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    name: ClassVar[str] = "adam"

    def __post_init__(self):
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0 and self.eps > 0):
            raise ValueError("adam: need 0 <= beta1, beta2 < 1 and eps > 0")

    def init(self, x: Tensor) -> AdamState:
        return AdamState(torch.zeros_like(x), torch.zeros_like(x), torch.zeros((), dtype=torch.float64))

    def step(self, direction, state: AdamState, lr):
        t = state.t + 1
        m = self.beta1 * state.m + (1 - self.beta1) * direction
        v = self.beta2 * state.v + (1 - self.beta2) * direction * direction
        k = float(t)
        m_hat = m / (1 - self.beta1 ** k)
        v_hat = v / (1 - self.beta2 ** k)
        return lr * m_hat / (v_hat.sqrt() + self.eps), AdamState(m, v, t)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make(spec: str | object):
    """``sgd``, ``momentum:beta=0.9``, ``adam:beta1=0.9,beta2=0.999,eps=1e-8``."""
    return build(OPTIMIZERS, spec, "optimizer")


__all__ = ["OPTIMIZERS", "SGD", "Momentum", "Adam", "make"]
