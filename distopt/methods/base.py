"""The method contract: pure worker and server steps with explicit state (specs/ef-family.md §3).

A round of any method, for worker i and the server (EF21's indexing: gradients are taken at
the point the previous round produced):

    (sent_i, W_i) = method.worker_step(grad_i, W_i, rng, lr)     # sent_i.payload crosses the wire
                                                                   # (donate=True: W_i's memory reused)
    agg           = (1/n) sum_i a_i * sent_i.value                 # a_i = method.weights(i), default 1
    (dir, S)      = method.server_step(agg, S, lr)
    x            -= lr * dir        (or dir itself for methods that work in model units: EF14)

Round 0 uses ``init_worker`` / ``init_server`` instead: EF21-style methods send their first
gradient uncompressed to initialise their shifts (counted in bits); the others take a normal
step. Steps are written for one worker on ``[d]`` tensors and run unchanged on a stack
``[n, d]`` (every op is elementwise or row-wise, and compressors take stacks), so the
simulator, the DDP hook and Ray run the same code.

Unbiased compressors inside error feedback are scaled by 1/(1+omega) (as FL_PyTorch does),
which makes them contractive with alpha = 1/(1+omega): ``contractive_compressor``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor

from ..compressors import Compressor, Identity, Payload
from ..noise import Noise


class Sent:
    """One worker's (or a stack of workers') uplink message.

    ``payload`` is exactly what crosses the wire; ``value`` its decompressed value ``[..., d]``,
    what the server aggregates; ``codec`` decodes ``payload`` (the method's compressor, or
    identity in init rounds); ``extra_bits`` counts side information not in the payload (e.g.
    EF21+'s choice bit). A message made by a fused step (:func:`send_shift`) decodes ``value``
    only when asked: the simulator's server sums a stack's messages straight from the payload
    (:meth:`total`), which for Top-K touches n k entries instead of n d. ``finite_checked``:
    the fused kernel saw every entry of the compressed input and found it finite (it raises
    otherwise), so the simulator need not scan the gradients for NaN again."""

    __slots__ = ("payload", "codec", "extra_bits", "finite_checked", "_value", "_decode")

    def __init__(self, payload: Payload, value: Optional[Tensor], codec: Compressor, extra_bits: int = 0,
                 decode: Optional[tuple] = None, finite_checked: bool = False):
        if value is None and decode is None:
            raise ValueError("Sent needs its value or how to decode it (numel, rng, dtype)")
        self.payload, self.codec, self.extra_bits = payload, codec, extra_bits
        self.finite_checked = finite_checked  # the sender verified that its input was finite
        self._value, self._decode = value, decode

    @property
    def value(self) -> Tensor:
        if self._value is None:
            numel, rng, dtype = self._decode
            self._value = self.codec.decompress(self.payload, numel, rng, dtype)
        return self._value

    @property
    def bits(self) -> int:
        return self.codec.bits(self.payload) + self.extra_bits

    def total(self, weights: Optional[Tensor] = None) -> Tensor:
        """sum_i a_i value_i over a stack's rows ``[d]`` (``weights`` a ``[n]``, default all 1):
        from the payload (``decompress_add``, rows added in order) for a row-sparse codec,
        decoded or not -- so every path to the same message sums it the same way, to the bit --
        else from the dense value."""
        if not self.codec.row_sparse or self._decode is None:
            return weighted_sum(self.value, weights)
        numel, rng, dtype = self._decode
        out = torch.zeros(numel, dtype=dtype, device=self.payload[0].device)
        return self.codec.decompress_add(out, self.payload, numel, rng, 1.0 if weights is None else weights)

    def add_to(self, out: Tensor, scale: float = 1.0) -> Tensor:
        """``out += scale * value`` in place (``out`` shaped like ``value``); a row-sparse
        message not yet decoded adds only the entries it carries."""
        if self._value is None and self.codec.row_sparse:
            numel, rng, _ = self._decode
            return self.codec.add_into(out, self.payload, numel, rng, scale)
        return out.add_(self.value, alpha=scale)

    def __reduce__(self):  # pickles (Ray) carry the decoded value, not the decoder's noise
        return (Sent, (self.payload, self.value, self.codec, self.extra_bits))

    def __repr__(self) -> str:
        return f"Sent(codec={self.codec.spec}, bits={self.bits})"


def weighted_sum(values: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """sum_i a_i values_i over the rows of a dense ``[n, d]`` (``weights`` ``[n]``, default all 1)."""
    return (values if weights is None else values * weights.to(values.dtype).unsqueeze(1)).sum(0)


IDENTITY = Identity()


def send(codec: Compressor, v: Tensor, rng: Noise | None, state: tuple = (), lazy: bool = False
         ) -> tuple[Sent, tuple]:
    """Compress ``v`` with ``codec`` (threading a stateful codec's state) and decompress it
    once: the sender and the receiver both use ``value``. ``lazy``: a row-sparse codec's
    message decodes only if asked (the caller updates its state with ``Sent.add_to``)."""
    payload, state = codec.apply(v, state, rng)
    decode = (v.shape[-1], rng, v.dtype)
    if lazy and codec.row_sparse:
        return Sent(payload, None, codec, decode=decode), state
    return Sent(payload, codec.decompress(payload, *decode), codec, decode=decode), state


def _fused_sent(codec: Compressor, payload: Payload, like: Tensor, rng: Noise | None) -> Sent:
    """The message of a fused kernel step: decoded lazily (rows of ``like``'s length and dtype);
    the kernel has checked its input for NaN and inf."""
    return Sent(payload, None, codec, decode=(like.shape[-1], rng, like.dtype), finite_checked=True)


def send_shift(codec: Compressor, target: Tensor, shift: Tensor, rng: Noise | None, state: tuple = (),
               donate: bool = False) -> tuple[Sent, Tensor, tuple]:
    """Error feedback's shift step: ``sent = C(target - shift)`` and ``shift + sent.value``
    (EF21's c_i and g_i + c_i). A stateless codec with a fused kernel (``compress_shift``,
    Top-K on a CPU stack) does both in one pass over the rows, bit-identical to the two-step
    form below; its message decodes lazily, and it raises ``NonFiniteInput`` on a NaN or inf
    in ``target - shift``. ``donate``: the caller gives ``shift`` up (see :meth:`Method.worker_step`)."""
    fused = codec.compress_shift(target, shift, donate) if not state else None
    if fused is not None:
        payload, new_shift = fused
        return _fused_sent(codec, payload, target, rng), new_shift, state
    sent, state = send(codec, target - shift, rng, state)
    return sent, shift + sent.value, state


def send_error_shift(codec: Compressor, grad: Tensor, shift: Tensor, error: Tensor, eta: float, rng: Noise | None,
                     state: tuple = (), learn_shift: bool = True, donate: bool = False
                     ) -> tuple[Sent, Tensor, Tensor, tuple]:
    """EControl's step (specs/ef-family.md 3.11): ``D = C(eta e + (g - h))``, sent; returns
    (sent, e + (g - h) - D, h + D (h itself unless ``learn_shift``), codec state). A stateless
    codec with a fused kernel (Top-K on CPU) does it in one pass per row, bit-identical to the
    composed form below, which touches only the sent entries of e and h for Top-K. ``donate``:
    the caller gives ``shift`` up (see :meth:`Method.worker_step`)."""
    fused = codec.compress_error_shift(grad, shift, error, eta, learn_shift, donate) if not state else None
    if fused is not None:
        payload, new_shift, new_error = fused
        return _fused_sent(codec, payload, grad, rng), new_error, new_shift if learn_shift else shift, state
    diff = grad - shift
    sent, state = send(codec, eta * error + diff, rng, state, lazy=True)
    new_error = sent.add_to(error + diff, -1.0)
    new_shift = sent.add_to(shift.clone(), 1.0) if learn_shift else shift
    return sent, new_error, new_shift, state


def send_error(codec: Compressor, grad: Tensor, error: Tensor, scale: float, rng: Noise | None, state: tuple = ()
               ) -> tuple[Sent, Tensor, tuple]:
    """EF14's step (specs/ef-family.md 3.2): ``p = error + scale grad``, ``sent = C(p)``; returns
    (sent, p - sent.value, codec state). A stateless codec with a fused kernel (Top-K on CPU)
    does it in one pass per row, bit-identical to the composed form below."""
    fused = codec.compress_error(grad, error, scale) if not state else None
    if fused is not None:
        payload, new_error = fused
        return _fused_sent(codec, payload, grad, rng), new_error, state
    p = error + scale * grad
    sent, state = send(codec, p, rng, state)
    return sent, p - sent.value, state


def send_plain(v: Tensor) -> Sent:
    """An uncompressed message (init rounds, gd)."""
    return Sent((v,), v, IDENTITY)


@dataclasses.dataclass(frozen=True)
class ScaledCompressor(Compressor):
    """Q/(1+omega) for an unbiased Q: contractive with alpha = 1/(1+omega) (specs/ef-family.md
    §1). Same payload and bits as Q; both ends apply the factor on decompression."""

    inner: Compressor = dataclasses.field(default_factory=Identity)

    name: ClassVar[str] = "scaled"

    @property
    def random(self) -> bool:  # type: ignore[override]
        return self.inner.random

    @property
    def summable(self) -> bool:  # type: ignore[override]
        return self.inner.summable

    @property
    def spec(self) -> str:
        return self.inner.spec + " (scaled by 1/(1+omega))"

    def alpha(self, d: int) -> float:
        return 1.0 / (1.0 + self.inner.omega(d))

    def validate(self, d: int) -> None:
        self.inner.validate(d)

    def init_state(self, x, rng=None):
        return self.inner.init_state(x, rng)

    def compress(self, x, rng=None):
        return self.inner.compress(x, rng)

    def apply(self, x, state, rng=None):
        return self.inner.apply(x, state, rng)

    def decompress(self, p, numel, rng=None, dtype=None):
        return self.inner.decompress(p, numel, rng, dtype) * (1.0 / (1.0 + self.inner.omega(numel)))

    def decompress_add(self, out, p, numel, rng=None, scale=1.0):
        return self.inner.decompress_add(out, p, numel, rng, scale / (1.0 + self.inner.omega(numel)))

    def bits(self, p):
        return self.inner.bits(p)


def contractive_compressor(c: Compressor) -> Compressor:
    """The compressor error feedback uses: Q/(1+omega) for unbiased Q (identity excepted)."""
    if c.unbiased and not isinstance(c, Identity):
        return ScaledCompressor(c)
    return c


@dataclasses.dataclass(frozen=True)
class Method:
    """Base of every method: frozen dataclass of options plus the uplink compressor."""

    compressor: Compressor = dataclasses.field(default_factory=Identity, metadata={"spec": False})

    name: ClassVar[str] = "?"
    model_units: ClassVar[bool] = False  # direction is the model update itself (EF14)
    needs_contractive: ClassVar[bool] = True  # scale unbiased compressors by 1/(1+omega)
    summary: ClassVar[str] = ""
    theory: ClassVar[str] = ""  # which theory stepsize applies

    def __post_init__(self):
        if self.needs_contractive:
            object.__setattr__(self, "compressor", contractive_compressor(self.compressor))

    @property
    def codec(self) -> Compressor:
        return self.compressor

    def weights(self, workers: Tensor) -> Optional[Tensor]:
        """Aggregation weights a_i ``[len(workers)]`` (agg = mean_i a_i value_i); None = all 1."""
        return None

    def init_worker(self, grad0: Tensor, rng: Noise, lr: float) -> tuple[Sent, Any]:
        raise NotImplementedError

    def init_server(self, agg0: Tensor, lr: float) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def worker_step(self, grad: Tensor, state: Any, rng: Noise, lr: float, donate: bool = False
                    ) -> tuple[Sent, Any]:
        """One round's step for a worker (or a stack of them). Pure: ``state`` is not changed.
        ``donate=True``: the caller gives ``state`` up -- it will not read it again -- so the
        new state may be built in its memory (JAX's buffer donation, ``donate_argnums``); the
        results are the same bits. The simulator donates the stacked states it owns: for EF21's
        g_i and EControl's h_i under Top-K, only k entries per row change, so the step skips
        writing a fresh [n, d] state. A method may ignore it."""
        raise NotImplementedError

    def server_step(self, agg: Tensor, state: Any, lr: float) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def update(self, direction: Tensor, lr: float) -> Tensor:
        """The change to subtract from x."""
        return direction if self.model_units else lr * direction

    @property
    def spec(self) -> str:
        from .._spec import spec_of

        return spec_of(self)
