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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Noise", "bits32", "uniform", "normal", "randint"]

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


def _fmix_(h: Tensor, tmp: Tensor) -> Tensor:
    """murmur3 fmix32, in place on int32 ``h`` (``tmp``: scratch of the same shape)."""
    torch.bitwise_right_shift(h, 16, out=tmp)
    tmp &= 0xFFFF
    h ^= tmp
    h *= _C1
    torch.bitwise_right_shift(h, 13, out=tmp)
    tmp &= 0x7FFFF
    h ^= tmp
    h *= _C2
    torch.bitwise_right_shift(h, 16, out=tmp)
    tmp &= 0xFFFF
    h ^= tmp
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


def bits32(noise: Noise, numel: int, stream: int, device=None, start: int = 0) -> Tensor:
    if numel + start >= 1 << 31:
        raise ValueError(f"counter-based draws support up to 2^31 numbers per vector, asked {numel + start}")
    k1, k2 = _keys(noise.seed, noise.step, noise.workers(), stream)
    if device is not None:
        k1, k2 = k1.to(device), k2.to(device)
    j = torch.arange(start, start + numel, dtype=torch.int32, device=k1.device)
    j *= _GOLD
    h = torch.empty((k1.numel(), numel), dtype=torch.int32, device=k1.device)
    torch.bitwise_xor(j.unsqueeze(0), k1.unsqueeze(1), out=h)
    tmp = torch.empty_like(h)
    _fmix_(h, tmp)
    h ^= k2.unsqueeze(1)
    _fmix_(h, tmp)
    return h


def uniform(noise: Noise, numel: int, stream: int, dtype=torch.float32, device=None) -> Tensor:
    """Uniform draws in [0, 1) on a 2^-24 grid, ``[rows, numel]``."""
    h = bits32(noise, numel, stream, device)
    torch.bitwise_right_shift(h, 8, out=h)
    h &= 0xFFFFFF
    out = h.to(dtype)
    out *= 2.0**-24
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
