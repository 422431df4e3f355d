"""Gradient codes and sequential gradient coding (specs/sgc.md): every scheme through the same
property tests, the spec's worked examples by hand (n = 4), exhaustive decodability for small
(n, s), the (B, W, lambda) checker (C4), the exhaustive guarantee (C5, C7) and bad parameters."""
from __future__ import annotations

import itertools

import pytest
import torch

from distopt._spec import spec_of
from distopt.coding import (CODES, GC, MSGC, SRSGC, Bursty, GradientCode, combine, crc_matrix, decode_coefficients,
                            encode, frc_matrix, make)
from distopt.coding.model import admits, first_violation, violation, window
from simulator.straggler_study import exhaustive, force, simulate
from simulator.stragglers import BurstyGE, Given

# spec -> n: every family, FRC and CRC, T = 0 .. 5, groups B = 1 .. 3
UNDER_TEST = {
    "uncoded": 5,
    "gc:s=1": 4,  # FRC (2 | 4)
    "gc:s=2": 5,  # CRC (3 does not divide 5)
    "gc:s=2,kind=crc": 6,
    "sr-sgc:B=1,W=2,lam=2": 4,
    "sr-sgc:B=2,W=5,lam=4": 8,
    "sr-sgc:B=3,W=4,lam=3": 7,
    "m-sgc:B=1,W=2,lam=2": 4,
    "m-sgc:B=2,W=3,lam=3": 7,
    "m-sgc:B=3,W=5,lam=2": 6,
    "m-sgc:B=1,W=4,lam=3,kind=frc": 8,
}
SPECS = list(UNDER_TEST)


def _scheme(spec):
    return make(spec, n=UNDER_TEST[spec])


def _bwl(sc):
    return (sc.B, sc.W, sc.lam) if hasattr(sc, "lam") else None


def test_table_covers_every_code():
    assert {_scheme(s).name for s in SPECS} == set(CODES)


@pytest.mark.parametrize("spec", SPECS)
def test_spec_string_round_trip(spec):
    sc = _scheme(spec)
    assert make(spec_of(sc)) == sc


@pytest.mark.parametrize("spec", SPECS)
def test_steady_state_tasks_carry_the_load(spec):
    """Each worker's tasks in a straggler-free steady state cover exactly ``load`` of a job,
    in ``results_per_round`` results; the parts partition the job."""
    sc = _scheme(spec)
    sizes = sc.part_sizes
    assert sum(sizes) == pytest.approx(1.0, abs=1e-12)
    state = sc.init()
    for _ in range(sc.T + 1):
        state, _ = sc.step(state, frozenset())
    tasks = sc.assign(state)
    assert len(tasks) == sc.n
    for per_worker in tasks:
        assert len(per_worker) == sc.results_per_round
        assert sum(sizes[p] for t in per_worker for p in t.parts) == pytest.approx(sc.load, rel=1e-12)
        assert all(len(t.parts) == len(t.coeffs) and max(t.parts) < len(sizes) for t in per_worker)
    keys = [(t.job, t.key) for w in tasks for t in w]
    assert len(keys) == len(set(keys)), "a result key names one task per job"


@pytest.mark.parametrize("spec", SPECS)
def test_decoded_sums_equal_the_truth_on_conforming_patterns(spec):
    """Random patterns inside each scheme's model (GE proposals thinned to (B, W, lam), or at
    most s per round for GC): no wait-outs, no failures, every job decoded exactly, by t+T."""
    sc = _scheme(spec)
    for seed in range(3):
        if _bwl(sc):
            smp = BurstyGE(*_bwl(sc), p=0.3, q=0.4).sample(sc.n, 25, seed=seed)
        else:  # GE thinned with lam = s and W = 2, B = 1: at most s per round
            smp = BurstyGE(1, 2, max(sc.s, 1), p=0.2, q=0.6).sample(sc.n, 25, seed=seed)
            if sc.s == 0:
                smp = smp._replace(flags=smp.flags & False)
        res = simulate(sc, smp, rule=Given(), numeric=True, d=3, seed=seed)
        s = res.summary()
        assert s["wait_outs"] == 0 and s["failures"] == 0
        assert s["correct"] == s["jobs"] == 25 - sc.T
        assert s["max_delay"] <= sc.T
        if sc.name == "m-sgc":
            assert all(r.decoded_round == r.job + sc.T for r in res.records)


