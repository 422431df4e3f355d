"""Reproductions: one module per paper study, each ``run(quick, out, seeds) -> Result``.

Workloads register their mechanism checks through the workload registry; ``distopt
reproduce ID`` looks here first, then at the workloads.
"""
from __future__ import annotations

REPRODUCTIONS: dict[str, str] = {
    "ef21w": "experiments.reproduce.ef21w",
    "econtrol": "experiments.reproduce.econtrol",
    "ef21": "experiments.reproduce.ef21",
    "sgc": "experiments.reproduce.sgc",
}
