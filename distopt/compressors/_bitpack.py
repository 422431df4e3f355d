"""Pack small unsigned codes into bytes, so a payload's size is its real wire size.

Codes of width w in {1, 2, 4, 8} bits: 8/w codes per byte, little-endian within the byte.
Works on the last dimension of any ``[..., m]`` tensor.
"""
from __future__ import annotations

import torch
from torch import Tensor

WIDTHS = (1, 2, 4, 8)


def code_width(num_codes: int) -> int:
    """Smallest width in WIDTHS that holds ``num_codes`` distinct codes (16 beyond 256)."""
    for w in WIDTHS:
        if num_codes <= 1 << w:
            return w
    if num_codes <= 1 << 16:
        return 16
    raise ValueError(f"cannot pack {num_codes} distinct codes")


def pack(codes: Tensor, width: int) -> Tensor:
    """uint8 codes ``[..., m]`` (each < 2^width) -> uint8 ``[..., ceil(m*width/8)]``."""
    if width == 16:
        return codes.to(torch.int16)
    per = 8 // width
    m = codes.shape[-1]
    pad = (-m) % per
    c = codes.to(torch.uint8)
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.reshape(*c.shape[:-1], -1, per)
    if per == 1:
        return c.squeeze(-1).contiguous()
    shifts = torch.arange(0, 8, width, dtype=torch.uint8, device=c.device)
    c = torch.bitwise_left_shift(c, shifts)
    return c.sum(-1, dtype=torch.uint8)


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
