"""Methods: hand-computed rounds, the reduction identities of specs/ef-family.md (R3, R10), the
vectorized engine against a per-worker loop, and bad input."""
from __future__ import annotations

import math

import pytest
import torch

from distopt.methods import METHODS, make
from simulator.engine import NonFiniteError, RunConfig, Simulation
from simulator.oracles import QuadraticOracle


def _toy():
    """n=2, d=3: f_i = 1/2 (x - c_i)^T H_i (x - c_i), H_1 = diag(1,2,3), H_2 = diag(2,1,1), x^0 = 0."""
    c = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 1.0, 0.5]], dtype=torch.float64)
    H = torch.tensor([[1.0, 2.0, 3.0], [2.0, 1.0, 1.0]], dtype=torch.float64)
    return QuadraticOracle(c, H=H)


def _iterates(oracle, rounds, **cfg):
    sim = Simulation(oracle, RunConfig(rounds=rounds, progress=False, **cfg), keep_iterates=True)
    sim.run()
    return torch.stack(sim.iterates)


# x^1, x^2 (and x^3) worked out by hand from the pseudo-code of specs/ef-family.md §3
HAND = {
    "ef21": [(-1.75, -0.75, 2.375), (-2.625, -1.5, 2.96875)],
    "ef14": [(-2.0, 0.0, 2.25), (-3.0, -2.0, 2.25)],
    "econtrol:eta=0.5": [(-1.75, -0.75, 2.375), (-2.625, -1.5, 2.96875), (-3.5, -1.3125, 2.5234375)],
    "dcgd": [(-2.0, 0.0, 2.25), (-3.0, -1.0, 2.25)],
    "gd": [(-1.75, -0.75, 2.375), (-2.1875, -0.9375, 2.375)],
}


@pytest.mark.parametrize("method", list(HAND))
def test_rounds_by_hand(method):
    comp = "identity" if method == "gd" else "topk:k=1"
    xs = _iterates(_toy(), len(HAND[method]), method=method, compressor=comp, lr=0.5)
    expect = torch.tensor(HAND[method], dtype=torch.float64)
    assert torch.allclose(xs[1:], expect, atol=1e-12), (method, xs[1:])


def test_ef21_with_identity_is_gd():
    o = _toy()
    a = _iterates(o, 30, method="ef21", compressor="identity", lr=0.1)
    b = _iterates(o, 30, method="gd", compressor="identity", lr=0.1)
    assert torch.allclose(a, b, atol=1e-13, rtol=0)


def _hetero_logreg(n=20):
    from experiments.workloads import make as make_workload

    return make_workload("logreg:rows=400,features=12,scale=10,scaled_frac=0.1").oracle(n)


def test_r10_econtrol_eta0_is_ef21_exactly():
    o = _hetero_logreg()
    a = _iterates(o, 200, method="econtrol:eta=0", compressor="topk:k=2", lr=0.05)
    b = _iterates(o, 200, method="ef21", compressor="topk:k=2", lr=0.05)
    assert float((a - b).abs().max()) == 0.0


def test_r10_econtrol_eta1_frozen_shift_is_ef14():
    o = _hetero_logreg()
    a = _iterates(o, 200, method="econtrol:eta=1,init_shift=zero,learn_shift=false", compressor="topk:k=2", lr=0.05)
    b = _iterates(o, 200, method="ef14", compressor="topk:k=2", lr=0.05)
    assert float((a - b).abs().max()) < 1e-12


def test_r3_ef21w_equals_ef21_under_topk():
    o = _hetero_logreg()
    assert max(o.smoothness) / min(o.smoothness) > 5, "the test needs heterogeneous L_i"
    a = _iterates(o, 300, method="ef21-w", compressor="topk:k=1", lr=0.02)
    b = _iterates(o, 300, method="ef21", compressor="topk:k=1", lr=0.02)
    assert float((a - b).abs().max()) < 1e-12
    # ... and differs from EF21 under a compressor that is not positively homogeneous
    c = _iterates(o, 50, method="ef21-w", compressor="natural", lr=0.02)
    d = _iterates(o, 50, method="ef21", compressor="natural", lr=0.02)
    assert float((c - d).abs().max()) > 1e-8


CASES = [
    ("gd", "identity", {}), ("dcgd", "topk:k=2", {}), ("ef14", "randk:k=3", {}), ("ef21", "qsgd:levels=2", {}),
    ("ef21-plus", "topk:k=2", {}), ("ef21-w", "randk:k=2,scaled=true", {}), ("ef21-sgdm:momentum=0.3", "topk:k=2", {}),
    ("econtrol:eta=0.2", "natural", {}), ("ef21", "powersgd:rank=1", {}), ("ef21", "topk:k=2", {"participation": 0.5}),
    ("ef21", "topk:k=2", {"down_compressor": "topk:k=3"}), ("econtrol", "permk", {}), ("ef21", "bernoulli:p=0.5", {}),
]


