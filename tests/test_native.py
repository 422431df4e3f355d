"""The native Top-K kernel (distopt/_native): the same sets as the definition and as the
PyTorch path, the fused EF21 step bit-identical to its two-step form, and a clean fallback
when no compiler is there."""
from __future__ import annotations

import pickle

import pytest
import torch

from distopt import _native
from distopt.compressors import make
from distopt.compressors import sparse
from distopt.methods import make as make_method
from distopt.methods.base import Sent, send_shift
from distopt.noise import Noise

pytestmark = pytest.mark.skipif(not _native.available(), reason="no C compiler: the native kernel is not built")

DTYPES = (torch.float32, torch.float64)


def _definition(x: torch.Tensor, k: int) -> torch.Tensor:
    """Order by (-|x|, index), keep the first k, ascending (NaN above inf above finite)."""
    mag = x.double().abs().nan_to_num(nan=float("inf"), posinf=1e308)
    mag = torch.where(torch.isnan(x), torch.full_like(mag, float("inf")), mag)
    return torch.sort(-mag, dim=1, stable=True).indices[:, :k].sort(dim=1).values


def _hard_stack(dtype, n=40, d=10_000, seed=11) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x[1, 300:420] = 50.0  # the top entries packed into a few neighbouring groups
    x[2] = 1.0  # one big tie
    x[3] = 0.0  # all zero
    x[4, ::3] = x[4, ::3].round()  # ties at every magnitude
    x[5, 7::50] = 1e6  # one outlier per group
    x[6] *= 1e-30  # subnormal-ish scale
    x[7, :5000] = 0.0
    x[8] = torch.arange(d, dtype=x.dtype) % 7
    x[9, 17] = -0.0
    x[10, d - 3:] = 1e3  # the largest in the ragged last group
    if n > 11:  # heavy tails over many binades, half exact zeros (dead ReLUs' gradients)
        x[11] = torch.randn(d, generator=g) ** 7 * (torch.rand(d, generator=g) < 0.5)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_native_topk_equals_the_definition_and_the_torch_path(dtype, monkeypatch):
    x = _hard_stack(dtype)
    for k in (1, 37, 100, 600, 2500, 9999):
        vals, idx, bad = _native.topk_rows(x.contiguous(), k)
        ref = _definition(x, k)
        assert torch.equal(idx, ref), k
        assert torch.equal(vals, x.gather(1, ref)), k
        assert not bool(bad.any())
    monkeypatch.setenv("DISTOPT_NATIVE", "0")  # the PyTorch path picks the same sets
    assert not sparse._native_stack(x, 100)
    for k in (1, 100, 600):
        assert torch.equal(sparse.topk_select(x, k)[1], _definition(x, k)), k


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_native_ranks_nan_and_inf_first_and_flags_the_row(dtype):
    x = _hard_stack(dtype, n=12, d=3000)[:6].contiguous()
    x[0, 5] = float("nan")
    x[1, 2999] = float("-inf")
    x[2, 0] = float("inf")
    x[2, 1] = float("nan")
    vals, idx, bad = _native.topk_rows(x.contiguous(), 4)
    assert bad.tolist() == [True, True, True, False, False, False]
    assert 5 in idx[0].tolist() and 2999 in idx[1].tolist() and {0, 1} <= set(idx[2].tolist())
    with pytest.raises(ValueError, match="(?i)nan|finite"):
        make("topk:k=4").compress(x)  # the compressor turns the flag into a clear error


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_shift_is_bit_identical_to_the_two_step_form(dtype):
    """EF21's c = TopK(a - b), b + c: payload, new shift and decoded value, bit for bit."""
    a = _hard_stack(dtype, seed=1)
    b = _hard_stack(dtype, seed=2).flip(1).contiguous() * 0.5
    topk = make("topk:ratio=0.01")
    fused = topk.compress_shift(a, b)
    assert fused is not None
    (vals, idx), new = fused
    ref_vals, ref_idx = topk.compress(a - b)
    assert torch.equal(idx, ref_idx) and idx.dtype == ref_idx.dtype == torch.int16
    assert torch.equal(vals, ref_vals)
    two_step = b + topk.decompress((ref_vals, ref_idx), a.shape[1], None, dtype)
    assert torch.equal(new, two_step)
    assert topk.compress_shift(a[0], b[0]) is None  # a lone row: the two-step form


