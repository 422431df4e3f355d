"""Data for the diffusion family: seeded generators, the bundled digits, 2-D mixtures, and the
deterministic per-(seed, worker, step) minibatches every workload's ``batch`` draws from.

No downloads: digits are scikit-learn's bundled ``load_digits`` (1,797 8x8 images, pixel values
0..16), scaled to [-1, 1]; 2-D mixtures are generated.
"""
from __future__ import annotations

import functools
import hashlib
import math

import torch
from torch import Tensor

__all__ = ["rng", "digits", "ring8", "moons", "mixture", "MIXTURES", "shard_bounds", "minibatch", "ring8_centres"]


def rng(*keys: int | str) -> torch.Generator:
    """A ``torch.Generator`` seeded from any tuple of ints/strings, e.g. ``rng(seed, worker, step)``:
    distinct tuples give independent streams (a hash, not a sum, so (1, 2) != (2, 1))."""
    h = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & ((1 << 63) - 1))


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 8.0 - 1.0  # [1797, 64] in [-1, 1]
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=rng("digits-split"))  # one fixed shuffle for every run
    return x[perm], y[perm]


DIGITS_TEST = 297  # held-out images (the last ones of the fixed shuffle); 1,500 remain for training


def digits(split: str = "train") -> tuple[Tensor, Tensor]:
    """``(images [N, 64] in [-1, 1], labels [N])``; ``split`` = train (1,500), test (297) or all."""
    x, y = _digits()
    if split == "train":
        return x[:-DIGITS_TEST], y[:-DIGITS_TEST]
    if split == "test":
        return x[-DIGITS_TEST:], y[-DIGITS_TEST:]
    if split == "all":
        return x, y
    raise ValueError(f"digits split must be train, test or all, got {split!r}")


def ring8_centres(radius: float = 2.0) -> Tensor:
    """The 8 mode centres of :func:`ring8`, ``[8, 2]``, counter-clockwise from (radius, 0)."""
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return (radius * torch.stack([ang.cos(), ang.sin()], 1)).float()


def ring8(n: int, gen: torch.Generator, radius: float = 2.0, std: float = 0.1) -> tuple[Tensor, Tensor]:
    """A ring of 8 equal Gaussians: ``(points [n, 2], mode labels [n])``."""
    k = torch.randint(0, 8, (n,), generator=gen)
    return ring8_centres(radius)[k] + std * torch.randn(n, 2, generator=gen), k


def moons(n: int, gen: torch.Generator, noise: float = 0.05) -> tuple[Tensor, Tensor]:
    """Two interleaved half circles (scikit-learn's ``make_moons`` geometry), roughly standardised:
    ``(points [n, 2], moon labels [n])``."""
    k = torch.randint(0, 2, (n,), generator=gen)
    a = torch.rand(n, generator=gen) * math.pi
    x = torch.where(k == 0, a.cos(), 1 - a.cos())
    y = torch.where(k == 0, a.sin(), 0.5 - a.sin())
    pts = torch.stack([x, y], 1) + noise * torch.randn(n, 2, generator=gen)
    return (pts - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5]), k


MIXTURES = {"ring8": ring8, "moons": moons}


def mixture(name: str, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    if name not in MIXTURES:
        raise ValueError(f"unknown 2-D data {name!r}; valid: {', '.join(MIXTURES)}")
    return MIXTURES[name](n, gen)


def shard_bounds(n_rows: int, worker: int, num_workers: int) -> tuple[int, int]:
    """Worker ``worker``'s contiguous rows ``[start, stop)``, exactly as ``numpy.array_split`` splits."""
    if not 0 <= worker < num_workers or num_workers > n_rows:
        raise ValueError(f"worker {worker} of {num_workers}: need 0 <= worker < num_workers <= {n_rows} rows")
    q, r = divmod(n_rows, num_workers)
    start = worker * q + min(worker, r)
    return start, start + q + (1 if worker < r else 0)


def minibatch(n_rows: int, batch: int, seed: int, worker: int, num_workers: int, step: int, tag: str = "") -> Tensor:
    """``batch`` row indices (with replacement) from worker ``worker``'s shard, drawn from
    (tag, seed, worker, step): the same call always gives the same rows, and every worker gets
    the same count (equal shapes, so the simulator can vmap over workers)."""
    lo, hi = shard_bounds(n_rows, worker, num_workers)
    return lo + torch.randint(0, hi - lo, (batch,), generator=rng("rows", tag, seed, worker, step))
