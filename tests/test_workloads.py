"""Every registered workload through the same checks: declared defaults, a 3-round EF21 run
from the CLI with no other flag (DESIGN.md contract), and its quick mechanism check."""
from __future__ import annotations

import math

import pytest

from experiments.cli import main
from experiments.workloads import FAMILIES, WORKLOADS, make

ALL = sorted(WORKLOADS)
ZOO = sorted(set(WORKLOADS) - set(FAMILIES["convex"]))


@pytest.mark.parametrize("wid", ALL)
def test_declares_its_defaults(wid):
    w = make(wid)
    assert w.name == wid
    assert w.paper and isinstance(w.paper, str)
    assert isinstance(w.primary_metric, str) and isinstance(w.higher_is_better, bool)
    assert isinstance(w.default_rounds, int) and w.default_rounds > 0
    assert w.default_lr == "theory" or w.default_lr > 0


@pytest.mark.parametrize("wid", ALL)
def test_three_ef21_rounds_from_the_cli(wid, tmp_path):
    rc = main(["simulate", "--workload", wid, "--workers", "2", "--rounds", "3", "--method", "ef21",
               "--compressor", "topk:ratio=0.1", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    from simulator.history import History

    rows = History.read(tmp_path)
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    w = make(wid)
    assert all(math.isfinite(r[w.primary_metric]) for r in rows), "the primary metric is reported every round"
    assert rows[-1]["bits_up"] > 0


@pytest.mark.parametrize("wid", ZOO)
def test_quick_mechanism_check_holds(wid, tmp_path):
    from experiments.workloads import reproduce_workload

    result = reproduce_workload(wid, quick=True, out=tmp_path, seeds=None)
    assert result.checks, "a mechanism check must check something"
    if wid in FAMILIES["sequence"]:  # thin margins must read as thin: each run gives seed-paired t's
        assert any(n.startswith("paired by") for n in result.notes), result.notes
    failed = [f"{c.name}: expected {c.expected}, observed {c.observed}" for c in result.checks if not c.holds]
    assert not failed, failed
