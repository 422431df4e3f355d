"""Pack small unsigned codes into bytes, so a payload's size is its real wire size.

Codes of width w in {1, 2, 4, 8} bits: 8/w codes per byte, little-endian within the byte.
Works on the last dimension of any ``[..., m]`` tensor. Widths past 8 bits travel as int16.

The chunked compressors (see _chunked) use the in-place forms: :func:`pack_into` packs a
piece with one integer multiply per machine word, and :func:`lookup_into` decodes a piece
with one table gather per byte.
"""
from __future__ import annotations

import torch
from torch import Tensor

WIDTHS = (1, 2, 4, 8)
_UNIT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # an element of n bytes


def code_width(num_codes: int) -> int:
    """Smallest width in WIDTHS that holds ``num_codes`` distinct codes (16 beyond 256)."""
    for w in WIDTHS:
        if num_codes <= 1 << w:
            return w
    if num_codes <= 1 << 16:
        return 16
    raise ValueError(f"cannot pack {num_codes} distinct codes")


def codes_per_byte(width: int) -> int:
    return 8 // width if width <= 8 else 1


def pack_into(codes: Tensor, width: int, out: Tensor) -> Tensor:
    """Pack codes ``[..., m]`` (each < 2^width; m a multiple of 8/width) into ``out``
    (``[..., m*width/8]`` uint8; int16 for width 16). ``codes``: contiguous, of an integer
    dtype (or bool) of k bytes; overwritten.

    The per = 8/w codes of a byte sit at bits 8k i of a word of W = k per bytes (int16, int32
    or int64); multiplying by sum_i 2^(8(W-1) + (w - 8k) i) moves code i to bit 8(W-1) + w i,
    i.e. all of them into the word's top byte, in order. The other products land past the
    word's end or in disjoint bit ranges below the top byte, so nothing carries into it
    (tests check every byte value). Words wider than 8 bytes: the codes are narrowed first.
    """
    if width >= 8:
        return out.copy_(codes)  # integer narrowing keeps the low bits (width 16: int32 -> int16)
    per = 8 // width
    k = codes.element_size()
    if k * per > 8:
        codes, k = codes.to(torch.uint8), 1
    words = codes.view(_UNIT[k]).view(_UNIT[k * per])
    words *= sum(1 << (8 * (k * per - 1) + (width - 8 * k) * i) for i in range(per))
    words >>= 8 * (k * per - 1)
    return out.copy_(words)  # integer narrowing keeps the low byte: the top byte of the word


def pack(codes: Tensor, width: int) -> Tensor:
    """uint8 codes ``[..., m]`` (each < 2^width) -> uint8 ``[..., ceil(m*width/8)]``."""
    if width == 16:
        return codes.to(torch.int16)
    per = 8 // width
    m = codes.shape[-1]
    c = torch.nn.functional.pad(codes.to(torch.uint8), (0, (-m) % per)).contiguous()
    out = torch.empty(*c.shape[:-1], c.shape[-1] // per, dtype=torch.uint8, device=c.device)
    return pack_into(c, width, out)


def unpack(packed: Tensor, width: int, m: int) -> Tensor:
    """Inverse of :func:`pack`: -> uint8 codes ``[..., m]`` (int64 codes for width 16)."""
    if width == 16:
        return packed.to(torch.int64) & 0xFFFF
    per = 8 // width
    if per == 1:
        return packed[..., :m]
    shifts = torch.arange(0, 8, width, dtype=torch.uint8, device=packed.device)
    c = torch.bitwise_right_shift(packed.unsqueeze(-1), shifts)
    c &= (1 << width) - 1
    return c.reshape(*packed.shape[:-1], -1)[..., :m]


def byte_table(table: Tensor, width: int) -> Tensor:
    """For :func:`lookup_into`: ``table[code]`` (``[2^width]``, a 1- or 2-byte dtype) spread over
    every packed byte value: one element (of per * itemsize bytes) per byte value."""
    if width == 16:
        return table
    per = 8 // width
    byte = torch.arange(256, device=table.device)
    codes = (byte.unsqueeze(1) >> torch.arange(0, 8, width, device=table.device)) & ((1 << width) - 1)
    return table[codes].reshape(-1).view(_UNIT[per * table.element_size()])  # [256]


def lookup_into(packed: Tensor, width: int, btable: Tensor, out: Tensor, idx: Tensor) -> Tensor:
    """``out[..., j] = table[code j]`` for the codes in ``packed`` (``[r, mp]``), one gather per
    byte. ``btable`` from :func:`byte_table`; ``out``: contiguous ``[r, mp * 8/width]`` of the
    table's dtype; ``idx``: int32 scratch ``[r, mp]``."""
    idx.copy_(packed)
    if width == 16:
        idx &= 0xFFFF  # int16 codes are unsigned
    torch.index_select(btable, 0, idx.view(-1), out=out.view(-1).view(btable.dtype))
    return out
