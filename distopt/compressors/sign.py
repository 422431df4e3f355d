"""Sign compressors: signSGD's sign(x) and EF-signSGD's scaled sign (Karimireddy et al. 2019).

One bit per coordinate, bit-packed; sign(0) is sent as +1 (a bit cannot say 0). The scaled
version also sends ||x||_1/d in the input dtype, and is contractive with
alpha(x) = ||x||_1^2 / (d ||x||_2^2) >= 1/d -- an identity, since <sign(x), x> = ||x||_1.

Both run piece by piece (see _chunked): a pass over x writes packed bits, a pass over the
bits writes the output; no full-size temporary.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from ..noise import Noise
from . import _bitpack
from ._chunked import SUM_BLOCK, block_sums_into, chunks, decode
from .base import Compressor, Payload

_SIGNS = torch.tensor([1, -1], dtype=torch.int8)  # bit -> sign


def _signs_and_l1(rows: Tensor, l1_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor | None]:
    """Packed sign bits ``[N, ceil(d/8)]`` of ``rows: [N, d]`` and, if ``l1_dtype`` is given,
    ||row||_1 ``[N]`` summed in that dtype."""
    n, d = rows.shape
    packed = torch.empty(n, -(-d // 8), dtype=torch.uint8, device=rows.device)
    blocks = None if l1_dtype is None else torch.empty(n, -(-d // SUM_BLOCK), dtype=l1_dtype, device=rows.device)
    for c in chunks(n, d, rows.device, scale=2):  # small live buffers: larger pieces
        x = rows[c.rows, c.cols]
        if blocks is not None:
            a = c.like("abs", x, l1_dtype)
            block_sums_into(torch.abs(a, out=c.buf("abs", l1_dtype)), blocks[c.rows, c.blocks])
        neg = c.buf("neg", torch.bool, per=8)
        torch.lt(x, 0, out=neg[:, : c.w])
        _bitpack.pack_into(neg, 1, packed[c.rows, c.packed(8)])
    return packed, None if blocks is None else blocks.sum(1)


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
        packed, _ = _signs_and_l1(rows)
        return (packed.reshape(*lead, packed.shape[-1]),)

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        return decode(p[0], 1, _SIGNS, numel, dtype or torch.float32)


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
        packed, scale = _signs_and_l1(rows, torch.float64 if rows.dtype == torch.float64 else torch.float32)
        scale /= rows.shape[1]
        return packed.reshape(*lead, packed.shape[-1]), scale.reshape(lead)

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        packed, scale = p
        return decode(packed, 1, _SIGNS, numel, dtype or scale.dtype, scale)
