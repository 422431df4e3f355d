"""Training with coded gradients in the simulator (issue 5 part 4; specs/sgc.md 1, 7.5):
T+1 models round-robin, every job decoded, the clock equal to the straggler study's."""
from __future__ import annotations

import pytest
import torch

from distopt.coding import make as make_code
from simulator.coded import CodedSimulation
from simulator.engine import RunConfig, Simulation
from simulator.parts import LogisticParts, part_ranges, parts_for, worker_parts

N = 8


@pytest.fixture(scope="module")
def logreg():
    from experiments.workloads import make

    w = make("logreg:rows=403,features=10")  # 403 rows: shards of unequal size (51, 51, 51, 50, ...)
    return w, w.oracle(N)


def _coded(w, o, code, rounds=24, keep=False, **cfg):
    cfg = RunConfig(**{"method": "gd", "compressor": "identity", "lr": 1.0, "rounds": rounds, "code": code,
                       "progress": False, **cfg})
    return CodedSimulation(o, cfg, parts=parts_for(w, N, make_code(code, n=N)), keep_iterates=keep)


def test_part_gradients_sum_to_the_full_gradient(logreg):
    w, o = logreg
    x = torch.linspace(-1, 1, o.d, dtype=torch.float64)
    full = o.grads(x, 0, torch.arange(N)).mean(0)  # grad f = mean_i grad f_i
    for code in ("gc:s=1", "m-sgc:B=1,W=2,lam=2", "sr-sgc:B=2,W=3,lam=3"):
        parts = parts_for(w, N, make_code(code, n=N))
        g = parts.grads(x, torch.arange(len(parts.ranges)))
        assert torch.allclose(g.sum(0), full, atol=1e-15, rtol=1e-13), code
    # equal parts are exactly the shards: g_i = grad f_i / n
    parts = parts_for(w, N, make_code("uncoded", n=N))
    assert torch.allclose(parts.grads(x, torch.arange(N)), o.grads(x, 0, torch.arange(N)) / N, atol=1e-16, rtol=1e-14)


def test_part_ranges_and_worker_parts():
    assert part_ranges([0.5, 0.25, 0.25], 7) == [(0, 3), (3, 5), (5, 7)]  # 3.5, 1.75, 1.75: largest remainders
    with pytest.raises(ValueError, match="parts but the data has 2 rows"):
        part_ranges([1 / 3] * 3, 2)
    m = make_code("m-sgc:B=1,W=2,lam=2", n=4)  # D1 chunks 0..3, D2 parts 4..7 under a (4, 2) CRC
    assert worker_parts(m, 0) == (0, 4, 5, 6)
    held = {p for i in range(4) for p in worker_parts(m, i)}
    assert held == set(range(len(m.part_sizes)))
    for i in range(4):  # everything the scheme ever assigns worker i is in its parts
        assert {p for t in m.assign(m.init())[i] for p in t.parts} <= set(worker_parts(m, i))


def test_uncoded_gd_is_plain_gd(logreg):
    w, o = logreg
    coded = _coded(w, o, "uncoded", rounds=15, keep=True)
    coded.run()
    plain = Simulation(o, RunConfig(method="gd", compressor="identity", lr=1.0, rounds=15, progress=False),
                       keep_iterates=True)
    plain.run()
    assert torch.allclose(torch.stack(coded.iterates), torch.stack(plain.iterates), atol=1e-14, rtol=0)


def test_uncoded_dcgd_shared_randk_is_plain_dcgd(logreg):
    """A linear compressor commutes with decoding: same coordinates for every worker of a job."""
    w, o = logreg
    comp = "randk:k=3,shared=true"
    coded = _coded(w, o, "uncoded", rounds=10, keep=True, method="dcgd", compressor=comp, lr=0.5)
    coded.run()
    plain = Simulation(o, RunConfig(method="dcgd", compressor=comp, lr=0.5, rounds=10, progress=False), keep_iterates=True)
    plain.run()
    assert torch.allclose(torch.stack(coded.iterates), torch.stack(plain.iterates), atol=1e-14, rtol=0)


@pytest.mark.parametrize("code", ["gc:s=2", "m-sgc:B=1,W=2,lam=2", "m-sgc:B=2,W=3,lam=3"])
def test_every_job_decodes_and_the_clock_is_the_studys(logreg, code):
    """Under delays the run's simulated wall-clock is the straggler study's runtime (same sample,
    same rule): the training loop and the token-level replay agree round by round."""
    from simulator.straggler_study import simulate as study
    from simulator.stragglers import TimeModel, make_model, make_rule

    w, o = logreg
    model = "gilbert-elliott:p=0.1,q=0.6"
    sim = _coded(w, o, code, rounds=30, delays=model, seed=3)
    hist = sim.run()
    scheme = make_code(code, n=N)
    J = 30 - scheme.T
    assert sim.failures == 0 and sim.decoded == J and hist.last["jobs_decoded"] == J
    ref = study(scheme, make_model(model).sample(N, 30, 3), time=TimeModel(), rule=make_rule("pattern"))
    assert hist.last["time_s"] == pytest.approx(ref.runtime, rel=1e-12)
    assert hist.last["wait_outs"] == ref.wait_outs
    assert hist.last["loss"] < hist.rows[0]["loss"]
    # T+1 models, round-robin: each got about J/(T+1) updates
    assert sim.M == scheme.T + 1
    assert {r["model"] for r in hist.rows[1:]} == set(range(sim.M))