def test_decoding_catches_a_wrong_result():
    """The numeric check can fail: corrupt one received result and the decoded sum is wrong."""
    sc = make("m-sgc:B=1,W=2,lam=2", n=4)
    g = torch.randn(len(sc.part_sizes), 3, dtype=torch.float64)
    state = sc.init()
    results = {}
    for r, S in enumerate([frozenset({0}), frozenset()]):
        for i, tasks in enumerate(sc.assign(state)):
            if i not in S:
                results.update({t.key: encode(t, g) for t in tasks if t.job == 0})
        state, out = sc.step(state, S)
    dec = sc.decoding(out.decoded[0])
    assert torch.allclose(combine(dec, results), g.sum(0), atol=1e-12)
    results[("d1", 1, 0)] = results[("d1", 1, 0)] + 1.0
    assert not torch.allclose(combine(dec, results), g.sum(0), atol=1e-6)


# ---------------------------------------------------------------- the spec's examples, n = 4


def test_gc_n4_by_hand():
    """Spec section 2 (check C1): the FRC and CRC matrices and the four decoding combinations."""
    assert frc_matrix(4, 1).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    B = crc_matrix(torch.tensor([[1.0, 1.0, -1.0, -1.0]]))
    assert B.tolist() == [[1, -1, 0, 0], [0, 1, 1, 0], [0, 0, 1, -1], [1, 0, 0, 1]]
    by_hand = {0: [0, 1, 0, 1], 1: [-1, 0, 1, 2], 2: [0, 1, 0, 1], 3: [1, 2, -1, 0]}
    for w, a in by_hand.items():
        sol = decode_coefficients(B, frozenset({w}), 1)
        assert sol.coef == pytest.approx(a, abs=1e-12)
        assert sol.residual < 1e-12
        assert (torch.tensor(sol.coef, dtype=torch.float64) @ B).tolist() == pytest.approx([1, 1, 1, 1], abs=1e-12)


def test_loads_n4_by_hand():
    """Spec section 5 example: GC 3/4 > SR-SGC 1/2 > M-SGC 3/8; M-SGC's D1 chunks are 3/16, D2 parts 1/16."""
    assert make("gc:s=2", n=4).load == 0.75
    assert make("sr-sgc:B=1,W=2,lam=2", n=4).load == 0.5
    m = make("m-sgc:B=1,W=2,lam=2", n=4)
    assert m.load == 0.375 and m.T == 1 and m.results_per_round == 2
    assert m.part_sizes == (3 / 16,) * 4 + (1 / 16,) * 4


def test_sr_sgc_worked_example():
    """Spec section 4: stragglers {W1, W2} in round 1; in round 2 W1 repeats its job-1 task,
    nobody may straggle, and both jobs decode at the end of round 2."""
    sc = make("sr-sgc:B=1,W=2,lam=2", n=4)
    assert sc.s == 1
    st, out = sc.step(sc.init(), frozenset({0, 1}))
    assert out == ((), ())  # job 0 has 2 > s missing: it waits for round 1
    assert [t[0].job for t in sc.assign(st)] == [0, 1, 1, 1]
    for w in range(4):  # W1, W2 may not straggle again; W3, W4 would exceed lam = 2
        assert not sc.admits(st, frozenset({w}))
    st, out = sc.step(st, frozenset())
    assert out.decoded == ((0, (frozenset({1}),)), (1, (frozenset({0}),)))


def test_m_sgc_worked_example():
    """Spec section 5: rounds 1-4 stragglers {W1}, {W2}, {W1}, {W3}. W1 re-attempts chunk 1 of
    job 1 in round 2; job 1's coded results come from W3, W4; job 2's likewise."""
    sc = make("m-sgc:B=1,W=2,lam=2", n=4)
    st = sc.init()
    pattern = [{0}, {1}, {0}, {2}]
    assert first_violation(pattern, sc.model) is None
    decoded = []
    for r, S in enumerate(map(frozenset, pattern)):
        tasks = sc.assign(st)
        if r == 1:
            # W1: its chunk of job 1, then the re-attempt of its lost chunk of job 0; W3: chunk, coded row
            assert [(t.job, t.key) for t in tasks[0]] == [(1, ("d1", 0, 0)), (0, ("d1", 0, 0))]
            assert [(t.job, t.key) for t in tasks[2]] == [(1, ("d1", 2, 0)), (0, ("d2", 0, 2))]
        if r == 2:
            assert tasks[1][1].key == ("d1", 1, 0) and tasks[1][1].job == 1
        st, out = sc.step(st, S)
        decoded += list(out.decoded)
    assert decoded[0] == (0, (frozenset({0, 1}),))  # coded results of W3, W4
    assert decoded[1] == (1, (frozenset({0, 1}),))
    two_in_a_row = force(sc, [{0}, {0}, set()])
    assert two_in_a_row[1] == [0]  # negative control: job 0 fails without the master's check


