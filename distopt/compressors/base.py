"""The compressor contract shared by every family (specs/ef-family.md section 2).

A compressor maps a flat vector ``x: [d]`` -- or a stack of them ``[n, d]``, one row per
worker, compressed in one vectorized call -- to a ``Payload``: the tuple of tensors that
crosses the wire, nothing more. ``bits(payload)`` is that payload's real size (all rows
together); ``decompress`` rebuilds the dense vector(s). Random compressors take the
randomness as an argument (:class:`distopt.noise.Noise`); a receiver that knows the same
``Noise`` (seed shared by sender and receiver) rebuilds what was not sent (Rand-K indices).

Stateful compressors (PowerSGD's warm start) carry explicit state: ``init_state`` and
``apply(x, state, rng) -> (payload, state)``; for stateless ones ``apply`` is ``compress``.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import torch
from torch import Tensor

from ..noise import Noise, Stream, bits32, uniform

Payload = tuple[Tensor, ...]

__all__ = ["Payload", "Compressor", "payload_bits", "as_rows", "check_finite"]


def payload_bits(p: Payload) -> int:
    """Real size of the tensors in a payload, in bits."""
    return int(sum(t.numel() * t.element_size() * 8 for t in p))


def as_rows(x: Tensor) -> tuple[Tensor, torch.Size]:
    """``[..., d]`` -> ``([N, d], leading shape)``: compressors work on rows."""
    if x.dim() == 0:
        raise ValueError("compressors take a flat vector [d] or a stack [n, d], got a scalar")
    lead = x.shape[:-1]
    return x.reshape(-1, x.shape[-1]), lead


class NonFiniteInput(ValueError):
    """A compressor got a NaN or an inf (the simulator then names the worker whose gradient it was)."""


def check_finite(name: str, x: Tensor) -> None:
    if x.numel() == 0:
        return
    lo, hi = torch.aminmax(x.detach().reshape(-1).float() if x.dtype in (torch.float16, torch.bfloat16) else x.detach().reshape(-1))
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise NonFiniteInput(
            f"compressor {name!r} got a non-finite input (NaN or Inf): the gradient has diverged or "
            "overflowed; lower the learning rate, clip gradients, or use a wider dtype"
        )


@dataclasses.dataclass(frozen=True)
class Compressor:
    """Base of every compressor. Subclasses are frozen dataclasses whose fields are the
    spec options; class attributes describe the family for listings and theory."""

    name: ClassVar[str] = "?"
    unbiased: ClassVar[bool] = False
    summable: ClassVar[bool] = False  # payloads can be all-reduced elementwise
    random: ClassVar[bool] = False  # needs a Noise
    contractive: ClassVar[bool] = True  # has an alpha (unbiased ones via Q/(1+omega))
    row_sparse: ClassVar[bool] = False  # decompress scatters the payload's values: add_into is sparse
    formula: ClassVar[str] = ""  # alpha / omega, for `distopt compressors`
    bits_per_coord: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    # -- theory ---------------------------------------------------------------------------
    def alpha(self, d: int) -> float:
        """Contraction parameter: E||C(x)-x||^2 <= (1-alpha)||x||^2. For unbiased compressors,
        the alpha of the scaled compressor Q/(1+omega), i.e. 1/(1+omega)."""
        if self.unbiased:
            return 1.0 / (1.0 + self.omega(d))
        raise NotImplementedError

    def omega(self, d: int) -> float:
        """Variance parameter of an unbiased compressor: E||Q(x)||^2 <= (1+omega)||x||^2."""
        raise ValueError(f"{self.name} is biased; it has an alpha ({self.formula}), not an omega")

    # -- wire -----------------------------------------------------------------------------
    def validate(self, d: int) -> None:
        """Raise ValueError if this compressor cannot handle vectors of length d."""
        if d < 1:
            raise ValueError(f"{self.name}: vectors must have at least one coordinate, got d={d}")

    def init_state(self, x: Tensor, rng: Noise | None = None) -> tuple:
        return ()

    def compress(self, x: Tensor, rng: Noise | None = None) -> Payload:
        raise NotImplementedError

    def apply(self, x: Tensor, state: tuple, rng: Noise | None = None) -> tuple[Payload, tuple]:
        return self.compress(x, rng), state

    def decompress(self, p: Payload, numel: int, rng: Noise | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Dense ``[..., numel]`` from a payload. ``dtype``: the sender's dtype where the payload
        does not carry it (packed signs, exponents, 16-bit casts); default float32."""
        raise NotImplementedError

    def decompress_add(self, out: Tensor, p: Payload, numel: int, rng: Noise | None = None, scale: float = 1.0) -> Tensor:
        """``out += scale * decompress(p)`` for one vector ``out: [numel]``, in place. Sparse
        compressors add only the coordinates they sent (no dense temporary): what a receiver
        summing many workers' messages wants."""
        return out.add_(self.decompress(p, numel, rng, out.dtype), alpha=scale)

    def add_into(self, out: Tensor, p: Payload, numel: int, rng: Noise | None = None, scale: float = 1.0) -> Tensor:
        """``out += scale * decompress(p)`` in place, ``out`` shaped like the message's value
        (``[numel]`` or a stack ``[n, numel]``). Row-sparse compressors (``row_sparse``) touch
        only the entries they sent."""
        return out.add_(self.decompress(p, numel, rng, out.dtype), alpha=scale)

    def compress_shift(self, target: Tensor, shift: Tensor, donate: bool = False) -> Optional[tuple[Payload, Tensor]]:
        """(payload of ``compress(target - shift)``, ``shift + decompress(payload)``) from one
        fused kernel, or None where there is none (the caller composes the two steps). Only
        deterministic, stateless compressors can offer it. ``donate``: the caller will not read
        ``shift`` again, so the new shift may be built in its memory."""
        return None

    def compress_error_shift(self, grad: Tensor, shift: Tensor, error: Tensor, eta: float, learn_shift: bool = True,
                             donate: bool = False) -> Optional[tuple[Payload, Optional[Tensor], Tensor]]:
        """EControl's step from one fused kernel: (payload of D = compress(eta error + (grad -
        shift)), shift + D (None unless ``learn_shift``), error + (grad - shift) - D), or None
        where there is none (the caller composes the steps)."""
        return None

    def compress_error(self, grad: Tensor, error: Tensor, scale: float) -> Optional[tuple[Payload, Tensor]]:
        """EF14's step from one fused kernel: (payload of D = compress(error + scale grad),
        error + scale grad - D), or None where there is none (the caller composes the steps)."""
        return None

    def bits(self, p: Payload) -> int:
        return payload_bits(p)

    def __call__(self, x: Tensor, rng: Noise | None = None) -> Tensor:
        """Round trip C(x) = decompress(compress(x))."""
        return self.decompress(self.compress(x, rng), x.shape[-1], rng, x.dtype)

    # -- helpers --------------------------------------------------------------------------
    def _need_rng(self, rng: Noise | None) -> Noise:
        if rng is None:
            raise ValueError(
                f"compressor {self.name!r} is random: pass rng=distopt.Noise(seed, step, worker) "
                "(draws come from an explicit seed, never the global RNG)"
            )
        return rng

    def _bits(self, rng: Noise, rows: Tensor, stream: int) -> Tensor:
        """int32 random bits ``[N, d]``, row i from worker i of ``rng``."""
        self._bits_check(rng, rows)
        return bits32(rng, rows.shape[1], stream, rows.device)

    def _bits_check(self, rng: Noise, rows: Tensor) -> None:
        n_rng = rng.workers().numel()
        if n_rng != rows.shape[0]:
            raise ValueError(
                f"{self.name}: x has {rows.shape[0]} rows (workers) but rng names {n_rng}; "
                f"pass Noise(seed, step, worker=torch.arange({rows.shape[0]})) for a stacked batch"
            )

    def _stream(self, rng: Noise, rows: Tensor, stream: int) -> Stream:
        """The keyed stream of every row's worker, to draw from piece by piece (``Stream.fill_``)."""
        self._bits_check(rng, rows)
        return Stream(rng, stream, rows.device)

    def _uniform(self, rng: Noise, rows: Tensor, stream: int, dtype) -> Tensor:
        """Uniforms in [0, 1) on a 2^-24 grid, ``[N, d]``."""
        self._bits_check(rng, rows)
        return uniform(rng, rows.shape[1], stream, dtype, rows.device)

    def _start(self, x: Tensor, check: bool = True) -> tuple[Tensor, torch.Size]:
        """``x`` as rows ``[N, d]``, validated; ``check=False``: the caller checks finiteness
        itself (a norm it computes anyway is finite iff x is), saving a pass over x."""
        if not x.is_floating_point():
            raise ValueError(f"compressor {self.name!r} takes floating-point tensors, got {x.dtype}")
        rows, lead = as_rows(x)
        self.validate(rows.shape[-1])
        if check:
            check_finite(self.name, rows)
        return rows, lead

    @property
    def spec(self) -> str:
        from .._spec import spec_of

        return spec_of(self)

    def __str__(self) -> str:
        return self.spec
