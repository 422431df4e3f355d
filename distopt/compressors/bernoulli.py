"""Bernoulli ("lazy") compression: send x/p with probability p, else nothing. Unbiased,
omega = 1/p - 1. An absent message costs no bits."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from ..noise import STREAM_ROUNDING, Noise
from .base import Compressor, Payload


@dataclasses.dataclass(frozen=True)
class Bernoulli(Compressor):
    """Payload: (sent ``[...]`` bool flags, values ``[n_sent, d]`` of the senders, unscaled)."""

    p: float = 0.5

    name: ClassVar[str] = "bernoulli"
    unbiased: ClassVar[bool] = True
    random: ClassVar[bool] = True
    formula: ClassVar[str] = "omega = 1/p - 1"
    bits_per_coord: ClassVar[str] = "32 with probability p, else 0"
    summary: ClassVar[str] = "lazy: whole vector x/p with probability p"

    def __post_init__(self):
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"bernoulli: p must be in (0, 1], got p={self.p}")

    def omega(self, d: int) -> float:
        return 1.0 / self.p - 1.0

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        rng = self._need_rng(rng)
        rows, lead = self._start(x)
        one = rows[:, :1]
        sent = (self._uniform(rng, one, STREAM_ROUNDING, torch.float64) < self.p).squeeze(1)  # [N]
        return sent.reshape(lead), rows[sent]

    def bits(self, p: Payload) -> int:
        vals = p[1]
        return vals.numel() * vals.element_size() * 8

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        sent, vals = p
        flat = sent.reshape(-1)
        out = torch.zeros(flat.numel(), numel, dtype=vals.dtype, device=vals.device)
        out[flat] = vals / self.p
        out = out.reshape(*sent.shape, numel)
        return out if dtype is None else out.to(dtype)