# ---------------------------------------------------------------- GC decodability ----------


@pytest.mark.parametrize("n,s", [(4, 1), (6, 2), (8, 3), (9, 2), (7, 3), (10, 4)])
@pytest.mark.parametrize("kind", ["frc", "crc"])
def test_every_survivor_set_decodes(n, s, kind):
    if kind == "frc" and n % (s + 1):
        pytest.skip("FRC needs (s+1) | n")
    code = GradientCode(n, s, kind)
    B = code.matrix
    assert ((B != 0).sum(1) == s + 1).all(), "load (s+1)/n: each worker touches s+1 parts"
    for size in range(s + 1):
        for e in itertools.combinations(range(n), size):
            sol = code.decode(frozenset(e))
            assert sol is not None, (n, s, e)
            a = torch.tensor(sol.coef, dtype=torch.float64)
            assert all(a[i] == 0 for i in e)
            assert (a @ B - 1).abs().max() < 1e-9


def test_frc_negative_control():
    """s+1 stragglers in one FRC group cannot be decoded; spread over groups they can."""
    code = GradientCode(6, 2, "frc")
    assert code.decode(frozenset({0, 1, 2})) is None
    assert decode_coefficients(code.matrix, frozenset({0, 1, 2})).residual > 0.5
    assert code.decode(frozenset({0, 1, 3})) is not None
    assert GradientCode(7, 3, "crc").decode(frozenset({0, 1, 2, 3})) is None


def test_crc_conditioning_is_reported():
    c = GradientCode(30, 3)
    assert c.resolved == "crc"
    cond = c.conditioning
    assert cond["kind"] == "crc" and not cond["ill_conditioned"] and cond["probe_residual"] < 1e-9
    assert cond["frc_alternative"] == "s=4 (load 0.1667)"
    assert GradientCode(30, 3).matrix.equal(c.matrix), "deterministic in the seed"
    assert GradientCode(12, 3).conditioning["kind"] == "frc"


# ---------------------------------------------------------------- the model checker (C4) ---


def test_model_checker_c4():
    m = Bursty(1, 2, 2)
    assert first_violation([{0}, {0}], m)[0] == 1  # a worker in rounds r and r+1
    assert first_violation([{0, 1}, {2}], m)[0] == 1  # 3 distinct in 2 consecutive rounds
    assert first_violation([{0}, set(), {0}], m) is None  # the same worker two rounds apart
    assert first_violation([{0}, {1}, {0}, {2}], m) is None  # spec section 5 example
    assert "temporal" in first_violation([{0}, {0}], m)[1]
    assert "spatial" in first_violation([{0, 1}, {2}], m)[1]


def test_model_checker_bursts_and_windows():
    m = Bursty(2, 4, 3)
    assert first_violation([{0}, {0}, set(), set(), set(), {0}], m) is None  # a burst of B=2; W rounds after its end
    assert first_violation([{0}, {0}, set(), set(), {0}], m)[0] == 4  # rounds 1 and 4 share a window
    assert first_violation([{0}, {0}, {0}], m)[0] == 2  # burst longer than B
    assert first_violation([{0}, set(), {0}], m)[0] == 2  # two episodes inside one window
    assert first_violation([{0}, {1}, {2}, {3}], m)[0] == 3  # 4 distinct in a window of 4
    assert first_violation([{0}, {1}, {2}, set(), {3}], m) is None  # rounds 1..4: 3 distinct
    w = window((frozenset({0}), frozenset({1})), m, 2, exempt=(True, False))
    assert w.seen == {1} and admits(w, frozenset({0, 2}), m)
    assert violation(window((), m, 0), frozenset({0, 1, 2, 3}), m, 0).startswith("round 0: 4 distinct")


