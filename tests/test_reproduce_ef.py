"""The EF-family reproductions in their quick modes: every expected result must hold."""
import pytest

from experiments.cli import main


@pytest.mark.parametrize("study", ["ef21", "ef21w", "econtrol"])
def test_quick_reproduction_holds(study, tmp_path, capsys):
    rc = main(["reproduce", study, "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "[FAILS]" not in out, out
    assert rc == 0 and out.count("[HOLDS]") >= 4
    assert (tmp_path / "results.md").exists()


def test_demo_main_job(tmp_path, capsys):
    assert main(["demo", "--rounds", "600", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in ("EF21-W", "EControl", "EF14", "DCGD"):
        assert name in out
    assert (tmp_path / "demo.png").exists() and (tmp_path / "ef21-w" / "history.csv").exists()
