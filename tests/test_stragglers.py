"""Straggler models, pattern/trace files, the time model, master rules, the straggler study
and the ``distopt stragglers`` command (specs/sgc.md sections 3, 6.2, 7; DESIGN.md contract)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from distopt.coding import make
from distopt.coding.model import Bursty, first_violation
from experiments.cli import main
from simulator.straggler_study import grid, replay, search, simulate
from simulator.stragglers import (Deadline, Fastest, Given, Rounds, Sample, TimeModel, Timeout, gilbert_elliott, make_model,
                                  make_rule, read_pattern, read_trace, straggler_stats, thin, to_csv)


def _write(tmp_path, text, name="p.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


# ---------------------------------------------------------------- files ---------------------


def test_read_pattern(tmp_path):
    f = _write(tmp_path, "1,0,0,0\n0, 1 ,0,0\n\n")
    p = read_pattern(f)
    assert p.dtype == bool and p.tolist() == [[True, False, False, False], [False, True, False, False]]
    assert read_pattern(_write(tmp_path, to_csv(p), "q.csv")).tolist() == p.tolist()


@pytest.mark.parametrize("text,n,needle", [
    ("1,0,0\n0,1\n", None, "line 2: 2 values, expected 3"),
    ("1,0,0\n", 4, "line 1: 3 values, expected 4 (one per worker, as --workers says)"),
    ("1,0\n0,2\n", None, "line 2: '2' is not 0 or 1"),
    ("w1,w2\n1,0\n", None, "line 1: 'w1' is not 0 or 1"),
    ("", None, "the pattern file is empty"),
    ("\n\n", None, "the pattern file is empty"),
    ("1,0\n\n0,1\n", None, "line 2: empty line"),
])
def test_malformed_patterns_name_the_line(tmp_path, text, n, needle):
    with pytest.raises(ValueError) as e:
        read_pattern(_write(tmp_path, text), n)
    assert needle in str(e.value)


def test_read_trace(tmp_path):
    assert read_trace(_write(tmp_path, "1.5,2\n0.5,3e0\n")).tolist() == [[1.5, 2.0], [0.5, 3.0]]
    with pytest.raises(ValueError, match="line 2: 'x' is not a duration"):
        read_trace(_write(tmp_path, "1,2\n1,x\n"))
    with pytest.raises(ValueError, match="line 1: duration '-1' must be finite and >= 0"):
        read_trace(_write(tmp_path, "-1,2\n"))


# ---------------------------------------------------------------- models --------------------


def test_gilbert_elliott_statistics():
    p, q = 0.05, 0.4
    bad = gilbert_elliott(200, 2000, p, q, np.random.default_rng(0))
    assert bad.mean() == pytest.approx(p / (p + q), rel=0.05)
    bursts = straggler_stats(bad)["bursts"]
    mean_burst = sum(k * v for k, v in bursts.items()) / sum(bursts.values())
    assert mean_burst == pytest.approx(1 / q, rel=0.05)
    assert np.array_equal(bad, gilbert_elliott(200, 2000, p, q, np.random.default_rng(0)))
    assert not np.array_equal(bad, gilbert_elliott(200, 2000, p, q, np.random.default_rng(1)))


def test_thinning_conforms_and_only_removes():
    m = Bursty(2, 4, 3)
    prop = gilbert_elliott(10, 200, 0.2, 0.4, np.random.default_rng(1))
    kept = thin(prop, m, np.random.default_rng(2))
    assert not (kept & ~prop).any()
    assert first_violation([np.flatnonzero(r) for r in kept], m) is None
    assert first_violation([np.flatnonzero(r) for r in prop], m) is not None
    assert kept.sum() > prop.sum() / 4


def test_models_from_spec_strings():
    s = make_model("gilbert-elliott:p=0.1,q=0.5,slowdown=4").sample(6, 50, seed=3)
    assert s.flags.shape == (50, 6) and np.all(s.base[s.flags] == 4.0) and np.all(s.base[~s.flags] == 1.0)
    assert make_model("bursty:B=1,W=2,lam=2,p=0.3,q=0.5").sample(6, 50, 0).flags.sum(1).max() <= 2
    assert make_model("shifted-exp:shift=2").sample(4, 10, 0).base.min() >= 2
    assert make_model("lambda-like").sample(256, 5, 0).flags is None
    with pytest.raises(ValueError, match="unknown straggler model 'ge'"):
        make_model("ge:p=1")


# ---------------------------------------------------------------- time and master rules -----


def test_time_model_bills_load_and_results():
    tm = TimeModel(c=2.0, comm=0.1)
    base = np.ones((3, 4))
    m = make("m-sgc:B=2,W=3,lam=1", n=4)
    assert np.allclose(tm.durations(base, m.load, m.results_per_round), 1 + 2 * m.load + 0.1 * 4)


def test_master_rules():
    d = np.array([[1.0, 1.5, 2.5, 4.0], [2.0, 2.0, 2.0, 2.0]])
    r = Deadline(mu=1.0).decide(d)
    assert r.flags.tolist() == [[False, False, True, True], [False] * 4]
    assert r.t_accept.tolist() == [2.0, 2.0] and r.t_wait.tolist() == [4.0, 2.0]
    r = Timeout(t=1.6).decide(d)
    assert r.flags[0].tolist() == [False, False, True, True] and r.t_accept.tolist() == [1.6, 1.6]
    r = Fastest(k=3).decide(d)
    assert r.flags.sum(1).tolist() == [1, 1] and r.t_accept.tolist() == [2.5, 2.0]
    assert Fastest().decide(d, k_default=2).flags.sum(1).tolist() == [2, 2]
    r = Given().decide(d, np.array([[False, False, False, True], [True, False, False, False]]))
    assert r.t_accept.tolist() == [2.5, 2.0]
    assert make_rule("deadline:mu=0.5") == Deadline(0.5)
    with pytest.raises(ValueError, match="needs a straggler pattern"):
        Given().decide(d)


# ---------------------------------------------------------------- the study -----------------


def test_a_round_that_breaks_the_model_is_waited_out():
    """M-SGC (1,2,2), n=4: worker 0 straggles in rounds 0 and 1 -> round 1 is a wait-out
    (nobody erased, the slowest time paid); runtime by hand."""
    sc = make("m-sgc:B=1,W=2,lam=2", n=4)
    flags = np.zeros((4, 4), dtype=bool)
    flags[0, 0] = flags[1, 0] = True
    base = np.where(flags, 3.0, 1.0)
    res = simulate(sc, Sample(base, flags), time=TimeModel(c=2.0), rule=Given())
    L = 2.0 * sc.load
    assert res.wait_outs == 1 and res.failures == 0 and res.rounds == 4
    assert res.runtime == pytest.approx((1 + L) + (3 + L) + 2 * (1 + L))
    assert [r.decoded_round for r in res.records] == [1, 2, 3]


def test_gc_waits_for_more_than_s_and_official_rule_for_s():
    flags = np.array([[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0] * 6], dtype=bool)
    rounds = Rounds(flags, np.ones(3), np.full(3, 5.0))
    assert replay(make("gc:s=1", n=6), rounds).wait_outs == 1
    assert replay(make("gc:s=2", n=6), rounds).wait_outs == 0
    off = replay(make("gc:s=2,official_rule=true", n=6), rounds)
    assert off.wait_outs == 1 and off.runtime == 1 + 5 + 1
    assert replay(make("uncoded", n=6), rounds).wait_outs == 2


def test_jobs_must_fit_the_rounds():
    rounds = Rounds(np.zeros((3, 4), dtype=bool), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="needs J\\+T rounds"):
        replay(make("m-sgc:B=2,W=3,lam=1", n=4), Rounds(np.zeros((3, 4), bool), np.ones(3), np.ones(3)))
    with pytest.raises(ValueError, match="pattern has 4 workers"):
        replay(make("gc:s=1", n=5), rounds)


def test_sr_sgc_skips_tail_rounds_only_when_all_jobs_are_done():
    sc = make("sr-sgc:B=2,W=3,lam=2", n=6)
    flags = np.zeros((12, 6), dtype=bool)
    res = replay(sc, Rounds(flags, np.ones(12), np.ones(12)))
    assert res.jobs == 10 and res.rounds == 10  # every job decodes in its own round: no tail
    flags[9, :2] = True  # 2 > s = 1 stragglers in the last job's round: its repeat round is needed
    res = replay(sc, Rounds(flags, np.ones(12), np.ones(12)))
    assert res.rounds == 12 and res.records[-1].decoded_round == 11


def test_search_and_grid():
    assert len(grid("m-sgc", 256, max_T=4, max_lam=10)) == 60
    assert all(s.startswith("sr-sgc") and make(s, n=16).T <= 4 for s in grid("sr-sgc", 16, max_lam=3))
    smp = make_model("gilbert-elliott:p=0.05,q=0.5,sigma=0.05").sample(16, 30, seed=0)
    rows = search(grid("gc", 16, max_lam=6), 16, smp, jobs=30)
    assert [r["runtime"] for r in rows] == sorted(r["runtime"] for r in rows)
    assert all(r["failures"] == 0 for r in rows)


# ---------------------------------------------------------------- the command ---------------


def test_cli_pattern_file(tmp_path, capsys):
    """The spec's section 5 pattern through M-SGC, then a non-conforming one that is waited out."""
    pat = _write(tmp_path, "1,0,0,0\n0,1,0,0\n1,0,0,0\n0,0,1,0\n0,0,0,0\n")
    out = tmp_path / "out"
    assert main(["stragglers", "--scheme", "m-sgc", "--workers", "4", "--B", "1", "--W", "2", "--lam", "2",
                 "--pattern", str(pat), "--out", str(out)]) == 0
    jobs = (out / "jobs.csv").read_text().splitlines()
    assert jobs[0].startswith("job,decoded_round,correct")
    assert [line.split(",")[:3] for line in jobs[1:]] == [["0", "1", "true"], ["1", "2", "true"], ["2", "3", "true"],
                                                         ["3", "4", "true"]]
    s = json.loads((out / "summary.json").read_text())
    assert s["load"] == 0.375 and s["T"] == 1 and s["wait_outs"] == 0 and s["failures"] == 0
    assert s["runtime"] == pytest.approx(4 * (1 + 2.2 * 0.375) + (1 + 2.2 * 0.375))
    bad = _write(tmp_path, "1,0,0,0\n1,0,0,0\n0,0,0,0\n", "bad.csv")
    assert main(["stragglers", "--scheme", "sr-sgc:B=1,W=2,lam=2", "--pattern", str(bad), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["wait_outs"] == 1 and s["correct"] == s["jobs"] == 2


def test_cli_gilbert_elliott_model(tmp_path):
    out = tmp_path / "ge"
    assert main(["stragglers", "--scheme", "gc", "--s", "2", "--workers", "8", "--model",
                 "gilbert-elliott:p=0.1,q=0.5", "--rounds", "40", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["jobs"] == 40 and s["correct"] == 40 and s["failures"] == 0 and s["wait_outs"] > 0
    assert s["code"] == "gc:n=8,s=2" and s["master"] == "pattern"
    assert len((out / "jobs.csv").read_text().splitlines()) == 41


def test_cli_trace_with_deadline(tmp_path):
    tr = _write(tmp_path, "1,1,1,5\n1,1,1,1\n1,5,1,1\n", "t.csv")
    out = tmp_path / "tr"
    assert main(["stragglers", "--scheme", "m-sgc:B=1,W=3,lam=2", "--trace", str(tr), "--out", str(out),
                 "--c", "0"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["master"] == "deadline" and s["wait_outs"] == 0 and s["runtime"] == 2 + 1 + 2


@pytest.mark.parametrize("argv,needle", [
    (["--scheme", "gc", "--B", "2", "--workers", "4"], "--B does not apply to gc"),
    (["--scheme", "m-sgc", "--workers", "4", "--B", "3", "--W", "3", "--lam", "2"], "try W=4"),
    (["--scheme", "gc:s=1", "--workers", "5"], "line 1: 4 values, expected 5"),
    (["--scheme", "gc:s=1", "--model", "gilbert-elliott:p=0.1,q=0.5"], "--model needs --workers N and --rounds R"),
    (["--scheme", "sgc", "--workers", "4"], "unknown code 'sgc'"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, needle):
    pat = _write(tmp_path, "1,0,0,0\n")
    src = [] if "--model" in argv else ["--pattern", str(pat)]
    assert main(["stragglers", *argv, *src, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_bench_coding_runs(capsys):
    """``distopt bench coding`` at a small d: every table prints, no decode failures."""
    assert main(["bench", "coding", "--d", "2000", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "M-SGC (1,2,27) scheduling per round" in out and "GC s=27 (CRC)" in out and "rounds/s" in out
