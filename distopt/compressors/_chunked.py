"""Chunked evaluation of the elementwise compressors (sign, scaled sign, QSGD / dithering,
natural) and of Top-K's candidate pass.

Why: these compressors are a dozen elementwise passes plus a ~20-pass hash (distopt.noise).
Done on whole vectors, every pass allocates a fresh full-size temporary -- a page-faulting
allocation (~8 ms per 40 MB on the benchmark VM, about what a whole ``x.clone()`` costs) -- and
streams it through DRAM. Done on pieces of ~``CHUNK`` elements into scratch buffers that every
piece reuses, the working set stays in cache and only the outputs are fresh: a pass then costs
~0.4 ms per 10^7 float32 (see experiments/bench/compressors.py)::

    for c in chunks(n, d, x.device):            # the pieces of an [n, d] problem, in order
        v = torch.abs(x[c.rows, c.cols], out=c.buf("v", torch.float32))   # [r, w] scratch

A piece is a run of whole rows (d <= CHUNK) or a column range of one row (d > CHUNK), so the
matching slice of an ``[n, d]`` output, or of an ``[n, ceil(d / per)]`` packed one, is one
contiguous block. Column ranges start at multiples of ``ALIGN``: packed bytes never straddle
two pieces, and row sums (:func:`block_sums_into`) use column blocks that are the same whatever the
pieces, so a row's result never depends on how many rows are stacked with it.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from . import _bitpack

CHUNK = 1 << 19  # elements per piece (tests shrink it): QSGD keeps ~5 piece-sized buffers live,
# 10 MB of float32 that stay in a (shared) L3; at 1M it is ~20% slower, at 256K per-op overhead shows
SUM_BLOCK = 1 << 14  # columns per partial row sum: under torch's parallel grain (32768), so a
# block is always summed by one thread in one order, whether its row is alone or stacked
ALIGN = SUM_BLOCK  # column pieces start at multiples of this (a multiple of 8 codes per byte)


class Chunk:
    """One piece ``[rows, cols]`` of an ``[n, d]`` problem, with the scratch shared by all pieces."""

    __slots__ = ("rows", "cols", "r", "w", "_scratch", "_device")

    def __init__(self, rows: slice, cols: slice, scratch: dict, device):
        self.rows, self.cols = rows, cols
        self.r, self.w = rows.stop - rows.start, cols.stop - cols.start
        self._scratch, self._device = scratch, device

    def packed(self, per: int) -> slice:
        """This piece's columns of an ``[n, ceil(d / per)]`` packed tensor (per codes a byte)."""
        return slice(self.cols.start // per, self.cols.start // per + -(-self.w // per))

    @property
    def blocks(self) -> slice:
        """This piece's columns of an ``[n, ceil(d / SUM_BLOCK)]`` tensor of block sums."""
        return slice(self.cols.start // SUM_BLOCK, self.cols.start // SUM_BLOCK + -(-self.w // SUM_BLOCK))

    def like(self, name: str, x: Tensor, dtype: torch.dtype) -> Tensor:
        """``x`` (a piece of an input or output) if it has ``dtype``, else scratch of that dtype
        (holding a copy of ``x``): where to compute in ``dtype``."""
        if x.dtype == dtype:
            return x
        return self.buf(name, dtype).copy_(x)

    def buf(self, name: str, dtype: torch.dtype, per: int = 1, width: int | None = None) -> Tensor:
        """Contiguous scratch ``[r, width]`` (default: w rounded up to a multiple of ``per``;
        columns past w are zeroed, as packing pads with zero codes). Buffers are raw memory
        per name: the same name in another dtype reuses it (keep the working set small), and
        the next piece gets the same memory again: consume it before then."""
        wp = width if width is not None else -(-self.w // per) * per
        size = self.r * wp * dtype.itemsize
        raw = self._scratch.get(name)
        if raw is None or raw.numel() < size:
            raw = self._scratch[name] = torch.empty(size, dtype=torch.uint8, device=self._device)
        out = raw[:size].view(dtype).view(self.r, wp)
        if width is None and wp > self.w:
            out[:, self.w:] = 0
        return out


def chunks(n: int, d: int, device=None, scale: int = 1) -> Iterator[Chunk]:
    """The pieces of an ``[n, d]`` problem, row-major (see the module docstring), of about
    ``scale * CHUNK`` elements (a larger scale suits passes with fewer live buffers)."""
    scratch: dict = {}
    chunk = scale * CHUNK
    if d <= chunk:
        step = max(1, chunk // max(d, 1))
        for r0 in range(0, n, step):
            yield Chunk(slice(r0, min(n, r0 + step)), slice(0, d), scratch, device)
        return
    width = max(ALIGN, chunk // ALIGN * ALIGN)
    for r in range(n):
        for c0 in range(0, d, width):
            yield Chunk(slice(r, r + 1), slice(c0, min(d, c0 + width)), scratch, device)


def block_sums_into(v: Tensor, out: Tensor) -> Tensor:
    """Partial row sums of a piece ``v: [r, w]`` (contiguous) over column blocks of SUM_BLOCK,
    the last one shorter, into ``out: [r, ceil(w / B)]`` (``out[c.rows, c.blocks]`` of an
    ``[n, ceil(d / B)]`` tensor). Summed along rows, they give row sums with the same bits
    whether a row is alone or stacked with others. (A plain ``sum(dim=1)`` does not: torch
    splits one long row across threads, but not the rows of a stack.)"""
    r, w = v.shape
    q = w // SUM_BLOCK
    if q:
        torch.sum(v[:, : q * SUM_BLOCK].view(r, q, SUM_BLOCK), 2, out=out[:, :q])
    if w > q * SUM_BLOCK:
        torch.sum(v[:, q * SUM_BLOCK:], 1, keepdim=True, out=out[:, q:])
    return out


def decode(packed: Tensor, width: int, table: Tensor, numel: int, dtype: torch.dtype,
           scale: Tensor | None = None) -> Tensor:
    """Decode packed codes ``[..., ceil(numel * width / 8)]`` through a small integer table:
    ``table[code] * scale[...]`` as ``[..., numel]`` in ``dtype`` (the product is taken in the
    scale's dtype, then cast; no scale: ``table[code]`` cast to ``dtype``)."""
    lead = packed.shape[:-1]
    packed = packed.reshape(-1, packed.shape[-1])
    n = packed.shape[0]
    per = _bitpack.codes_per_byte(width)
    btable = _bitpack.byte_table(table.to(packed.device), width)
    step = None if scale is None else scale.reshape(-1, 1)
    out = torch.empty(n, numel, dtype=dtype, device=packed.device)
    for c in chunks(n, numel, packed.device, scale=2):  # small live buffers: larger pieces
        vals = c.buf("vals", table.dtype, per=per)
        idx = c.buf("idx", torch.int32, width=vals.shape[1] // per)
        _bitpack.lookup_into(packed[c.rows, c.packed(per)], width, btable, vals, idx)
        o = out[c.rows, c.cols]
        if step is None:
            o.copy_(vals[:, : c.w])
            continue
        f = o if dtype == step.dtype else c.buf("f", step.dtype)
        f.copy_(vals[:, : c.w])
        f *= step[c.rows]
        if f is not o:
            o.copy_(f)
    return out.reshape(*lead, numel)