def test_ef21_step_through_send_shift_matches_the_composed_step(monkeypatch):
    """The method's step with the kernel on and off: the same payload, the same g_i, and a lazy
    message whose value and row sum agree with the dense form."""
    n, d = 64, 4096
    g = torch.Generator().manual_seed(3)
    G, H = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    method = make_method("ef21", "topk:k=40", n=n)
    from distopt.methods.ef21 import EF21Worker

    noise = Noise(0, 1, torch.arange(n), n)
    sent, W = method.worker_step(G, EF21Worker(H, ()), noise, 0.1)
    assert sent._value is None  # fused: decoded on demand
    monkeypatch.setenv("DISTOPT_NATIVE", "0")
    ref, W_ref = method.worker_step(G, EF21Worker(H, ()), noise, 0.1)
    assert ref._value is not None
    assert all(torch.equal(p, q) for p, q in zip(sent.payload, ref.payload))
    assert torch.equal(W.g, W_ref.g)
    assert sent.bits == ref.bits
    assert torch.allclose(sent.total(), ref.value.sum(0), rtol=0, atol=1e-12)
    assert torch.equal(sent.value, ref.value)
    back = pickle.loads(pickle.dumps(sent))  # Ray pickles messages: with their value
    assert torch.equal(back.value, ref.value) and back.bits == ref.bits


def test_send_shift_falls_back_for_stateful_or_unfused_codecs():
    x, h = torch.randn(8, 100), torch.randn(8, 100)
    codec = make("randk:k=5")  # no fused kernel
    rng = Noise(0, 1, torch.arange(8), 8)
    sent, new, _ = send_shift(codec, x, h, rng)
    assert sent._value is not None and torch.equal(new, h + sent.value)


def test_sent_needs_a_value_or_a_decoder():
    with pytest.raises(ValueError, match="decode"):
        Sent((torch.zeros(1),), None, make("topk:k=1"))


def test_no_compiler_falls_back_with_a_warning(monkeypatch, tmp_path):
    """Without a compiler the kernel is off, a warning says why, and Top-K still works."""
    monkeypatch.setattr(_native, "_lib", None)
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setenv("DISTOPT_CACHE", str(tmp_path))  # nothing cached there
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.warns(RuntimeWarning, match="native Top-K kernel unavailable"):
        assert not _native.available()
    assert _native.topk_rows(torch.randn(4, 20000), 5) is None
    x = _hard_stack(torch.float32, n=20, d=5000)
    assert torch.equal(make("topk:k=50").compress(x)[1].to(torch.int64), _definition(x, 50))


def test_native_is_off_with_the_environment_switch(monkeypatch):
    monkeypatch.setenv("DISTOPT_NATIVE", "0")
    assert not _native.available()
    assert _native.topk_rows(torch.randn(4, 20000), 5) is None


def test_bad_arguments_are_named():
    x = torch.randn(4, 1000)
    with pytest.raises(ValueError, match="1 <= k < d"):
        _native.topk_rows(x, 1000)
    with pytest.raises(ValueError, match="contiguous"):
        _native.topk_rows(x.t(), 3)
    with pytest.raises(ValueError, match="needs b"):
        _native.topk_rows(x, 3, out=torch.empty_like(x))
    with pytest.raises(ValueError, match="float32 or float64"):
        _native.topk_rows(x.half(), 3)


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_fused_round_names_the_worker_of_a_non_finite_gradient(poison, tmp_path):
    """The vectorized engine skips its own NaN scan when the fused kernel saw every entry; a
    NaN or inf gradient must still stop the run naming its worker and round, with the workers'
    states not advanced past the last good round."""
    from simulator.engine import NonFiniteError, RunConfig, Simulation
    from simulator.oracles import QuadraticOracle

    g = torch.Generator().manual_seed(0)
    o = QuadraticOracle(torch.randn(8, 10_000, generator=g, dtype=torch.float64))
    real = o.grads

    def bad(x, step, workers):
        G = real(x, step, workers)
        if step == 3:
            G = G.clone()
            G[5, 1234] = poison
        return G

    o.grads = bad
    sim = Simulation(o, RunConfig(method="ef21", compressor="topk:k=100", lr=0.1, rounds=10, progress=False), tmp_path)
    with pytest.raises(NonFiniteError, match="round 3: worker 5 produced a non-finite gradient"):
        sim.run()
    assert bool(torch.isfinite(sim.executor.W.g).all())


