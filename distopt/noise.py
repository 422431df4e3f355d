"""Counter-based randomness: every draw is a pure function of (seed, step, worker, stream, index).

Why not ``torch.Generator``: a method must give the same iterates whether n workers are
simulated stacked on one tensor ``[n, d]``, run one per DDP rank, or one per Ray actor. A
stateful generator makes worker i's draws depend on how many numbers were drawn before it;
a counter-based hash does not. Draws for ``[n, d]`` are produced in one vectorized pass and
row i equals what worker i alone would draw (tests/test_noise.py checks it).

The hash is murmur3's 32-bit finalizer applied twice with key injection (a 2-round
keyed bijection of the counter). It is a statistical generator, not a cryptographic one.
All arithmetic is on int32 tensors and relies on two's-complement wrap-around of int32
multiplication, which torch gives on CPU and CUDA; right shifts are made logical by masking.

Speed: the hash is ~20 elementwise passes, so it is evaluated in place, piece by piece
(:meth:`Stream.fill_` on chunks of ~``CHUNK`` numbers with one reused scratch buffer): a fresh
full-size temporary per pass would cost a page-faulting allocation (~8 ms per 40 MB on a
typical VM) and a trip to DRAM, where a pass over a warm cache-sized piece costs ~0.4 ms per
10^7 numbers. Elementwise compressors call ``fill_`` inside their own chunk loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Noise", "Stream", "bits32", "uniform", "normal", "randint"]

_GOLD = -1640531535  # 0x9E3779B1 as int32: Weyl increment that spreads counters
_C1 = -2048144789  # 0x85EBCA6B
_C2 = -1028477387  # 0xC2B2AE35
_K2 = 0x68E31DA4

# stream ids: one per purpose, so draws for different purposes are independent
STREAM_INDICES = 1
STREAM_ROUNDING = 2
STREAM_INIT = 3
STREAM_BATCH = 4
STREAM_PARTICIPATION = 5
STREAM_DATA = 6
STREAM_NOISE = 7


CHUNK = 1 << 20  # numbers per piece when hashing in place (see the module docstring)


def _xorshift_(h: Tensor, k: int, tmp: Tensor) -> None:
    """``h ^= h >>> k`` (logical shift) in place on int32 ``h``; ``tmp``: scratch like ``h``."""
    torch.bitwise_right_shift(h, k, out=tmp)
    tmp &= (1 << (32 - k)) - 1
    h ^= tmp


def _mix_(h: Tensor, tmp: Tensor) -> None:
    """The middle of murmur3 fmix32 (multiply, xorshift 13, multiply), in place."""
    h *= _C1
    _xorshift_(h, 13, tmp)
    h *= _C2


def _fmix_(h: Tensor, tmp: Tensor) -> Tensor:
    """murmur3 fmix32, in place on int32 ``h`` (``tmp``: scratch of the same shape)."""
    _xorshift_(h, 16, tmp)
    _mix_(h, tmp)
    _xorshift_(h, 16, tmp)
    return h


def _lo_hi(v: int) -> tuple[int, int]:
    v &= (1 << 64) - 1
    lo, hi = v & 0xFFFFFFFF, v >> 32
    return (lo - (1 << 32) if lo >= 1 << 31 else lo), (hi - (1 << 32) if hi >= 1 << 31 else hi)


def _keys(seed: int, step: int, worker: Tensor, stream: int) -> tuple[Tensor, Tensor]:
    """Two int32 keys per worker, ``worker``: int32 ``[n]`` -> ``([n], [n])``."""
    h = worker.to(torch.int32) * _GOLD
    tmp = torch.empty_like(h)
    for part in (*_lo_hi(seed), *_lo_hi(step), *_lo_hi(stream)):
        h ^= part
        _fmix_(h, tmp)
        h += _GOLD
    k1 = h.clone()
    h ^= _K2
    _fmix_(h, tmp)
    return k1, h


@dataclass(frozen=True)
class Noise:
    """Where randomness comes from: ``(seed, step, worker)``; never the global RNG.

    ``worker`` is an int (one worker) or an int tensor ``[n]`` (a stacked batch, row i =
    worker ``worker[i]``). ``n_workers`` is known to schemes that couple workers (Perm-K).
    """

    seed: int
    step: int = 0
    worker: int | Tensor = 0
    n_workers: int | None = None

    def __post_init__(self):
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"Noise seed must be an int, got {self.seed!r}")

    @property
    def batched(self) -> bool:
        return isinstance(self.worker, Tensor)

    def workers(self) -> Tensor:
        w = self.worker
        return w.reshape(-1).to(torch.int32) if isinstance(w, Tensor) else torch.tensor([w], dtype=torch.int32)

    def at(self, step: int) -> "Noise":
        return Noise(self.seed, step, self.worker, self.n_workers)

    def fork(self, k: int) -> "Noise":
        """An independent family of draws (same step and workers), e.g. for a second
        compression in the same round (EF21+)."""
        return Noise((self.seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019 * (k + 1)) & ((1 << 63) - 1),
                     self.step, self.worker, self.n_workers)

    def shared(self) -> "Noise":
        """The same draws for every worker (e.g. a Rand-K mask shared by all, PowerSGD's Q)."""
        w = torch.zeros_like(self.worker) if isinstance(self.worker, Tensor) else 0
        return Noise(self.seed, self.step, w, self.n_workers)

    def bits32(self, numel: int, stream: int, device=None) -> Tensor:
        """int32 hash bits ``[rows, numel]`` (rows = number of workers, 1 if unbatched)."""
        return bits32(self, numel, stream, device)


class Stream:
    """One stream of every worker of a :class:`Noise`, keyed and ready to draw from.

    ``fill_(out, start)`` writes the bits of counters ``start .. start + c - 1`` into an int32
    ``out: [rows, c]`` (row i: worker i), so a caller can draw a long vector piece by piece
    into a reused buffer. Bits are ``fmix(fmix(j * GOLD ^ k1) ^ k2)`` (fmix = murmur3 fmix32).
    Written fmix = X B X, with X: h ^= h >>> 16 (an involution, linear over GF(2)) and B its
    middle, the two middle X cancel: fmix(fmix(a) ^ k2) = X B (B X a ^ X k2). So we store
    X k2 and make 20 passes instead of 26, bit for bit the same numbers.
    """

    __slots__ = ("k1", "xk2")

    def __init__(self, noise: Noise, stream: int, device=None):
        k1, k2 = _keys(noise.seed, noise.step, noise.workers(), stream)
        _xorshift_(k2, 16, torch.empty_like(k2))
        self.k1 = k1.unsqueeze(1).to(device)  # [rows, 1]
        self.xk2 = k2.unsqueeze(1).to(device)  # [rows, 1]: X k2

    @property
    def rows(self) -> int:
        return self.k1.shape[0]

    def fill_(self, out: Tensor, start: int, tmp: Tensor | None = None, rows: slice = slice(None)) -> Tensor:
        """int32 ``out: [r, c]`` <- bits of counters ``start ..`` for workers ``rows`` (in place).

        ``tmp``: int32 scratch of ``out``'s shape (allocated if not given)."""
        c = out.shape[1]
        if start + c > 1 << 31:
            raise ValueError(f"counter-based draws support up to 2^31 numbers per vector, asked {start + c}")
        tmp = torch.empty_like(out) if tmp is None else tmp
        j = tmp[0]  # tmp's first row holds j * GOLD, then serves as scratch
        torch.add(_weyl(c, out.device), _lo_hi(start * _GOLD)[0], out=j)
        torch.bitwise_xor(j, self.k1[rows], out=out)
        _xorshift_(out, 16, tmp)
        _mix_(out, tmp)
        out ^= self.xk2[rows]
        _mix_(out, tmp)
        _xorshift_(out, 16, tmp)
        return out


_WEYL: dict = {}  # device -> arange(n) * GOLD: a constant, kept because arange is a slow pass


def _weyl(c: int, device: torch.device) -> Tensor:
    """``arange(c) * GOLD`` (int32, wrapping); j * GOLD for j = start + i is this + start * GOLD."""
    base = _WEYL.get(device)
    if base is None or base.numel() < c:
        base = torch.arange(max(c, CHUNK), dtype=torch.int32, device=device)
        base *= _GOLD
        _WEYL[device] = base
    return base[:c]


def _pieces(numel: int, rows: int) -> range:
    """Starts of column pieces of ~CHUNK numbers (all rows together) covering ``range(numel)``."""
    return range(0, numel, max(1, CHUNK // max(rows, 1)))


def bits32(noise: Noise, numel: int, stream: int, device=None, start: int = 0) -> Tensor:
    if numel + start >= 1 << 31:
        raise ValueError(f"counter-based draws support up to 2^31 numbers per vector, asked {numel + start}")
    s = Stream(noise, stream, device)
    out = torch.empty((s.rows, numel), dtype=torch.int32, device=device)
    pieces = _pieces(numel, s.rows)
    tmp = torch.empty((s.rows, min(numel, pieces.step)), dtype=torch.int32, device=device)
    for c0 in pieces:
        c1 = min(numel, c0 + pieces.step)
        s.fill_(out[:, c0:c1], start + c0, tmp[:, : c1 - c0])
    return out


def uniform(noise: Noise, numel: int, stream: int, dtype=torch.float32, device=None) -> Tensor:
    """Uniform draws in [0, 1) on a 2^-24 grid, ``[rows, numel]``: (bits >>> 8) * 2^-24."""
    s = Stream(noise, stream, device)
    out = torch.empty((s.rows, numel), dtype=dtype, device=device)
    pieces = _pieces(numel, s.rows)
    h = torch.empty((s.rows, min(numel, pieces.step)), dtype=torch.int32, device=device)
    tmp = torch.empty_like(h)
    for c0 in pieces:
        c1 = min(numel, c0 + pieces.step)
        b = s.fill_(h[:, : c1 - c0], c0, tmp[:, : c1 - c0])
        torch.bitwise_right_shift(b, 8, out=b)
        b &= 0xFFFFFF
        o = out[:, c0:c1]
        o.copy_(b)
        o *= 2.0**-24
    return out


def randint(noise: Noise, numel: int, high: int, stream: int, device=None, start: int = 0) -> Tensor:
    """Integers in [0, high) by multiply-shift of 32 random bits (bias < high/2^32), int64."""
    if not 0 < high < 1 << 31:
        raise ValueError(f"randint high must be in [1, 2^31), got {high}")
    h = bits32(noise, numel, stream, device, start).to(torch.int64)
    h &= 0xFFFFFFFF
    h *= high
    h >>= 32
    return h


def normal(noise: Noise, numel: int, stream: int, dtype=torch.float32, device=None) -> Tensor:
    """Standard normal draws by Box-Muller, ``[rows, numel]``."""
    u = uniform(noise, 2 * numel, stream, torch.float64, device)
    u1, u2 = u[:, :numel], u[:, numel:]
    r = torch.sqrt(-2.0 * torch.log1p(-u1))  # 1-u1 in (0, 1]: no log(0)
    return (r * torch.cos(2 * torch.pi * u2)).to(dtype)
