"""Functional GRU and LSTM layers (the baselines of ``tpgn``, ``hiss_hier_ssm`` and
``lnn_linkload``): parameters in a plain dict, torch's fused CPU kernels through
``torch.func.functional_call`` (so ``loss`` stays pure and differentiable by ``torch.func``).

Parameter names follow ``torch.nn.GRU``/``torch.nn.LSTM`` (``weight_ih_l0`` ...), prefixed.
Under the simulator's vmap over workers torch runs the fused kernel once per worker (its
batching fallback): correct, a little slower.
"""
from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import Tensor

__all__ = ["rnn_init", "rnn"]

_KINDS = {"gru": (torch.nn.GRU, 3), "lstm": (torch.nn.LSTM, 4)}


@functools.lru_cache(maxsize=16)
def _module(kind: str, n_in: int, hidden: int) -> torch.nn.Module:
    cls, _ = _KINDS[kind]
    return cls(n_in, hidden, batch_first=True)


def rnn_init(kind: str, n_in: int, hidden: int, g: torch.Generator, prefix: str = "rnn.") -> dict[str, Tensor]:
    """torch's default initialisation U(-1/sqrt(hidden), 1/sqrt(hidden)), drawn from ``g``."""
    if kind not in _KINDS:
        raise ValueError(f"unknown recurrent cell {kind!r}; valid: {', '.join(_KINDS)}")
    gates = _KINDS[kind][1] * hidden
    k = 1 / math.sqrt(hidden)
    shapes = {"weight_ih_l0": (gates, n_in), "weight_hh_l0": (gates, hidden), "bias_ih_l0": (gates,), "bias_hh_l0": (gates,)}
    return {prefix + n: (2 * torch.rand(s, generator=g) - 1) * k for n, s in shapes.items()}


def rnn(kind: str, params: dict[str, Tensor], x: Tensor, prefix: str = "rnn.") -> Tensor:
    """x [B, T, n_in] -> hidden states [B, T, hidden] (zero initial state)."""
    w = params[prefix + "weight_hh_l0"]
    mod = _module(kind, x.shape[-1], w.shape[1])
    p = {n: params[prefix + n] for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")}
    with warnings.catch_warnings():  # vmap over workers runs the fused kernel per worker: expected, not news
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        warnings.filterwarnings("ignore", message=".*single contiguous chunk of memory.*")
        out, _ = torch.func.functional_call(mod, p, (x.to(w.dtype),))
    return out
