"""Unbiased stochastic quantizers: QSGD / random dithering, natural compression, natural dithering.

All three round each coordinate, relative to a scale, to one of two neighbouring levels with
the probabilities that make the result unbiased (specs/ef-family.md section 2):

* QSGD (Alistarh et al. 2017) / random dithering: levels l/s, l = 0..s, of |x_j|/||x||_p.
  omega = min(d/s^2, sqrt(d)/s) for the 2-norm (the QSGD bound); min(d/(4s^2), sqrt(d)/s) for
  the inf-norm (per-coordinate variance <= min(1/4, u_j s)/s^2 * ||x||_inf^2).
* Natural compression (Horvath et al. 2019): |x_j| to a neighbouring power of two,
  omega = 1/8. On float32 the rounding compares 23 random bits with the 23 mantissa bits, so
  it is exactly unbiased; the payload is an 8-bit exponent and a sign bit: 9 bits/coord.
* Natural dithering (Horvath et al. 2019): levels 0, 2^(1-s), ..., 1/2, 1 of |x_j|/||x||_p,
  omega = 1/8 + d^(1/r)/2^(s-1) * min(1, d^(1/r)/2^(s-1)), r = min(p, 2).

Codes (level index and sign) are bit-packed (see _bitpack), so ``bits`` is the real size.
Random draws come from a 24-bit uniform grid: rounding probabilities are exact to 2^-24.
(FL_PyTorch's standard dithering leaves omega = 0 and its natural dithering overwrites the
quantized value; neither quirk is copied here.)
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..noise import STREAM_ROUNDING, Noise
from . import _bitpack
from ._chunked import chunks, decode
from .base import Compressor, Payload, check_finite

__all__ = ["QSGD", "Dither", "Natural", "NaturalDither"]


def _norm(rows: Tensor, p: float) -> Tensor:
    """Per-row p-norm ``[N, 1]`` in the row dtype (float32 at least). Recomputed in float64
    when float32 squares overflow (|x| > ~1e19) or all underflow (|x| < ~1e-19)."""
    r = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()
    if p == math.inf:  # max |x| = max(-min x, max x): one pass, no |x| temporary
        # (torch reduces one long row much faster as a whole tensor than along dim 1)
        lo, hi = torch.aminmax(r) if r.shape[0] == 1 else torch.aminmax(r, dim=1)
        return torch.maximum(-lo, hi).reshape(-1, 1)
    norm = torch.linalg.vector_norm(r, ord=p, dim=1, keepdim=True)
    if r.dtype == torch.float32:
        bad = ~torch.isfinite(norm)
        zero = norm == 0
        if bool(zero.any()):  # a pass over x only when some norm is 0
            bad |= zero & (r != 0).any(dim=1, keepdim=True)
        if bool(bad.any()):
            norm = torch.linalg.vector_norm(r, ord=p, dim=1, keepdim=True, dtype=torch.float64).to(r.dtype)
    return norm


def _work(rows: Tensor) -> Tensor:
    return rows if rows.dtype in (torch.float32, torch.float64) else rows.float()


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _signed_levels(width: int) -> Tensor:
    """Decoding table of the codes 2*level + signbit: code -> (-1)^signbit * level, ``[2^width]``."""
    c = torch.arange(1 << width)
    return ((1 - 2 * (c & 1)) * (c >> 1)).to(torch.int8 if width <= 8 else torch.int16)


def _signed_codes(level: Tensor, rows: Tensor) -> Tensor:
    """code = 2*level + signbit (uint8 or int64 for wide codes)."""
    code = level.to(torch.int64 if level.dtype == torch.int64 else torch.int32)
    code <<= 1
    code |= (rows < 0).to(code.dtype)
    return code


def _pack_payload(norm: Tensor, code: Tensor, num_codes: int, lead) -> Payload:
    w = _bitpack.code_width(num_codes)
    packed = _bitpack.pack(code.to(torch.uint8) if w <= 8 else code, w)
    return packed.reshape(*lead, packed.shape[-1]), norm.reshape(lead)


def _unpack(p: Payload, numel: int, num_codes: int) -> tuple[Tensor, Tensor, Tensor]:
    packed, norm = p
    w = _bitpack.code_width(num_codes)
    code = _bitpack.unpack(packed, w, numel).to(torch.int64)
    sign = 1 - 2 * (code & 1)
    return code >> 1, sign, norm


@dataclasses.dataclass(frozen=True)
class _UniformDither(Compressor):
    """s uniform levels l/s of |x_j|/||x||_p (subclasses fix p)."""

    levels: int = 4

    unbiased: ClassVar[bool] = True
    random: ClassVar[bool] = True
    bits_per_coord: ClassVar[str] = "packed (1 + log2(s+1)) rounded up to 1|2|4|8, + 32 per vector"
    _p: ClassVar[float] = 2.0

    def __post_init__(self):
        if not 1 <= self.levels <= 32767:
            raise ValueError(f"{self.name}: levels must be in [1, 32767], got levels={self.levels}")

    @property
    def _norm_p(self) -> float:
        return self._p

    def omega(self, d: int) -> float:
        s = self.levels
        if self._norm_p == math.inf:
            return min(d / (4 * s * s), math.sqrt(d) / s)
        return min(d / (s * s), math.sqrt(d) / s)

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        """level = floor(v) + [u < frac(v)] for v = s |x_j| / ||x||, u uniform on the 2^-24 grid;
        code = 2 level + signbit, packed. Piece by piece (see _chunked)."""
        rng = self._need_rng(rng)
        rows, lead = self._start(x, check=False)
        n, d = rows.shape
        wd = _work_dtype(rows.dtype)
        norm = _norm(rows, self._norm_p)  # [N, 1]
        if not bool(torch.isfinite(norm).all()):  # inf or NaN in x, or a float64 norm that overflows
            check_finite(self.name, rows)
        scale = torch.where(norm > 0, self.levels / norm, torch.zeros_like(norm))  # |x| * scale in [0, s]
        stream = self._stream(rng, rows, STREAM_ROUNDING)
        width = _bitpack.code_width(2 * self.levels + 2)
        per = _bitpack.codes_per_byte(width)
        packed = torch.empty(n, -(-d // per), dtype=torch.uint8 if width <= 8 else torch.int16, device=rows.device)
        for c in chunks(n, d, rows.device):
            x = c.like("x", rows[c.rows, c.cols], wd)  # [r, w]
            v = torch.abs(x, out=c.buf("v", wd))
            v *= scale[c.rows]
            level = torch.floor(v, out=c.buf("level", wd))
            v -= level  # fractional part: the probability of rounding up
            v *= 2.0**24  # F = frac 2^24 (exact); with u = m 2^-24: u < frac iff m < F
            m = stream.fill_(c.buf("m", torch.int32), c.cols.start, c.buf("tmp", torch.int32), c.rows)
            m >>= 8
            m &= 0xFFFFFF  # 24 uniform bits
            # comparisons into bool are slow passes; F - m > 0 iff up, and then ceil(clamp(F - m, 0, 1)) = 1
            up = torch.sub(v, c.buf("tmp", wd).copy_(m), out=c.buf("tmp", wd))
            level += up.clamp_(0, 1).ceil_()
            level.clamp_(max=self.levels)
            neg = torch.neg(x, out=v).clamp_(0, 1).ceil_()  # [x < 0], likewise (-0.0 gives 0)
            code = c.buf("m", torch.int16 if width <= 8 else torch.int32, per=per)  # narrow: cheaper to pack
            code[:, : c.w].copy_(torch.add(neg, level, alpha=2, out=level))  # 2 level + [x < 0]
            _bitpack.pack_into(code, width, packed[c.rows, c.packed(per)])
        return packed.reshape(*lead, packed.shape[-1]), norm.reshape(lead)

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        packed, norm = p
        width = _bitpack.code_width(2 * self.levels + 2)
        return decode(packed, width, _signed_levels(width), numel, dtype or torch.float32, norm / self.levels)


@dataclasses.dataclass(frozen=True)
class QSGD(_UniformDither):
    """QSGD (Alistarh et al. 2017): random dithering with s levels of |x_j|/||x||_2."""

    name: ClassVar[str] = "qsgd"
    formula: ClassVar[str] = "omega = min(d/s^2, sqrt(d)/s)"
    summary: ClassVar[str] = "QSGD: s uniform levels of |x|/||x||_2"


@dataclasses.dataclass(frozen=True)
class Dither(_UniformDither):
    """Random dithering with s uniform levels of |x_j|/||x||_p, p in {2, inf}."""

    norm: Literal["2", "inf"] = "2"

    name: ClassVar[str] = "dither"
    formula: ClassVar[str] = "omega = min(d/s^2, sqrt(d)/s) (2-norm); min(d/(4s^2), sqrt(d)/s) (inf-norm)"
    summary: ClassVar[str] = "random dithering, uniform levels (norm=2|inf)"

    @property
    def _norm_p(self) -> float:
        return math.inf if self.norm == "inf" else 2.0


@dataclasses.dataclass(frozen=True)
class NaturalDither(Compressor):
    """Natural dithering: levels 0, 2^(1-s), ..., 1/2, 1 of |x_j|/||x||_p."""

    levels: int = 8
    p: float = 2.0

    name: ClassVar[str] = "natural_dither"
    unbiased: ClassVar[bool] = True
    random: ClassVar[bool] = True
    formula: ClassVar[str] = "omega = 1/8 + d^(1/r)/2^(s-1) * min(1, d^(1/r)/2^(s-1)), r = min(p, 2)"
    bits_per_coord: ClassVar[str] = "packed (1 + log2(s+1)) rounded up to 1|2|4|8, + 32 per vector"
    summary: ClassVar[str] = "natural dithering: power-of-two levels of |x|/||x||_p"

    def __post_init__(self):
        if not 1 <= self.levels <= 126:
            raise ValueError(f"natural_dither: levels must be in [1, 126], got levels={self.levels}")
        if not self.p >= 1:
            raise ValueError(f"natural_dither: p must be >= 1 (or inf), got p={self.p}")

    def omega(self, d: int) -> float:
        r = min(self.p, 2.0)
        t = d ** (1.0 / r) / 2 ** (self.levels - 1)
        return 1.0 / 8.0 + t * min(1.0, t)

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        rng = self._need_rng(rng)
        rows, lead = self._start(x)
        work = _work(rows)
        s = self.levels
        norm = _norm(work, self.p)
        u = work.abs() * torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))  # [N, d] in [0, 1]
        u.clamp_(max=1.0)
        mant, expo = torch.frexp(u)  # u = mant * 2^expo, mant in [0.5, 1)
        low = 2.0 ** (1 - s)
        small = u < low
        # interval [2^(E-1), 2^E) -> level index j = E - 1 + s, p_up = 2*mant - 1;
        # below the smallest level: interval [0, 2^(1-s)) -> j = 0, p_up = u / 2^(1-s)
        j = torch.where(small, torch.zeros_like(expo), expo - 1 + s)
        p_up = torch.where(small, u / low, 2.0 * mant - 1.0)
        r = self._uniform(rng, rows, STREAM_ROUNDING, p_up.dtype)
        j += (r < p_up).to(j.dtype)
        j.clamp_(max=s)
        code = _signed_codes(j, rows)
        return _pack_payload(norm.squeeze(1), code, 2 * s + 2, lead)

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        j, sign, norm = _unpack(p, numel, 2 * self.levels + 2)
        mag = torch.where(j > 0, torch.exp2((j - self.levels).to(norm.dtype)), torch.zeros((), dtype=norm.dtype))
        return (sign.to(norm.dtype) * mag * norm.unsqueeze(-1)).to(dtype or torch.float32)


# largest unbiased exponent a decompressed value may take in each output dtype (biased, float32)
_MAX_EXP32 = {torch.float16: 127 + 15, torch.bfloat16: 254, torch.float32: 254}


@dataclasses.dataclass(frozen=True)
class Natural(Compressor):
    """Natural compression (Horvath et al. 2019): |x_j| -> 2^floor(log2|x_j|) or twice that,
    with the unbiased probabilities. omega = 1/8.

    float32 (and 16-bit inputs, computed in float32): an 8-bit exponent + 1 sign bit per
    coordinate (9 bits), rounding decided by comparing 23 random bits with the mantissa:
    exactly unbiased, subnormals included. float64: 11-bit exponents sent as int16 (17 bits).
    """

    name: ClassVar[str] = "natural"
    unbiased: ClassVar[bool] = True
    random: ClassVar[bool] = True
    formula: ClassVar[str] = "omega = 1/8"
    bits_per_coord: ClassVar[str] = "9 (8-bit exponent + sign); 17 for float64"
    summary: ClassVar[str] = "stochastic rounding to powers of two"

    def omega(self, d: int) -> float:
        return 1.0 / 8.0

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        rng = self._need_rng(rng)
        rows, lead = self._start(x)
        d = rows.shape[1]
        if rows.dtype == torch.float64:
            return self._compress64(rows, rng, lead)
        n = rows.shape[0]
        stream = self._stream(rng, rows, STREAM_ROUNDING)
        e8 = torch.empty(n, d, dtype=torch.uint8, device=rows.device)
        signs = torch.empty(n, -(-d // 8), dtype=torch.uint8, device=rows.device)
        for c in chunks(n, d, rows.device):  # piece by piece: see _chunked
            xi = c.like("x", rows[c.rows, c.cols], torch.float32).view(torch.int32)
            neg = c.buf("neg", torch.bool, per=8)
            torch.lt(xi, 0, out=neg[:, : c.w])
            _bitpack.pack_into(neg, 1, signs[c.rows, c.packed(8)])
            rnd = stream.fill_(c.buf("rnd", torch.int32), c.cols.start, c.buf("tmp", torch.int32), c.rows)
            rnd >>= 9
            rnd &= 0x7FFFFF  # 23 uniform bits; round up iff rnd < mantissa (probability mantissa / 2^23)
            rnd -= torch.bitwise_and(xi, 0x7FFFFF, out=c.buf("tmp", torch.int32))
            rnd >>= 31  # -1 where rounding up, else 0 (no slow pass into bool)
            e = torch.bitwise_right_shift(xi, 23, out=c.buf("tmp", torch.int32))
            e &= 0xFF
            e -= rnd
            e.clamp_(max=_MAX_EXP32[rows.dtype])
            e8[c.rows, c.cols].copy_(e)
        return e8.reshape(*lead, d), signs.reshape(*lead, signs.shape[-1])

    def _compress64(self, rows: Tensor, rng: Noise, lead) -> Payload:
        d = rows.shape[1]
        mant, expo = torch.frexp(rows.abs())  # |x| = mant 2^expo, mant in [0.5, 1)
        p_up = 2.0 * mant - 1.0  # |x| in [2^(e-1), 2^e): up with prob (|x| - 2^(e-1)) / 2^(e-1)
        u = self._uniform(rng, rows, STREAM_ROUNDING, torch.float64)
        e = expo - 1 + (u < p_up).to(expo.dtype)
        e = torch.where(rows == 0, torch.full_like(e, -32768), e).to(torch.int16)
        signs = _bitpack.pack((rows < 0).to(torch.uint8), 1)
        return e.reshape(*lead, d), signs.reshape(*lead, signs.shape[-1])

    def decompress(self, p, numel, rng=None, dtype=None) -> Tensor:
        e, packed = p
        if e.dtype == torch.int16:  # float64 path
            neg = _bitpack.unpack(packed, 1, numel).to(torch.bool)
            val = torch.where(e == -32768, 0.0, torch.exp2(e.to(torch.float64)))
            return torch.where(neg, -val, val).to(dtype or torch.float64)
        lead = e.shape[:-1]
        e, packed = e.reshape(-1, numel), packed.reshape(-1, packed.shape[-1])
        n = e.shape[0]
        dtype = dtype or torch.float32
        out = torch.empty(n, numel, dtype=dtype, device=e.device)
        table = _bitpack.byte_table(torch.tensor([1, -1], dtype=torch.int8, device=e.device), 1)  # bit -> sign
        for c in chunks(n, numel, e.device):  # piece by piece: see _chunked
            o = out[c.rows, c.cols]
            f = o if dtype == torch.float32 else c.buf("f", torch.float32)
            bits = f.view(torch.int32)
            bits.copy_(e[c.rows, c.cols])
            bits <<= 23  # 2^(e - 127) (0 for e = 0)
            sign = c.buf("sign", torch.int8, per=8)
            _bitpack.lookup_into(packed[c.rows, c.packed(8)], 1, table, sign, c.buf("idx", torch.int32, width=sign.shape[1] // 8))
            f *= c.buf("s", torch.float32).copy_(sign[:, : c.w])  # exact negation where the sign bit is set
            if f is not o:
                o.copy_(f)
        return out.reshape(*lead, numel)