@pytest.mark.parametrize("method, comp, extra", CASES)
def test_vectorized_equals_per_worker_loop(method, comp, extra):
    """float64: one batched call per round == one call per worker (what FL simulators do)."""
    o = _hetero_logreg(6)
    cfg = dict(method=method, compressor=comp, lr=0.05, seed=3, **extra)
    sv = Simulation(o, RunConfig(rounds=25, progress=False, workers="vectorized", **cfg), keep_iterates=True)
    hv = sv.run()
    sl = Simulation(o, RunConfig(rounds=25, progress=False, workers="loop", **cfg), keep_iterates=True)
    hl = sl.run()
    assert torch.allclose(torch.stack(sv.iterates), torch.stack(sl.iterates), atol=1e-12, rtol=0)
    assert hv.column("bits_up") == hl.column("bits_up")


def test_every_method_is_covered_by_the_parity_cases():
    assert {c[0].split(":")[0] for c in CASES} == set(METHODS)


def test_bits_are_counted_from_the_payload():
    o = _hetero_logreg(5)  # d = 12, float64
    h = Simulation(o, RunConfig(method="ef21", compressor="topk:k=1", lr=0.05, rounds=3, progress=False)).run()
    up = h.column("bits_up")
    assert up[1] == 12 * 64  # round 0: the uncompressed gradient
    assert up[2] - up[1] == 64 + 16 and up[3] - up[2] == 64 + 16  # one float64 value + one int16 index
    assert h.column("bits_down")[1] == 12 * 64
    h = Simulation(o, RunConfig(method="ef21", compressor="topk:k=1", lr=0.05, rounds=3, progress=False,
                                down_compressor="topk:k=2")).run()
    assert h.column("bits_down")[2] - h.column("bits_down")[1] == 2 * (64 + 16)


def test_partial_participation_keeps_absent_states_and_saves_bits():
    o = _hetero_logreg(20)
    full = Simulation(o, RunConfig(method="ef21", compressor="topk:k=1", lr=0.05, rounds=200, progress=False)).run()
    pp = Simulation(o, RunConfig(method="ef21", compressor="topk:k=1", lr=0.05, rounds=200, progress=False,
                                 participation=0.5)).run()
    ratio = (pp.last["bits_up"] - pp.column("bits_up")[1]) / (full.last["bits_up"] - full.column("bits_up")[1])
    assert 0.4 < ratio < 0.6
    assert pp.last["grad_norm_sq"] < pp.rows[0]["grad_norm_sq"]


# ---- bad input ---------------------------------------------------------------------------
def test_bad_methods_and_stepsizes():
    with pytest.raises(ValueError, match="unknown method 'ef22'.*valid: .*ef21"):
        make("ef22")
    with pytest.raises(ValueError, match="gd sends uncompressed"):
        make("gd", compressor="topk:k=1")
    with pytest.raises(ValueError, match="eta must be in"):
        make("econtrol:eta=2")
    for lr in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive number"):
            RunConfig(lr=lr)
    with pytest.raises(ValueError, match="unknown stepsize rule"):
        RunConfig(lr="theroy")
    with pytest.raises(ValueError, match="no verified theory stepsize"):
        Simulation(_toy(), RunConfig(method="econtrol", compressor="topk:k=1", lr="theory", progress=False))


def test_workers_more_than_rows():
    from experiments.workloads import make as make_workload

    with pytest.raises(ValueError, match="only 50 data rows"):
        make_workload("logreg:rows=50,features=4").oracle(60)


@pytest.mark.parametrize("workers, method, comp", [("vectorized", "ef21", "topk:k=1"), ("loop", "ef21", "topk:k=1"),
                                                   ("loop", "gd", "identity")])
def test_nan_gradient_names_worker_and_round(tmp_path, workers, method, comp):
    o = _toy()
    real = o.grads

    def bad(x, step, who):  # the loop asks for one worker's gradient at a time
        g = real(x, step, who)
        if step == 3 and 1 in who.tolist():
            g = g.clone()
            g[who.tolist().index(1)] = float("nan")
        return g

    o.grads = bad
    sim = Simulation(o, RunConfig(method=method, compressor=comp, lr=0.1, rounds=10, progress=False,
                                  workers=workers), tmp_path)
    with pytest.raises(NonFiniteError, match="round 3: worker 1 produced a non-finite gradient"):
        sim.run()
    # nothing computed is lost: the history up to the failure is on disk
    from simulator.history import History

    rows = History.read(tmp_path)
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert "diverged" in (tmp_path / "config.json").read_text()


def test_divergence_can_stop_instead_of_raising():
    o = _toy()
    h = Simulation(o, RunConfig(method="gd", compressor="identity", lr=5.0, rounds=2000, progress=False,
                                on_nonfinite="stop")).run()
    assert len(h.rows) < 2000 and math.isfinite(h.rows[0]["loss"])