@pytest.mark.skipif(not _native.parallel_row(), reason="the kernel was built without OpenMP: lone rows take the torch path")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_long_row_split_over_threads_is_exact(dtype, monkeypatch):
    """A lone long row (a DDP bucket) is split by ranges of groups over the threads: the same
    set as the definition on ties, outliers at the range borders and a ragged last group, for
    1 and 2 threads, plain and fused."""
    g = torch.Generator().manual_seed(5)
    d = 200_003
    x = torch.randn(1, d, generator=g)
    x[0, ::5] = x[0, ::5].round()  # ties at every magnitude
    x[0, d // 2 - 3: d // 2 + 3] = 40.0  # the largest entries straddle the threads' border
    x[0, d - 2:] = 40.0  # and sit in the ragged last group
    x = x.to(dtype)
    b = (torch.randn(1, d, generator=g) * 0.1).to(dtype)
    for threads in (1, 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        for k in (1, 8, 2000, 60_000):
            vals, idx, bad = _native.topk_rows(x, k)
            assert torch.equal(idx, _definition(x, k)), (threads, k)
            assert torch.equal(vals, x.gather(1, idx)) and not bool(bad.any())
            out = torch.empty_like(b)
            vals, idx, _ = _native.topk_rows(x, k, b, out)
            r = x - b
            assert torch.equal(idx, _definition(r, k)), (threads, k)
            assert torch.equal(out, b + torch.zeros_like(b).scatter_(1, idx, r.gather(1, idx)))
    y = x.clone()
    y[0, 123_456] = float("nan")
    assert bool(_native.topk_rows(y, 10)[2][0])
    one = make("topk:k=2000")
    assert sparse._native_stack(x, 2000)
    assert torch.equal(one.compress(x[0])[1].to(torch.int64), _definition(x, 2000)[0])
    fused = one.compress_shift(x[0], b[0])  # EF21's step on one bucket
    assert fused is not None and fused[1].shape == (d,)
    assert torch.equal(fused[0][1].to(torch.int64), _definition(x - b, 2000)[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(40, 10_000), (200_003,)], ids=["stack", "long-row"])
def test_fused_econtrol_step_is_bit_identical_to_the_composed_form(dtype, shape, monkeypatch):
    """EControl's D = TopK(eta e + (g - h)), e + (g - h) - D, h + D from one kernel pass: the
    same payload, e and h, bit for bit, as the torch ops (native off); learn_shift on and off."""
    from distopt.methods.econtrol import EControlWorker

    if len(shape) == 1 and not _native.parallel_row():
        pytest.skip("a lone row takes the torch path without OpenMP")
    g = torch.Generator().manual_seed(8)
    G, H, E = (torch.randn(*shape, generator=g).to(dtype) for _ in range(3))
    E[..., ::7] = 0.0
    n = shape[0] if len(shape) == 2 else 2
    noise = Noise(0, 1, torch.arange(n) if len(shape) == 2 else 0, n)
    for spec in ("econtrol:eta=0.1", "econtrol:eta=0.37,learn_shift=false"):
        method = make_method(spec, "topk:ratio=0.01", n=n)
        sent, W = method.worker_step(G, EControlWorker(E, H, ()), noise, 0.1)
        assert sent.finite_checked and sent._value is None  # the fused path ran
        with monkeypatch.context() as m:
            m.setenv("DISTOPT_NATIVE", "0")
            ref, W_ref = method.worker_step(G, EControlWorker(E, H, ()), noise, 0.1)
        assert not ref.finite_checked
        assert all(torch.equal(p, q) for p, q in zip(sent.payload, ref.payload)), spec
        assert torch.equal(W.e, W_ref.e) and torch.equal(W.h, W_ref.h), spec
        assert torch.equal(sent.value, ref.value)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(40, 10_000), (200_003,)], ids=["stack", "long-row"])
