"""Low-rank compressors: exact rank-r SVD ("Rank-K" in FL_PyTorch) and PowerSGD.

A flat vector ``[d]`` is zero-padded and reshaped to ``A x B`` with A = ``rows`` (default
ceil(sqrt(d)), as FL_PyTorch does) and B = ceil(d / A). The payload is the two factors,
r(A+B) values.

* ``lowrank``: best rank-r approximation (truncated SVD). Biased, deterministic,
  alpha = r / min(A, B) (Eckart-Young: the r largest of min(A,B) squared singular values
  carry at least that fraction of ||x||^2).
* ``powersgd`` (Vogels et al. 2019): one power iteration P = orth(M Q), Q' = M^T P,
  C(M) = P Q'^T, warm-started from the previous Q' (explicit state). No guaranteed alpha.
  Q starts from N(0, 1) draws shared by all workers (as torch's hook does), so the first
  round is identical to the all-reduce variant. This compressor runs per worker; it is the
  per-worker analysis of PowerSGD, not torch's two all-reduces (see distopt.ddp).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional

import torch
from torch import Tensor

from ..noise import STREAM_INIT, Noise, normal
from .base import Compressor, Payload


def matrix_shape(d: int, rows: Optional[int] = None) -> tuple[int, int]:
    a = rows if rows is not None else max(1, math.isqrt(d - 1) + 1 if d > 1 else 1)
    return a, -(-d // a)


def _as_matrix(rows_: Tensor, a: int, b: int) -> Tensor:
    """``[N, d]`` -> ``[N, A, B]`` zero-padded, in a dtype linalg accepts."""
    work = rows_ if rows_.dtype in (torch.float32, torch.float64) else rows_.float()
    pad = a * b - work.shape[1]
    if pad:
        work = torch.nn.functional.pad(work, (0, pad))
    return work.reshape(work.shape[0], a, b)


@dataclasses.dataclass(frozen=True)
class _LowRankBase(Compressor):
    rank: int = 1
    rows: Optional[int] = None

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"{self.name}: rank must be >= 1, got rank={self.rank}")
        if self.rows is not None and self.rows < 1:
            raise ValueError(f"{self.name}: rows must be >= 1, got rows={self.rows}")

    def shape(self, d: int) -> tuple[int, int]:
        return matrix_shape(d, self.rows)

    def validate(self, d: int) -> None:
        super().validate(d)
        if self.rows is not None and self.rows > d:
            raise ValueError(f"{self.name}: rows={self.rows} exceeds d={d}; use rows <= d or leave it unset")

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        pf, qf = p  # [..., A, r], [..., B, r]
        m = pf @ qf.transpose(-1, -2)  # [..., A, B]
        out = m.reshape(*m.shape[:-2], -1)[..., :numel]
        return out.to(dtype or pf.dtype)


@dataclasses.dataclass(frozen=True)
class LowRank(_LowRankBase):
    name: ClassVar[str] = "lowrank"
    formula: ClassVar[str] = "alpha = r/min(A,B), A x B the reshaped matrix"
    bits_per_coord: ClassVar[str] = "32 r (A+B) / d"
    summary: ClassVar[str] = "exact rank-r SVD of the reshaped vector"

    def alpha(self, d: int) -> float:
        a, b = self.shape(d)
        return min(1.0, self.rank / min(a, b))

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        rows_, lead = self._start(x)
        a, b = self.shape(rows_.shape[1])
        m = _as_matrix(rows_, a, b)
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        r = min(self.rank, s.shape[-1])
        pf = u[..., :r] * s[..., None, :r]  # [N, A, r]
        qf = vh[..., :r, :].transpose(-1, -2)  # [N, B, r]
        dt = x.dtype
        return pf.to(dt).reshape(*lead, a, r), qf.to(dt).reshape(*lead, b, r)


@dataclasses.dataclass(frozen=True)
class PowerSGD(_LowRankBase):
    name: ClassVar[str] = "powersgd"
    random: ClassVar[bool] = True
    contractive: ClassVar[bool] = False
    formula: ClassVar[str] = "no guaranteed alpha (use lowrank for theory)"
    bits_per_coord: ClassVar[str] = "32 r (A+B) / d"
    summary: ClassVar[str] = "rank-r power iteration with warm start (state: Q)"

    def alpha(self, d: int) -> float:
        raise ValueError("powersgd has no guaranteed alpha; for theory stepsizes use 'lowrank:rank=r' "
                         "(exact SVD, alpha = r/min(A,B)) or give a numeric --lr")

    def init_state(self, x: Tensor, rng: Noise | None = None) -> tuple:
        """Q ``[..., B, r]``: N(0,1) draws shared by all workers."""
        rng = self._need_rng(rng)
        rows_, lead = self._start(x)
        a, b = self.shape(rows_.shape[1])
        r = min(self.rank, a, b)
        q = normal(rng.shared(), b * r, STREAM_INIT, torch.float64, rows_.device)[0]  # [B*r]
        q = q.reshape(b, r).to(torch.float64 if rows_.dtype == torch.float64 else torch.float32)
        return (q.expand(*lead, b, r).clone(),)

    def apply(self, x: Tensor, state: tuple, rng: Noise | None = None) -> tuple[Payload, tuple]:
        rows_, lead = self._start(x)
        a, b = self.shape(rows_.shape[1])
        m = _as_matrix(rows_, a, b)  # [N, A, B]
        q = state[0].reshape(m.shape[0], b, -1).to(m.dtype)
        p = torch.linalg.qr(m @ q).Q  # [N, A, r] orthonormal columns
        q_new = m.transpose(1, 2) @ p  # [N, B, r]
        r = p.shape[-1]
        dt = x.dtype
        payload = (p.to(dt).reshape(*lead, a, r), q_new.to(dt).reshape(*lead, b, r))
        return payload, (q_new.reshape(*lead, b, r),)

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        return self.apply(x, self.init_state(x, rng), rng)[0]
