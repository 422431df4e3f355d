"""The workload zoo: one file per paper, grouped by family; a registry (dict literal) of
lazy entries so that listing 53 workloads imports none of them.

``WORKLOADS[id] = ("module:Class", "paper")``. ``make(spec)`` builds one from a spec string
(``logreg:data=sklearn:breast_cancer,reg=0.1`` -- options are the class's dataclass fields).
"""
from __future__ import annotations

import importlib
from typing import Any

from distopt._spec import build, parse

from .generative import WORKLOADS as _GENERATIVE
from .sequence import WORKLOADS as _SEQUENCE

_CONVEX: dict[str, tuple[str, str]] = {
    "logreg": ("experiments.workloads.convex.logreg:LogReg",
               "EF21 (Richtarik, Sokolov, Fatkhullin 2021): nonconvex logistic regression"),
    "quadratic": ("experiments.workloads.convex.quadratic:Quadratic",
                  "EControl (Gao, Islamov, Stich 2024): heterogeneous quadratics with gradient noise"),
    "lstsq": ("experiments.workloads.convex.lstsq:LeastSquares",
              "EF21 (Richtarik, Sokolov, Fatkhullin 2021): least squares in the PL setting"),
}


# one registry per family package (each a dict literal beside its workloads), merged here
FAMILIES: dict[str, list[str]] = {
    "convex": list(_CONVEX),
    "sequence": list(_SEQUENCE),
    "generative": list(_GENERATIVE),
}
WORKLOADS: dict[str, tuple[str, str]] = {**_CONVEX, **_SEQUENCE, **_GENERATIVE}


def workload_class(name: str):
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; valid: {', '.join(sorted(WORKLOADS))} (see `distopt workloads`)")
    module, _, cls = WORKLOADS[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)


def make(spec: str, **context: Any):
    """Build a workload from ``id`` or ``id:key=value,...``; ``context`` fills unset options."""
    name = parse(spec)[0]  # values may hold colons (data=sklearn:breast_cancer): only the first splits
    return build({name: workload_class(name)}, spec, "workload", **context)


def reproduce_workload(wid: str, quick: bool, out, seeds=None):
    w = make(wid)
    if not hasattr(w, "reproduce"):
        raise ValueError(f"workload {wid!r} has no mechanism check")
    return w.reproduce(quick=quick, out=out, seeds=seeds)
