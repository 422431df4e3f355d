"""Sign compressors: signSGD's sign(x) and EF-signSGD's scaled sign (Karimireddy et al. 2019).

One bit per coordinate, bit-packed; sign(0) is sent as +1 (a bit cannot say 0). The scaled
version also sends ||x||_1/d in the input dtype, and is contractive with
alpha(x) = ||x||_1^2 / (d ||x||_2^2) >= 1/d -- an identity, since <sign(x), x> = ||x||_1.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from ..noise import Noise
from . import _bitpack
from .base import Compressor, Payload


def _pack_signs(rows: Tensor) -> Tensor:
    return _bitpack.pack((rows < 0).to(torch.uint8), 1)


def _unpack_signs(packed: Tensor, numel: int, dtype) -> Tensor:
    """+1 / -1 ``[..., numel]`` in ``dtype``."""
    neg = _bitpack.unpack(packed, 1, numel)
    out = neg.to(dtype)
    out *= -2.0
    out += 1.0
    return out


@dataclasses.dataclass(frozen=True)
class Sign(Compressor):
    """sign(x): biased and not contractive (wrong scale); use it with a method that rescales,
    or use scaled_sign."""

    name: ClassVar[str] = "sign"
    contractive: ClassVar[bool] = False
    formula: ClassVar[str] = "not contractive (no alpha): use scaled_sign for theory"
    bits_per_coord: ClassVar[str] = "1"
    summary: ClassVar[str] = "signSGD: one bit per coordinate"

    def alpha(self, d: int) -> float:
        raise ValueError("sign is not contractive (its output has the wrong scale), so it has no alpha; "
                         "use 'scaled_sign' (alpha >= 1/d) or give a numeric --lr")

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        rows, lead = self._start(x)
        packed = _pack_signs(rows)
        return (packed.reshape(*lead, packed.shape[-1]),)

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        return _unpack_signs(p[0], numel, dtype or torch.float32)


@dataclasses.dataclass(frozen=True)
class ScaledSign(Compressor):
    """(||x||_1 / d) sign(x) (EF-signSGD). alpha(x) = ||x||_1^2/(d ||x||^2) >= 1/d."""

    name: ClassVar[str] = "scaled_sign"
    formula: ClassVar[str] = "alpha = ||x||_1^2/(d||x||_2^2) >= 1/d"
    bits_per_coord: ClassVar[str] = "1, + one float per vector"
    summary: ClassVar[str] = "EF-signSGD: l1-scaled sign"

    def alpha(self, d: int) -> float:
        return 1.0 / d

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        rows, lead = self._start(x)
        # the scale travels in float32 (float64 for float64 input): a 16-bit scale would break
        # the exact contraction identity
        scale = rows.abs().sum(dim=1, dtype=torch.float64 if rows.dtype == torch.float64 else torch.float32)
        scale /= rows.shape[1]
        packed = _pack_signs(rows)
        return packed.reshape(*lead, packed.shape[-1]), scale.reshape(lead)

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        packed, scale = p
        out = _unpack_signs(packed, numel, scale.dtype)
        out *= scale.unsqueeze(-1)
        return out.to(dtype or scale.dtype)