def test_erased_results_are_not_used(logreg):
    """With M-SGC under delays the decoded gradients still equal the true job gradients: the
    models follow the no-straggler run exactly (every job decodes by t+T either way)."""
    w, o = logreg
    a = _coded(w, o, "m-sgc:B=1,W=2,lam=2", rounds=20, keep=True, delays="bursty:B=1,W=2,lam=2,p=0.3,q=0.8")
    a.run()
    b = _coded(w, o, "m-sgc:B=1,W=2,lam=2", rounds=20, keep=True)
    b.run()
    assert a.erased > 0
    assert torch.allclose(torch.stack(a.iterates), torch.stack(b.iterates), atol=1e-13, rtol=0)


def test_coded_resume_is_bit_exact(logreg, tmp_path):
    w, o = logreg
    code, delays = "m-sgc:B=1,W=2,lam=2", "gilbert-elliott:p=0.1,q=0.6"
    cfg = RunConfig(method="gd", compressor="identity", lr=1.0, rounds=16, code=code, delays=delays, progress=False,
                    checkpoint_every=7)
    full = CodedSimulation(o, cfg, tmp_path / "a", parts=parts_for(w, N, make_code(code, n=N)))
    full.run()
    resumed = CodedSimulation(o, cfg, tmp_path / "b", parts=parts_for(w, N, make_code(code, n=N)), resume=tmp_path / "a")
    resumed.run()
    assert all(torch.equal(a, b) for a, b in zip(full.models, resumed.models))
    cols = ("round", "loss", "bits_up", "bits_down", "time_s", "jobs_decoded", "wait_outs")
    assert [[r[c] for c in cols] for r in full.history.rows] == [[r[c] for c in cols] for r in resumed.history.rows]


def test_coded_runs_reject_stateful_or_nonlinear_methods(logreg):
    w, o = logreg
    with pytest.raises(ValueError, match="error-feedback state.*--method gd"):
        _coded(w, o, "gc:s=1", method="ef21", compressor="topk:k=2")
    with pytest.raises(ValueError, match="not linear.*randk:...,shared=true"):
        _coded(w, o, "gc:s=1", method="dcgd", compressor="topk:k=2")
    with pytest.raises(ValueError, match="not linear"):
        _coded(w, o, "gc:s=1", method="dcgd", compressor="fp16")  # scaled by default
    with pytest.raises(ValueError, match="leaves no job"):
        _coded(w, o, "m-sgc:B=2,W=3,lam=2", rounds=3)


def test_cli_simulate_with_code_and_stragglers(tmp_path):
    from experiments.cli import main
    from simulator.history import History

    rc = main(["simulate", "--workload", "logreg:rows=200,features=6", "--workers", "4", "--method", "gd",
               "--compressor", "identity", "--code", "m-sgc:B=1,W=2,lam=2", "--stragglers",
               "gilbert-elliott:p=0.1,q=0.6", "--rounds", "12", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    rows = History.read(tmp_path)
    assert len(rows) == 13 and rows[-1]["jobs_decoded"] == 11 and rows[-1]["failures"] == 0
    assert rows[-1]["time_s"] > 0 and {"stragglers", "wait_outs", "erased", "model"} <= set(rows[-1])
    assert main(["simulate", "--workload", "lstsq", "--workers", "4", "--method", "gd", "--compressor", "identity",
                 "--code", "gc:s=1", "--rounds", "3", "--out", str(tmp_path / "x")]) == 2  # no row data: clear error


def test_logistic_parts_hold_only_their_rows(logreg):
    w, o = logreg
    A, b = w.dataset()
    ranges = part_ranges([1 / N] * N, A.shape[0])
    mine = LogisticParts(A, b, N, w.reg, ranges, keep=(2, 3))
    full = LogisticParts(A, b, N, w.reg, ranges)
    x = torch.linspace(-1, 1, o.d, dtype=torch.float64)
    assert mine.A.shape[0] == 2
    assert torch.allclose(mine.grads(x, torch.tensor([3, 2])), full.grads(x, torch.tensor([3, 2])), atol=0, rtol=0)
    with pytest.raises(ValueError, match="not held here"):
        mine.grads(x, torch.tensor([0]))
