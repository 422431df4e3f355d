"""Compressors: one file per family, one registry (a dict literal), one constructor.

>>> import distopt
>>> c = distopt.compressor("topk:ratio=0.01")
>>> payload = c.compress(x); y = c.decompress(payload, x.numel())
"""
from __future__ import annotations

from .._spec import build
from .base import Compressor, Payload, payload_bits
from .bernoulli import Bernoulli
from .identity import BF16, FP16, Identity
from .lowrank import LowRank, PowerSGD
from .quantize import QSGD, Dither, Natural, NaturalDither
from .sign import ScaledSign, Sign
from .sparse import PermK, RandK, TopK

COMPRESSORS: dict[str, type[Compressor]] = {
    "identity": Identity,
    "topk": TopK,
    "randk": RandK,
    "permk": PermK,
    "qsgd": QSGD,
    "dither": Dither,
    "natural": Natural,
    "natural_dither": NaturalDither,
    "sign": Sign,
    "scaled_sign": ScaledSign,
    "lowrank": LowRank,
    "powersgd": PowerSGD,
    "bernoulli": Bernoulli,
    "fp16": FP16,
    "bf16": BF16,
}


def make(spec: str | Compressor, **context) -> Compressor:
    """Build a compressor from a spec string such as ``"topk:ratio=0.01"``.

    ``context`` (e.g. ``n=num_workers``) fills options the spec leaves unset.
    """
    return build(COMPRESSORS, spec, "compressor", **context)


__all__ = ["COMPRESSORS", "Compressor", "Payload", "make", "payload_bits", *[c.__name__ for c in COMPRESSORS.values()]]