def test_fused_ef14_step_is_bit_identical_to_the_composed_form(dtype, shape, monkeypatch):
    """EF14's p = e + lr g, D = TopK(p), e = p - D from one kernel pass: the same payload and
    error, bit for bit, as the torch ops (native off), at stepsizes that round in float32."""
    from distopt.methods.ef14 import EF14State

    if len(shape) == 1 and not _native.parallel_row():
        pytest.skip("a lone row takes the torch path without OpenMP")
    g = torch.Generator().manual_seed(9)
    G, E = (torch.randn(*shape, generator=g).to(dtype) for _ in range(2))
    E[..., ::5] = 0.0
    G[..., ::11] = -0.0
    n = shape[0] if len(shape) == 2 else 2
    noise = Noise(0, 1, torch.arange(n) if len(shape) == 2 else 0, n)
    method = make_method("ef14", "topk:ratio=0.01", n=n)
    for lr in (0.1, 1 / 3, 2.7e-3):
        sent, W = method.worker_step(G, EF14State(E, ()), noise, lr)
        assert sent.finite_checked and sent._value is None  # the fused path ran
        with monkeypatch.context() as m:
            m.setenv("DISTOPT_NATIVE", "0")
            ref, W_ref = method.worker_step(G, EF14State(E, ()), noise, lr)
        assert not ref.finite_checked
        assert all(torch.equal(p, q) for p, q in zip(sent.payload, ref.payload)), lr
        assert torch.equal(W.e, W_ref.e), lr
        assert torch.equal(sent.value, ref.value)
    assert not torch.equal(W.e, E)  # the step moved the error


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ef21_plus_step_with_the_fused_shift_matches_the_torch_path(dtype, monkeypatch):
    """EF21+'s EF21 candidate g + C(grad - g) comes from the fused kernel: the same choice,
    payload, value and g as with the kernel off, bit for bit."""
    from distopt.methods.ef21 import EF21Worker

    g = torch.Generator().manual_seed(10)
    G, H = (torch.randn(40, 10_000, generator=g).to(dtype) for _ in range(2))
    H[:20] = G[:20] + 0.01 * H[:20]  # half the rows close to their estimate: both choices occur
    noise = Noise(0, 1, torch.arange(40), 40)
    method = make_method("ef21-plus", "topk:ratio=0.01", n=40)
    sent, W = method.worker_step(G, EF21Worker(H, ()), noise, 0.1)
    with monkeypatch.context() as m:
        m.setenv("DISTOPT_NATIVE", "0")
        ref, W_ref = method.worker_step(G, EF21Worker(H, ()), noise, 0.1)
    assert all(torch.equal(p, q) for p, q in zip(sent.payload, ref.payload))
    assert torch.equal(sent.value, ref.value) and torch.equal(W.g, W_ref.g)
    ga = torch.zeros_like(G).scatter_(1, torch.topk(G.abs(), 100, dim=1).indices, G.gather(1, torch.topk(G.abs(), 100, dim=1).indices))
    chose_a = (W.g == ga).all(1)
    assert 0 < int(chose_a.sum()) < 40  # both candidates were chosen somewhere


def test_weighted_total_of_a_lazy_message_matches_the_dense_sum():
    """EF21-W's aggregation sum_i a_i value_i straight from a Top-K payload."""
    g = torch.Generator().manual_seed(4)
    G, H = torch.randn(30, 5000, generator=g, dtype=torch.float64), torch.randn(30, 5000, generator=g, dtype=torch.float64)
    sent, _, _ = send_shift(make("topk:k=50"), G, H, None)
    w = torch.rand(30, generator=g, dtype=torch.float64) + 0.5
    dense = (sent.value * w.unsqueeze(1)).sum(0)
    assert torch.allclose(sent.total(w), dense, rtol=0, atol=1e-12)
    assert torch.allclose(sent.total(), sent.value.sum(0), rtol=0, atol=1e-12)
    assert not torch.allclose(sent.total(w), sent.total(), atol=1e-3)  # the weights act


