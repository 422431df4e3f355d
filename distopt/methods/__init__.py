"""Communication methods: a registry (dict literal) and one constructor.

>>> m = distopt.method("ef21", compressor="topk:k=1")
"""
from __future__ import annotations

from .._spec import build
from ..compressors import Compressor
from ..compressors import make as make_compressor
from .base import Method, ScaledCompressor, Sent, contractive_compressor, send, send_plain
from .econtrol import EControl
from .ef14 import EF14
from .ef21 import EF21, EF21W, EF21Plus, EF21SGDM
from .plain import DCGD, GD

METHODS: dict[str, type[Method]] = {
    "gd": GD,
    "dcgd": DCGD,
    "ef14": EF14,
    "ef21": EF21,
    "ef21-plus": EF21Plus,
    "ef21-w": EF21W,
    "ef21-sgdm": EF21SGDM,
    "econtrol": EControl,
}


def make(spec: str | Method, compressor: str | Compressor = "identity", **context) -> Method:
    """Build a method from a spec string (``"econtrol:eta=0.1"``) and an uplink compressor.

    ``context``: what the caller knows, e.g. ``smoothness=(L_1, ..., L_n)`` for ef21-w,
    ``n=num_workers`` for compressors that need it (permk).
    """
    if isinstance(spec, Method):
        return spec
    comp = make_compressor(compressor, **{k: v for k, v in context.items() if k == "n"})
    return build(METHODS, spec, "method", compressor=comp, **{k: v for k, v in context.items() if k != "n"})


__all__ = ["METHODS", "Method", "ScaledCompressor", "Sent", "contractive_compressor", "make", "send", "send_plain",
           *[c.__name__ for c in METHODS.values()]]
