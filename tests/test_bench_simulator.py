"""``distopt bench simulator`` runs end to end at a toy size (its figures are for the README,
not asserted: speed is measured by benchmarks, never by timed tests)."""
import json

from experiments.bench import simulator


def test_bench_simulator_runs_and_records_its_ratios(tmp_path, capsys):
    assert simulator.main(d=300, repeat=2, out=str(tmp_path), n=30, alternations=2) == 0
    rec = json.loads((tmp_path / "bench_simulator.json").read_text())
    lo, hi = rec["speedup_range"]
    assert 0 < lo <= rec["speedup"] <= hi
    lo, hi = rec["round_over_floor_range"]
    assert 0 < lo <= rec["round_over_floor_clone"] <= hi
    assert rec["topk_same_sets"] and rec["big_run_finished"]
    assert "interleaved alternations" in capsys.readouterr().out