def test_a_build_without_openmp_runs_rows_on_a_thread_pool(monkeypatch, tmp_path):
    """Compilers without OpenMP (e.g. Apple clang): blocks of rows go to a Python thread pool,
    lone rows to the torch path, with the same sets."""
    monkeypatch.setattr(_native, "_lib", None)
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setenv("DISTOPT_CACHE", str(tmp_path))
    real = _native._compile
    monkeypatch.setattr(_native, "_compile", lambda cc, flags, root: real(cc, [f for f in flags if f != "-fopenmp"], root))
    assert _native.available() and not _native.parallel_row()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    x = _hard_stack(torch.float64, n=12, d=8000)
    b = torch.randn(12, 8000, dtype=torch.float64)
    vals, idx, _ = _native.topk_rows(x, 60)
    assert torch.equal(idx, _definition(x, 60))
    out = torch.empty_like(b)
    vals, idx, _ = _native.topk_rows(x, 60, b, out)
    assert torch.equal(idx, _definition(x - b, 60))
    assert torch.equal(out, b + torch.zeros_like(b).scatter_(1, idx, (x - b).gather(1, idx)))
    donated = b.clone()  # out is b: D added in place, rows on the pool's threads
    _native.topk_rows(x, 60, donated, donated)
    assert torch.equal(donated, out)
    assert not sparse._native_stack(torch.randn(1, 100_000), 10)  # a lone long row: torch path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_portable_build_without_avx512_selects_the_same_sets(dtype, monkeypatch, tmp_path):
    """The fallback build (no -march=native: on x86-64 no AVX-512, so the histogram threshold,
    the scalar compaction and the scalar copy) selects the same sets, and its fused step is
    bit-identical too -- the paths this machine's own build never takes."""
    monkeypatch.setattr(_native, "_lib", None)
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setenv("DISTOPT_CACHE", str(tmp_path))
    real = _native._compile
    monkeypatch.setattr(_native, "_compile", lambda cc, flags, root: real(cc, [f for f in flags if f != "-march=native"], root))
    assert _native.available()
    x = _hard_stack(dtype, n=16, d=5000)
    b = torch.randn(16, 5000, dtype=dtype)
    for k in (1, 50, 700):
        assert torch.equal(_native.topk_rows(x, k)[1], _definition(x, k))
        out = torch.empty_like(b)
        vals, idx, _ = _native.topk_rows(x, k, b, out)
        assert torch.equal(idx, _definition(x - b, k))
        assert torch.equal(out, b.clone().scatter_add_(1, idx, (x - b).gather(1, idx)))
        donated = b.clone()  # out is b: D added in place
        assert torch.equal(_native.topk_rows(x, k, donated, donated)[1], idx) and torch.equal(donated, out)
    if _native.parallel_row():  # one long row over 2 threads
        monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
        row = torch.randn(1, 200_000, dtype=dtype)
        assert torch.equal(_native.topk_rows(row, 999)[1], _definition(row, 999))


def _states_equal(a, b) -> bool:
    from distopt._tree import tree_leaves

    return all(torch.equal(p, q) for p, q in zip(tree_leaves(a), tree_leaves(b)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(40, 10_000), (200_003,)], ids=["stack", "long-row"])
@pytest.mark.parametrize("spec", ["ef21", "ef21-w", "ef21-sgdm:momentum=0.3", "econtrol:eta=0.2", "ef14", "ef21-plus"])
def test_donated_steps_are_the_pure_steps_bit_for_bit(spec, dtype, shape):
    """worker_step(donate=True) gives the same messages and states, bit for bit, over 4 rounds,
    as the pure step; the pure step leaves its input state as it was; donating EF21's g or
    EControl's h under Top-K builds the new one in the old one's memory (k entries per row)."""
    from distopt._tree import tree_map

    if len(shape) == 1 and not _native.parallel_row():
        pytest.skip("a lone row takes the torch path without OpenMP")
    n = shape[0] if len(shape) == 2 else 1
    gen = torch.Generator().manual_seed(21)
    grads = [torch.randn(*shape, generator=gen).to(dtype) for _ in range(5)]
    ctx = {"smoothness": tuple(1.0 + i for i in range(n))} if spec == "ef21-w" else {}
    method = make_method(spec, "topk:ratio=0.01", n=n, **ctx)

    def noise(t):
        return Noise(0, t, torch.arange(n) if len(shape) == 2 else 0, n)

    _, pure = method.init_worker(grads[0], noise(0), 0.1)
    pure = tree_map(torch.clone, pure)
    donated = tree_map(torch.clone, pure)
    for t in range(1, 5):
        before = tree_map(torch.clone, pure)
        sent, new = method.worker_step(grads[t], pure, noise(t), 0.1)
        assert _states_equal(pure, before), f"{spec}: the pure step changed its input state"
        shift = getattr(donated, "g", getattr(donated, "h", None))
        sent_d, donated = method.worker_step(grads[t], donated, noise(t), 0.1, donate=True)
        assert all(torch.equal(p, q) for p, q in zip(sent.payload, sent_d.payload)), spec
        assert _states_equal(new, donated), spec
        new_shift = getattr(donated, "g", getattr(donated, "h", None))
        if spec.split(":")[0] in ("ef21", "ef21-w", "ef21-sgdm", "econtrol"):
            assert new_shift.data_ptr() == shift.data_ptr(), f"{spec}: the donated shift was not reused"
        pure = new


