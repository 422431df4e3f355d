"""Gradient codes and sequential gradient coding: pure task assignment + decoding, no clocks.

>>> from distopt.coding import make
>>> scheme = make("m-sgc:B=1,W=2,lam=2", n=4)
>>> state = scheme.init()
>>> tasks = scheme.assign(state)                  # [n][slots] Task(job, key, parts, coeffs)
>>> state, outcome = scheme.step(state, frozenset({0}))   # worker 0 straggled this round
>>> [scheme.decoding(d) for d in outcome.decoded] # coefficients on result keys

Spec: specs/sgc.md. The straggler study (simulator/straggler_study.py) replays patterns and
delays through these schemes; ``distopt stragglers`` and ``distopt reproduce sgc`` use it.
"""
from __future__ import annotations

from .._spec import build
from .base import Decoding, Done, Outcome, Scheme, Task, combine, encode, encode_many
from .gc import GC, DECODE_TOL, GradientCode, Uncoded, crc_matrix, decode_coefficients, frc_matrix, random_h
from .model import Bursty
from .msgc import MSGC
from .srsgc import SRSGC

CODES: dict[str, type] = {
    "uncoded": Uncoded,
    "gc": GC,
    "sr-sgc": SRSGC,
    "m-sgc": MSGC,
}


def make(spec, **context) -> Scheme:
    """Build a scheme from a spec string such as ``"m-sgc:B=1,W=2,lam=2"``; ``context`` (e.g.
    ``n=workers``, ``s=2``) fills options the spec leaves unset."""
    return build(CODES, spec, "code", **context)


__all__ = ["CODES", "make", "Scheme", "Task", "Done", "Outcome", "Decoding", "encode", "encode_many", "combine", "GradientCode",
           "GC", "Uncoded", "SRSGC", "MSGC", "Bursty", "frc_matrix", "crc_matrix", "random_h", "decode_coefficients",
           "DECODE_TOL"]
