"""``distopt reproduce sgc``: the quick version runs here and every expected result holds; the
checks can fail (a wrong load formula is caught); the full version is marked slow."""
from __future__ import annotations

import time

import pytest

from distopt.coding.msgc import MSGC
from experiments.cli import main
from experiments.reproduce import sgc
from experiments.reproduce.result import Result


def test_quick_reproduction_holds(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["reproduce", "sgc", "--quick", "--out", str(tmp_path)]) == 0
    assert time.perf_counter() - t0 < 60
    out = capsys.readouterr().out
    for check in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "study"):
        assert f"[HOLDS] {check}" in out
    assert "[FAILS]" not in out and "never published" in out
    md = (tmp_path / "results.md").read_text()
    assert "C5 exhaustive guarantee" in md and "n=256 Lambda-like study" in md
    assert (tmp_path / "sgc_load_vs_ratio.png").stat().st_size > 0
    assert (tmp_path / "sgc_runtime_vs_params.png").stat().st_size > 0


def test_a_wrong_load_formula_fails_c3(monkeypatch):
    monkeypatch.setattr(MSGC, "load", property(lambda self: (self.lam + 1) / self.n))
    res = Result("c3")
    sgc.c3(res)
    assert not res.holds and any(not c.holds and c.name.startswith("C3 load formulas") for c in res.checks)


@pytest.mark.slow
def test_full_reproduction_holds(tmp_path):
    assert main(["reproduce", "sgc", "--out", str(tmp_path)]) == 0