@pytest.mark.parametrize("shape", [(40, 10_000), (200_003,)], ids=["stack", "long-row"])
def test_a_non_finite_gradient_is_caught_with_a_donated_state(shape):
    """The same error with and without donation; the pure step leaves the state as it was; the
    donated one leaves the rows with a NaN as they were, and updates the finite rows exactly as
    a clean step would (a donated state is given up: the simulator stops there)."""
    from distopt.compressors.base import NonFiniteInput

    if len(shape) == 1 and not _native.parallel_row():
        pytest.skip("a lone row takes the torch path without OpenMP")
    n = shape[0] if len(shape) == 2 else 1
    method = make_method("ef21", "topk:ratio=0.01", n=n)
    g = torch.Generator().manual_seed(4)
    G, S = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    noise = Noise(0, 1, torch.arange(n) if len(shape) == 2 else 0, n)
    _, clean = method.worker_step(G, method.init_worker(S.clone(), noise, 0.1)[1], noise, 0.1)
    G.view(-1, shape[-1])[-1, 5] = float("nan")  # the last row (the only one of a long row)
    for donate in (False, True):
        _, W = method.init_worker(S.clone(), noise, 0.1)
        with pytest.raises(NonFiniteInput, match="non-finite"):
            method.worker_step(G, W, noise, 0.1, donate=donate)
        rows, ref, clean_rows = (t.view(-1, shape[-1]) for t in (W.g, S, clean.g))
        assert torch.equal(rows[-1], ref[-1])
        assert torch.equal(rows[:-1], clean_rows[:-1] if donate else ref[:-1])


@pytest.mark.parametrize("extra", [{}, {"participation": 0.5}, {"method": "econtrol:eta=0.3"}], ids=str)
def test_the_simulator_with_donated_states_equals_the_per_worker_loop(extra, monkeypatch):
    """float64, the kernel's sizes (n = 16, d = 10^4, k = 100): the vectorized engine, which
    donates its stacked states (the kernel then adds D into b in place: out is b), against
    one pure call per worker; with partial participation (rows gathered, stepped, scattered back
    in place) and EControl's donated h."""
    from simulator.engine import RunConfig, Simulation
    from simulator.oracles import QuadraticOracle

    calls = {"in place": 0}
    kernel = _native.topk_rows

    def counted(a, k, b=None, out=None, *rest, **kw):
        calls["in place"] += b is not None and out is b and a.shape[0] > 1
        return kernel(a, k, b, out, *rest, **kw)

    monkeypatch.setattr(_native, "topk_rows", counted)
    g = torch.Generator().manual_seed(6)
    o = QuadraticOracle(torch.randn(16, 10_000, generator=g, dtype=torch.float64), sigma=0.1, seed=2)
    cfg = dict({"method": "ef21", "compressor": "topk:ratio=0.01", "lr": 0.3, "seed": 1, "rounds": 12,
                "progress": False}, **extra)
    runs = {w: Simulation(o, RunConfig(workers=w, **cfg), keep_iterates=True) for w in ("vectorized", "loop")}
    hist = {w: s.run() for w, s in runs.items()}
    assert torch.allclose(torch.stack(runs["vectorized"].iterates), torch.stack(runs["loop"].iterates),
                          atol=1e-12, rtol=0)
    assert hist["vectorized"].column("bits_up") == hist["loop"].column("bits_up")
    assert calls["in place"] >= 6  # most rounds stepped in place (a stack of < 7 rows takes torch.topk)


@pytest.mark.parametrize("extra", [{}, {"participation": 0.5}], ids=str)
def test_resume_is_bit_exact_with_donated_states(extra, tmp_path):
    """Resuming a run whose rounds update the workers' states in place (donation) from its
    checkpoint gives the same run, to the bit, with and without partial participation."""
    from simulator.engine import RunConfig, Simulation
    from simulator.oracles import QuadraticOracle

    g = torch.Generator().manual_seed(9)
    o = QuadraticOracle(torch.randn(16, 10_000, generator=g, dtype=torch.float64), sigma=0.1, seed=4)
    cfg = RunConfig(method="ef21", compressor="topk:ratio=0.01", lr=0.3, rounds=12, checkpoint_every=5,
                    progress=False, seed=2, **extra)
    full = Simulation(o, cfg, tmp_path / "a")
    full.run()
    resumed = Simulation(o, cfg, tmp_path / "b", resume=tmp_path / "a")  # from round 10
    resumed.run()
    assert torch.equal(full.final_x, resumed.final_x)
    assert full.history.column("grad_norm_sq") == resumed.history.column("grad_norm_sq")
