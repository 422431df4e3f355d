"""Identity and floating-point casts: the no-compression baseline and torch's fp16/bf16 hooks."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from ..noise import Noise
from .base import Compressor, Payload


@dataclasses.dataclass(frozen=True)
class Identity(Compressor):
    """C(x) = x. alpha = 1, omega = 0; d floats on the wire."""

    name: ClassVar[str] = "identity"
    unbiased: ClassVar[bool] = True
    summable: ClassVar[bool] = True
    formula: ClassVar[str] = "alpha = 1 (omega = 0)"
    bits_per_coord: ClassVar[str] = "dtype width (32 for float32)"
    summary: ClassVar[str] = "no compression"

    def omega(self, d: int) -> float:
        return 0.0

    def alpha(self, d: int) -> float:
        return 1.0

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        self._start(x)
        return (x,)

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        return p[0] if dtype is None else p[0].to(dtype)


_HALF_ALPHA = {"fp16": 1.0 - 2.0**-20, "bf16": 1.0 - 2.0**-15}


@dataclasses.dataclass(frozen=True)
class _Cast(Compressor):
    """Round to a 16-bit float. ``scaled=true`` (default) first divides each vector by a power
    of two so its largest entry sits in (2^13, 2^14]: no overflow, exact rescaling, 16 extra
    bits per vector (the exponent). ``scaled=false`` is a plain cast like torch's
    ``fp16_compress_hook``: summable, but values beyond the format's range become Inf.

    Round-to-nearest is deterministic and slightly biased: alpha = 1 - 2^-20 (fp16, relative
    rounding error 2^-11) or 1 - 2^-15 (bf16, 2^-8), with margin for subnormals -- for the
    scaled cast, whose largest entry is always in the normal range. A plain cast has no alpha:
    an entry below the format's smallest normal (fp16: 6.1e-5) keeps only its absolute error
    2^-25, so x = 3e-8 comes back as 6e-8 (error ~ |x|), and entries beyond 65504 overflow.
    """

    scaled: bool = True

    unbiased: ClassVar[bool] = False
    bits_per_coord: ClassVar[str] = "16 (+16 per vector if scaled)"
    _dtype: ClassVar[torch.dtype] = torch.float16

    @property
    def summable(self) -> bool:  # type: ignore[override]
        return not self.scaled

    @property
    def contractive(self) -> bool:  # type: ignore[override]
        return self.scaled

    def alpha(self, d: int) -> float:
        if not self.scaled:
            raise ValueError(f"{self.name}:scaled=false (a plain cast) has no alpha: entries below the format's "
                             "smallest normal lose their relative precision (underflow); use "
                             f"'{self.name}' (power-of-two scaled) for theory stepsizes")
        return _HALF_ALPHA[self.name]

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        rows, lead = self._start(x)
        if not self.scaled:
            return (x.to(self._dtype),)
        amax = rows.abs().amax(dim=1).to(torch.float64)  # [N]
        # exponent e with amax / 2^e in (2^13, 2^14]; 0 for a zero vector
        e = torch.where(amax > 0, torch.ceil(torch.log2(amax.clamp_min(1e-300))) - 14, torch.zeros_like(amax))
        vals = rows.to(torch.float64) * torch.exp2(-e).unsqueeze(1)  # exact: power of two, float64 range
        return (vals.to(self._dtype).reshape(*lead, -1), e.to(torch.int16).reshape(lead))

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        dtype = dtype or torch.float32
        if not self.scaled:
            return p[0].to(dtype)
        vals, e = p
        return (vals.to(torch.float64) * torch.exp2(e.to(torch.float64)).unsqueeze(-1)).to(dtype)


@dataclasses.dataclass(frozen=True)
class FP16(_Cast):
    name: ClassVar[str] = "fp16"
    formula: ClassVar[str] = "alpha = 1 - 2^-20 (round to nearest, 11-bit significand); scaled=false: none (underflow)"
    summary: ClassVar[str] = "cast to float16 (power-of-two scaled unless scaled=false)"
    _dtype: ClassVar[torch.dtype] = torch.float16


@dataclasses.dataclass(frozen=True)
class BF16(_Cast):
    name: ClassVar[str] = "bf16"
    formula: ClassVar[str] = "alpha = 1 - 2^-15 (round to nearest, 8-bit significand); scaled=false: none (underflow)"
    summary: ClassVar[str] = "cast to bfloat16 (power-of-two scaled unless scaled=false)"
    _dtype: ClassVar[torch.dtype] = torch.bfloat16