# ---------------------------------------------------------------- the guarantee (C5, C7) ---


@pytest.mark.parametrize("n,R,bwl,count", [(4, 5, (1, 2, 2), 3931), (4, 5, (2, 3, 2), 2943), (4, 6, (1, 3, 2), 2701),
                                            (3, 7, (3, 4, 2), 10387)])
def test_exhaustive_guarantee_c5(n, R, bwl, count):
    B, W, lam = bwl
    for fam in ("m-sgc", "sr-sgc"):
        e = exhaustive(make(f"{fam}:B={B},W={W},lam={lam}", n=n), R)
        assert e.patterns == count and e.failing == 0


def test_exhaustive_check_can_fail():
    """Without the model (every pattern admitted) M-SGC and SR-SGC do fail: the search sees it."""

    class Anything(MSGC):
        def admits(self, state, stragglers):
            return True

    e = exhaustive(Anything(n=3, B=1, W=2, lam=1), 3)
    assert e.patterns == 8**3 and e.failing > 0


def test_relaxed_sr_sgc_check_c7():
    strict = exhaustive(make("sr-sgc:B=1,W=2,lam=2", n=4), 5)
    relaxed = exhaustive(make("sr-sgc:B=1,W=2,lam=2,relaxed=true", n=4), 5)
    assert (strict.patterns, relaxed.patterns) == (3931, 13331)
    assert relaxed.failing == 0


# ---------------------------------------------------------------- bad parameters -----------


@pytest.mark.parametrize("spec,n,needle", [
    ("m-sgc:B=2,W=2,lam=2", 4, "needs 1 <= B < W: got B=2, W=2; try W=3"),
    ("sr-sgc:B=3,W=3,lam=1", 4, "try W=4"),
    ("m-sgc:B=1,W=2,lam=4", 4, "needs 1 <= lam < n: got lam=4 with n=4 workers; try lam=3"),
    ("sr-sgc:B=1,W=2,lam=5", 4, "try lam=3"),
    ("sr-sgc:B=3,W=5,lam=2", 8, "sr-sgc needs B | (W-1): W-1=4 is not a multiple of B=3; try W=7"),
    ("gc:s=4", 4, "needs 0 <= s < n: got s=4 with n=4 workers; try s=3"),
    ("gc", 4, "needs s"),
    ("gc:s=2,kind=frc", 5, "FRC needs (s+1) | n"),
    ("m-sgc:B=1,W=2", 4, "missing lam"),
    ("m-sgc:B=1,W=2,lam=2", None, "needs the number of workers"),
    ("sgc:B=1", 4, "unknown code 'sgc'"),
    ("m-sgc:B=1,W=2,lam=2,x=1", 4, "has no option 'x'"),
])
def test_bad_parameters_fail_with_the_fix(spec, n, needle):
    with pytest.raises(ValueError, match=None) as e:
        make(spec, n=n)
    assert needle in str(e.value)


def test_classes_validate_too():
    with pytest.raises(ValueError, match="B | "):
        SRSGC(n=8, B=2, W=4, lam=2)
    with pytest.raises(ValueError, match="official_rule"):
        GC(n=4, s=0, official_rule=True)
    assert GC(n=4, s=2, official_rule=True).tolerance == 1


def test_encode_many_equals_encode_and_combine_does_not_mutate():
    from distopt.coding import Decoding, encode_many
    from distopt.coding.msgc import MState

    sc = make("m-sgc:B=2,W=3,lam=3", n=7)
    g = torch.randn(len(sc.part_sizes), 5, dtype=torch.float64)
    tasks = [t for w in sc.assign(MState(4, (), {}, {})) for t in w if t.job == 2]  # D1 and D2 tasks of job 2
    assert torch.allclose(encode_many(tasks, g), torch.stack([encode(t, g) for t in tasks]), atol=1e-12)
    results = {("x",): torch.ones(3), ("y",): torch.ones(3)}
    assert combine(Decoding(0, ((("x",), 2.0), (("y",), -1.0)), 2.0, 0.0), results).tolist() == [1.0] * 3
    assert results[("x",)].tolist() == [1.0] * 3
