"""The Workload protocol: a model, its loss and its data, trainable through any method on any
backend (implementations live in experiments/workloads, one file per paper).

A workload is pure: ``loss(params, batch)`` has no side effects and ``batch(worker,
num_workers, step)`` is a deterministic function of its arguments (and the workload's seed),
so the simulator, the DDP hook and Ray see the same data and produce the same iterates.

Attributes every zoo workload declares (class attributes of a frozen dataclass whose fields
are its hyper-parameters, all with defaults):

* ``name`` (registry id), ``paper`` (title);
* ``primary_metric`` (a key of ``evaluate``'s dict) and ``higher_is_better``;
* ``default_lr``, ``default_rounds`` and ``default_optimizer`` (``sgd``, ``momentum``, ``adam``;
  see distopt.optim): what ``distopt simulate --workload ID`` uses when no ``--lr`` /
  ``--rounds`` / ``--optimizer`` is given, and what the family results tables use.

Optional extensions the backends use when present:

* ``local_params``: names of parameters that stay on their worker and are never
  communicated (e.g. PV-RNN's per-sequence posterior vectors). The simulator keeps one copy
  per worker (stacked on a leading axis) and updates them with plain local gradient steps of
  size ``local_lr`` (default ``default_lr``) every round the worker takes part; ``loss``
  receives them in ``params`` like any other parameter.
* ``oracle(num_workers, dtype, **opts)``: a vectorized gradient oracle for the simulator
  (logistic regression, quadratics); without it the simulator vmaps ``loss`` over workers.
* ``smoothness(num_workers)``: the L_i of each worker's f_i and L of f, for theory stepsizes.
* ``reproduce(quick, seeds, out)``: the paper's mechanism check.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Batch = Any
Params = dict[str, Tensor]

__all__ = ["Workload", "Batch", "Params", "flatten", "unflatten", "ParamSpec"]


@runtime_checkable
class Workload(Protocol):
    name: str
    paper: str

    def init_params(self, seed: int) -> Params: ...

    def loss(self, params: Params, batch: Batch) -> Tensor: ...

    def batch(self, worker: int, num_workers: int, step: int) -> Batch: ...

    def evaluate(self, params: Params) -> dict[str, float]: ...


class ParamSpec:
    """Names, shapes and dtypes of a parameter dict, to move between the dict and one flat
    vector ``[d]`` (what compressors and methods see)."""

    def __init__(self, params: Params):
        self.names = list(params)
        self.shapes = [tuple(params[k].shape) for k in self.names]
        self.numels = [int(params[k].numel()) for k in self.names]
        self.dim = sum(self.numels)

    def flatten(self, params: Params) -> Tensor:
        return flatten(params, self.names)

    def unflatten(self, x: Tensor) -> Params:
        """Views into ``x`` (``[..., d]`` -> dict of ``[..., *shape]``)."""
        out, start = {}, 0
        lead = x.shape[:-1]
        for name, shape, numel in zip(self.names, self.shapes, self.numels):
            out[name] = x[..., start:start + numel].reshape(tuple(lead) + tuple(shape))  # 0-dim: shape ()
            start += numel
        return out


def flatten(params: Params, names: list[str] | None = None) -> Tensor:
    names = names if names is not None else list(params)
    return torch.cat([params[k].reshape(-1) for k in names])


def unflatten(x: Tensor, like: Params) -> Params:
    return ParamSpec(like).unflatten(x)
