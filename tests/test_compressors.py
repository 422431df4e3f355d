"""Every compressor through the same property tests (optax's _OPTIMIZERS_UNDER_TEST style).

Expected bits are computed by hand from the wire formats in each compressor's docstring;
contraction and unbiasedness are checked exactly (deterministic compressors) or by Monte
Carlo over a stacked batch of workers (random ones) -- check R1 of specs/ef-family.md.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import distopt
import distopt.methods
from distopt import Noise
from distopt.compressors import COMPRESSORS, make, payload_bits


def _idx_bits(d):
    return 16 if d <= 1 << 15 else 32


def _code_bits(levels):  # packed width of 2*levels+2 codes (sign + level)
    n = 2 * levels + 2
    return next(w for w in (1, 2, 4, 8, 16) if n <= 1 << w)


def _ab(d):
    a = math.isqrt(d - 1) + 1 if d > 1 else 1
    return a, -(-d // a)


# spec -> (expected bits(d, value_bits), max |x| the format handles, or None); scales and
# norms travel in float32 (float64 for float64 input)
UNDER_TEST = {
    "identity": (lambda d, vb: d * vb, None),
    "topk:k=7": (lambda d, vb: 7 * (vb + _idx_bits(d)), None),
    "topk:ratio=0.1": (lambda d, vb: max(1, math.floor(0.1 * d + 0.5)) * (vb + _idx_bits(d)), None),
    "randk:k=7": (lambda d, vb: 7 * vb, None),
    "randk:ratio=0.1,scaled=true": (lambda d, vb: max(1, math.floor(0.1 * d + 0.5)) * vb, None),
    "randk:k=7,shared=true": (lambda d, vb: 7 * vb, None),
    "permk:n=4": (lambda d, vb: (d // 4 + (1 if d % 4 > 0 else 0)) * vb, None),  # worker 0's block
    "qsgd:levels=4": (lambda d, vb: 8 * math.ceil(d * _code_bits(4) / 8) + max(vb, 32), None),
    "dither:levels=3,norm=inf": (lambda d, vb: 8 * math.ceil(d * _code_bits(3) / 8) + max(vb, 32), None),
    "natural": (lambda d, vb: (17 if vb == 64 else 9) * d + 8 * math.ceil(d / 8) - d, None),
    "natural_dither:levels=6": (lambda d, vb: 8 * math.ceil(d * _code_bits(6) / 8) + max(vb, 32), None),
    "sign": (lambda d, vb: 8 * math.ceil(d / 8), None),
    "scaled_sign": (lambda d, vb: 8 * math.ceil(d / 8) + max(vb, 32), None),
    "lowrank:rank=2": (lambda d, vb: min(2, *_ab(d)) * sum(_ab(d)) * vb, None),
    "powersgd:rank=2": (lambda d, vb: min(2, *_ab(d)) * sum(_ab(d)) * vb, None),
    "bernoulli:p=0.5": (None, None),  # d*vb or 0, checked separately
    "fp16": (lambda d, vb: 16 * d + 16, None),
    "bf16": (lambda d, vb: 16 * d + 16, None),
    "fp16:scaled=false": (lambda d, vb: 16 * d, 6e4),
}

SPECS = list(UNDER_TEST)
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def test_table_covers_every_compressor():
    assert {make(s).name for s in SPECS} == set(COMPRESSORS)


def _vec(d, seed=0, dtype=torch.float32, heavy=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g, dtype=torch.float64)
    if heavy:  # heavy-tailed: student-t like
        x = x / torch.rand(d, generator=g, dtype=torch.float64).clamp_min(0.05)
    return x.to(dtype)


def _rng(worker=0, step=3):
    return Noise(seed=11, step=step, worker=worker, n_workers=4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", SPECS)
def test_shape_dtype_and_bits(spec, dtype):
    c = make(spec)
    for d in (1, 5, 64, 333):
        x = _vec(d, dtype=dtype)
        rng = _rng()
        if getattr(c, "k", None) and c.k > d:
            with pytest.raises(ValueError, match="exceeds the vector length"):
                c.compress(x, rng)
            continue
        p = c.compress(x, rng)
        y = c.decompress(p, d, rng, dtype)
        assert y.shape == x.shape and y.dtype == dtype, (spec, d)
        assert torch.isfinite(y.float()).all()
        assert c(x, rng).dtype == dtype
        expected, _ = UNDER_TEST[spec]
        vb = torch.finfo(dtype).bits
        if expected is not None:
            assert c.bits(p) == expected(d, vb), (spec, d, c.bits(p))
        if c.name not in ("bernoulli",):
            assert c.bits(p) == payload_bits(p), "bits must equal the payload's real size"


def test_bernoulli_bits_are_sent_or_nothing():
    c = make("bernoulli:p=0.5")
    x = _vec(50)
    seen = set()
    for step in range(40):
        p = c.compress(x, _rng(step=step))
        seen.add(c.bits(p))
    assert seen == {0, 50 * 32}


@pytest.mark.parametrize("spec", SPECS)
def test_deterministic_given_the_seed(spec):
    c = make(spec)
    x = _vec(200)
    a = c(x, _rng(step=5))
    b = c(x, _rng(step=5))
    assert torch.equal(a, b)
    if c.random and c.name != "bernoulli":
        others = [c(x, _rng(step=s)) for s in (6, 7, 8)]
        assert any(not torch.equal(a, o) for o in others), "draws must change with the step"


@pytest.mark.parametrize("spec", SPECS)
def test_stacked_rows_equal_single_workers(spec):
    """[n, d] with Noise(worker=arange(n)) == each worker alone: vectorized == per-worker loop."""
    c = make(spec)
    n, d = 4, 97
    xs = torch.stack([_vec(d, seed=i) for i in range(n)])
    batch = Noise(seed=5, step=2, worker=torch.arange(n), n_workers=n)
    y = c.decompress(c.compress(xs, batch), d, batch, xs.dtype)
    for i in range(n):
        one = Noise(seed=5, step=2, worker=i, n_workers=n)
        assert torch.equal(y[i], c(xs[i], one)), (spec, i)


def _mc(c, x, draws, step=0):
    """Monte Carlo draws of C(x): ``[draws, d]`` (each row a different worker's randomness;
    Perm-K's randomness is shared by the workers of a step, so its draws vary the step)."""
    if c.name == "permk":
        draws = draws // 10
        return torch.stack([c(x, Noise(seed=123, step=s, worker=s % 4, n_workers=4)) for s in range(draws)])
    xs = x.expand(draws, -1).contiguous()
    rng = Noise(seed=123, step=step, worker=torch.arange(draws), n_workers=4)
    return c.decompress(c.compress(xs, rng), x.numel(), rng, x.dtype)


@pytest.mark.parametrize("spec", SPECS)
def test_contraction_and_variance(spec):
    """E||C(x)-x||^2 <= (1-alpha)||x||^2 (contractive; unbiased ones after scaling by 1/(1+omega))
    and E||Q(x)||^2 <= (1+omega)||x||^2, E Q(x) = x for unbiased ones (check R1)."""
    c = make(spec)
    if not c.contractive:
        pytest.skip(f"{spec} has no alpha")
    d = 100
    x = _vec(d, seed=1, dtype=torch.float64)
    nx = float(x.norm() ** 2)
    if not c.random:
        for seed in range(20):
            x = _vec(d, seed=seed, dtype=torch.float64)
            err = float((c(x) - x).norm() ** 2)
            assert err <= (1 - c.alpha(d)) * float(x.norm() ** 2) * (1 + 1e-9) + 1e-12, (spec, seed)
        return
    y = _mc(c, x, 20000)
    if c.unbiased:
        om = c.omega(d)
        second = float((y.norm(dim=1) ** 2).mean())
        assert second <= (1 + om) * nx * 1.03, (spec, second / nx - 1, om)
        mean = y.mean(0)
        se = y.std(0) / math.sqrt(y.shape[0])  # per-coordinate standard error
        z = ((mean - x) / se.clamp_min(1e-12)).abs()
        assert float(z.max()) < 5.0, (spec, float(z.max()))
        err = float(((y / (1 + om) - x).norm(dim=1) ** 2).mean())
    else:
        err = float(((y - x).norm(dim=1) ** 2).mean())
    assert err <= (1 - c.alpha(d)) * nx * 1.03, (spec, 1 - err / nx, c.alpha(d))


def test_r1_empirical_constants():
    """R1's numbers at d=100, K=10 (heavy-tailed x): Rand-K alpha ~0.1, scaled omega ~9,
    natural omega <= 1/8, QSGD(s=4) omega <= 2.5."""
    d = 100
    x = _vec(d, seed=2, dtype=torch.float64)
    nx = float(x.norm() ** 2)
    y = _mc(make("randk:k=10"), x, 20000)
    a_emp = 1 - float(((y - x).norm(dim=1) ** 2).mean()) / nx
    assert abs(a_emp - 0.1) < 0.01
    y = _mc(make("randk:k=10,scaled=true"), x, 20000)
    w_emp = float((y.norm(dim=1) ** 2).mean()) / nx - 1
    assert abs(w_emp - 9) < 0.4
    y = _mc(make("natural"), x, 20000)
    assert float((y.norm(dim=1) ** 2).mean()) / nx - 1 <= 1 / 8
    y = _mc(make("qsgd:levels=4"), x, 20000)
    assert float((y.norm(dim=1) ** 2).mean()) / nx - 1 <= 2.5


def test_topk_matches_torch_topk_and_breaks_ties_low():
    g = torch.Generator().manual_seed(0)
    for n, d, k in ((1, 300_000, 3000), (3, 200_000, 500), (5, 1000, 10), (2, 70_000, 20_000)):
        x = torch.randn(n, d, generator=g)
        p = make(f"topk:k={k}").compress(x)
        ref = torch.topk(x.abs(), k, dim=1).indices.sort(dim=1).values
        assert torch.equal(p[1].to(torch.int64), ref), (n, d, k)
        assert torch.equal(p[0], x.gather(1, ref))
    x = torch.tensor([1.0, -3.0, 2.0, 3.0, -2.0, 3.0])
    assert make("topk:k=2").compress(x)[1].tolist() == [1, 3]  # ties -> lowest indices


def _topk_reference(x: torch.Tensor, k: int) -> torch.Tensor:
    """The definition: order by (-|x|, index), keep the first k, ascending."""
    return torch.sort(-x.float().abs(), dim=1, stable=True).indices[:, :k].sort(dim=1).values


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_group_threshold_path_is_exact(dtype):
    """Short rows take their threshold from group maxima (sparse._group_threshold): exact on
    data that defeats a sample -- the large entries packed into one group, ties, constant and
    all-zero rows, a few huge outliers, rows of different scales."""
    from distopt.compressors.sparse import _grouped

    g = torch.Generator().manual_seed(11)
    n, d, k = 30, 10_000, 100  # rows 9.. plain Gaussian
    assert _grouped(n, d, k)
    x = torch.randn(n, d, generator=g)
    x[1, 300:420] = 50.0  # the top entries all in a few neighbouring groups
    x[2] = 1.0  # one big tie
    x[3] = 0.0
    x[4, ::3] = x[4, ::3].round()  # many ties at every magnitude
    x[5, 7::50] = 1e6  # one outlier per group
    x[6] *= 1e-30
    x[7, :5000] = 0.0
    x[8] = torch.arange(d, dtype=x.dtype) % 7
    x = x.to(dtype)
    for kk in (k, 1, 37, 600):
        vals, idx = make(f"topk:k={kk}").compress(x)
        ref = _topk_reference(x, kk)
        assert torch.equal(idx.to(torch.int64), ref), kk
        assert torch.equal(vals, x.gather(1, ref)), kk
        one = make(f"topk:k={kk}").compress(x[1])  # a lone row (torch.topk path): the same set
        assert torch.equal(one[1].to(torch.int64), ref[1]), kk
    short = x[:, :1000].repeat(10, 1)  # a stack of short rows (d < 2048) takes the group path too
    assert _grouped(*short.shape, 10)
    for kk in (10, 1, 50):
        vals, idx = make(f"topk:k={kk}").compress(short)
        ref = _topk_reference(short, kk)
        assert torch.equal(idx.to(torch.int64), ref), kk
        assert torch.equal(vals, short.gather(1, ref)), kk


def test_topk_threshold_path_handles_structured_data():
    """Strided-sample threshold can be fooled by structure; the result must stay exact."""
    d = 400_000
    x = torch.zeros(d)
    x[::16384] = 1.0  # the strided sample sees only ones
    x[5::7] = 2.0
    p = make("topk:k=4000").compress(x)
    ref = torch.topk(x, 4000).values
    assert torch.equal(p[0].sort().values, ref.sort().values)


def test_randk_is_uniform_over_coordinates():
    d, k, draws = 50, 5, 20000
    rng = Noise(seed=9, step=0, worker=torch.arange(draws))
    y = make(f"randk:k={k}").compress(torch.ones(draws, d), rng)
    assert y[0].shape == (draws, k)
    from distopt.compressors.sparse import random_subset

    idx = random_subset(rng, d, k)
    assert (idx[:, 1:] > idx[:, :-1]).all(), "indices ascending and distinct"
    freq = torch.bincount(idx.reshape(-1), minlength=d).double() / draws
    expect = k / d
    sd = math.sqrt(expect * (1 - expect) / draws)
    assert float((freq - expect).abs().max()) < 5 * sd
    # large-k path (k > d/4) as well
    idx = random_subset(rng, d, 40)
    freq = torch.bincount(idx.reshape(-1), minlength=d).double() / draws
    assert float((freq - 0.8).abs().max()) < 5 * math.sqrt(0.8 * 0.2 / draws)


def test_randk_shared_is_summable_and_receiver_regenerates_indices():
    c = make("randk:k=5,shared=true")
    assert c.summable and not make("randk:k=5").summable
    xs = torch.randn(3, 40)
    rng = Noise(seed=1, step=4, worker=torch.arange(3))
    p = c.compress(xs, rng)
    summed = (p[0].sum(0),)
    y = c.decompress(summed, 40, Noise(seed=1, step=4, worker=0))
    assert torch.allclose(y, c.decompress(p, 40, rng).sum(0))


def test_permk_blocks_partition_and_mean_is_exact():
    n, d = 4, 103
    x = torch.randn(d, dtype=torch.float64)
    rng = Noise(seed=3, step=1, worker=torch.arange(n), n_workers=n)
    c = make("permk")
    y = c.decompress(c.compress(x.expand(n, d), rng), d, rng)
    assert torch.allclose(y.mean(0), x)
    assert int(((y != 0).sum(0) == 1).sum()) == int((x != 0).sum())


def test_powersgd_state_warm_starts_towards_best_rank_r():
    c, ref = make("powersgd:rank=2"), make("lowrank:rank=2")
    x = _vec(400, seed=3, dtype=torch.float64, heavy=False)
    rng = Noise(seed=0, step=0)
    state = c.init_state(x, rng)
    errs = []
    for _ in range(30):
        p, new_state = c.apply(x, state, rng)
        assert not torch.equal(new_state[0], state[0]), "the warm-start state must change"
        state = new_state
        errs.append(float((c.decompress(p, 400) - x).norm()))
    best = float((ref(x) - x).norm())
    assert errs[-1] <= errs[0] + 1e-9
    assert errs[-1] <= best * 1.05


def test_natural_float32_is_exactly_powers_of_two():
    x = torch.tensor([0.0, 1e-40, -3.0, 5.5, 1.0, -0.75, 3e38])
    y = make("natural")(x, _rng())
    for a, b in zip(x.tolist(), y.tolist()):
        if a == 0 or b == 0:  # a subnormal rounds to 0 or 2^-126 (unbiased)
            assert b == 0 and abs(a) < 2.0**-126
        else:
            assert math.copysign(1, a) == math.copysign(1, b)
            m, _ = math.frexp(abs(b))
            assert m == 0.5, "a power of two"
            assert abs(b) / 2 <= abs(a) <= abs(b) * 2 or abs(a) < 1.2e-38


# ---- piecewise (chunked) evaluation of the elementwise compressors ------------------------
ELEMENTWISE = ["sign", "scaled_sign", "qsgd:levels=4", "qsgd:levels=1", "qsgd:levels=200",
               "dither:levels=3,norm=inf", "natural"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", ELEMENTWISE)
def test_chunked_equals_unchunked(spec, dtype, monkeypatch):
    """Elementwise compressors run piece by piece (compressors/_chunked.py); the cut must not
    show. Pieces of one row, of a few rows, and of 16384-column ranges with a ragged end give
    the bits of one single piece."""
    from distopt.compressors import _chunked

    c = make(spec)
    for n, d in ((3, 40_003), (5, 37), (1, 50_001)):
        x = _vec(n * d, seed=d, dtype=dtype).reshape(n, d)
        x[:, ::11] = 0
        rng = Noise(seed=2, step=1, worker=torch.arange(n), n_workers=4)
        monkeypatch.setattr(_chunked, "CHUNK", 1 << 30)
        p_ref = c.compress(x, rng)
        y_ref = c.decompress(p_ref, d, rng, dtype)
        for chunk in (1, 64, 100, 20_000):
            monkeypatch.setattr(_chunked, "CHUNK", chunk)
            p = c.compress(x, rng)
            assert all(torch.equal(a, b) for a, b in zip(p, p_ref)), (spec, n, d, chunk)
            assert torch.equal(c.decompress(p, d, rng, dtype), y_ref), (spec, n, d, chunk)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_candidates_do_not_depend_on_the_pieces(dtype, monkeypatch):
    """Top-K's candidate pass runs piece by piece too; any cut gives torch.topk's set."""
    from distopt.compressors import _chunked

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 70_001, generator=g).to(dtype)
    x[1, 5::9] = 0.0  # zeros and ties below the threshold
    # the definition: order by (-|x|, index), keep the first k (bfloat16 has many ties)
    ref = torch.sort(-x.float().abs(), dim=1, stable=True).indices[:, :700].sort(dim=1).values
    for chunk in (1, 100, 20_000, 1 << 20):
        monkeypatch.setattr(_chunked, "CHUNK", chunk)
        vals, idx = make("topk:k=700").compress(x)
        assert torch.equal(idx.to(torch.int64), ref), chunk
        assert torch.equal(vals, x.gather(1, ref)), chunk


@pytest.mark.parametrize("spec", ELEMENTWISE)
def test_long_stacked_rows_equal_single_workers(spec):
    """As test_stacked_rows_equal_single_workers, with rows long enough that torch would split
    a lone row's sum across threads (scaled_sign's l1 norm goes through fixed column blocks)."""
    c = make(spec)
    n, d = 3, 70_001
    xs = _vec(n * d, seed=6).reshape(n, d)
    batch = Noise(seed=5, step=2, worker=torch.arange(n), n_workers=n)
    p = c.compress(xs, batch)
    y = c.decompress(p, d, batch, xs.dtype)
    for i in range(n):
        one = Noise(seed=5, step=2, worker=i, n_workers=n)
        assert all(torch.equal(a[i], b) for a, b in zip(p, c.compress(xs[i], one))), (spec, i)
        assert torch.equal(y[i], c(xs[i], one)), (spec, i)


def test_elementwise_compressors_compute_their_formulas():
    """The fused kernels compute the docstrings' formulas, from the documented draws."""
    from distopt.noise import STREAM_ROUNDING, bits32, uniform

    n, d = 3, 5000
    x = _vec(n * d, seed=4).reshape(n, d)
    x[:, ::7] = 0
    rng = Noise(seed=8, step=2, worker=torch.arange(n))
    sign = torch.where(x < 0, -1.0, 1.0)
    assert torch.equal(make("sign")(x, rng), sign)
    l1 = x.double().abs().sum(1, keepdim=True) / d
    assert torch.allclose(make("scaled_sign")(x, rng).double(), sign * l1, rtol=1e-6, atol=0)
    # QSGD: level = floor(v) + [u < frac(v)], v = s |x| / ||x||_2, u on the 2^-24 grid
    for s in (1, 4, 200):
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        v = x.abs() * (s / norm)
        u = uniform(rng, d, STREAM_ROUNDING)
        level = (torch.floor(v) + (u < v - torch.floor(v)).float()).clamp(max=s)
        assert torch.equal(make(f"qsgd:levels={s}")(x, rng), torch.sign(x) * level * (norm / s)), s
    # natural: exponent + [23 random bits < 23 mantissa bits], sign kept
    xi = x.view(torch.int32)
    rnd = (bits32(rng, d, STREAM_ROUNDING) >> 9) & 0x7FFFFF
    e = ((xi >> 23) & 0xFF) + (rnd < (xi & 0x7FFFFF)).to(torch.int32)
    expect = (e << 23).view(torch.float32) * torch.sign(x)
    assert torch.equal(make("natural")(x, rng), expect)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_bitpack_every_byte(width):
    """pack (one multiply per word) and lookup (one gather per byte) against the definition:
    byte = sum_i code_i << (width i), over every byte value."""
    from distopt.compressors import _bitpack

    per = 8 // width
    byte = torch.arange(256)
    codes = ((byte.unsqueeze(1) >> (width * torch.arange(per))) & ((1 << width) - 1)).to(torch.uint8)  # [256, per]
    flat = codes.reshape(1, -1)
    assert torch.equal(_bitpack.pack(flat, width), byte.to(torch.uint8).unsqueeze(0))
    for dtype in (torch.bool, torch.int16, torch.int32):  # codes held in wider words pack the same
        if dtype == torch.bool and width > 1:
            continue
        out = torch.empty(1, 256, dtype=torch.uint8)
        _bitpack.pack_into(flat.to(dtype).contiguous(), width, out)
        assert torch.equal(out, byte.to(torch.uint8).unsqueeze(0)), dtype
    assert torch.equal(_bitpack.unpack(byte.to(torch.uint8).unsqueeze(0), width, flat.shape[1]), flat)
    table = (torch.arange(1 << width) * 37 % 251 - 125).to(torch.int8)
    out = torch.empty(1, 256 * per, dtype=torch.int8)
    _bitpack.lookup_into(byte.to(torch.uint8).unsqueeze(0), width, _bitpack.byte_table(table, width), out,
                         torch.empty(1, 256, dtype=torch.int32))
    assert torch.equal(out, table[flat.long()])


# ---- edge cases (hypothesis) ------------------------------------------------------------
finite = st.floats(min_value=-(2.0**100), max_value=2.0**100, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=40, deadline=None)
@given(xs=st.lists(finite, min_size=1, max_size=40), spec=st.sampled_from(SPECS))
def test_edge_cases_stay_finite_and_contract(xs, spec):
    c = make(spec)
    _, max_abs = UNDER_TEST[spec]
    x = torch.tensor(xs, dtype=torch.float32)
    if max_abs is not None:
        x = x.clamp(-max_abs, max_abs)
    d = x.numel()
    if c.name in ("topk", "randk") and c.k is not None and c.k > d:
        with pytest.raises(ValueError, match="exceeds"):
            c.compress(x, _rng())
        return
    y = c(x, _rng())
    assert y.shape == x.shape and torch.isfinite(y).all(), (spec, xs)
    if not c.random and c.contractive:
        x64, y64 = x.double(), y.double()
        tol = 1e-6 * float(x64.norm() ** 2) + 1e-30
        assert float((y64 - x64).norm() ** 2) <= (1 - c.alpha(d)) * float(x64.norm() ** 2) + tol


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_plain_cast_has_no_alpha_but_scaled_cast_contracts_below_the_normal_range(name):
    # hypothesis found x = [5e-8]: fp16 rounds it to 2^-24 = 5.96e-8, a 19% error
    x = torch.tensor([5e-8, 3e-8, 1e-9], dtype=torch.float32)
    plain, scaled = make(f"{name}:scaled=false"), make(name)
    assert not plain.contractive
    with pytest.raises(ValueError, match="plain cast"):
        plain.alpha(3)
    if name == "fp16":
        assert float((plain(x) - x).norm()) > 0.1 * float(x.norm())
    y = scaled(x)
    assert float((y.double() - x.double()).norm() ** 2) <= (1 - scaled.alpha(3)) * float(x.double().norm() ** 2)


@pytest.mark.parametrize("spec", SPECS)
def test_zero_vector_and_k_equals_d(spec):
    c = make(spec)
    z = torch.zeros(16)
    expect = torch.ones(16) if c.name == "sign" else z  # one bit cannot say 0: sign(0) = +1
    assert torch.equal(c(z, _rng()), expect)
    x = _vec(7)
    assert torch.equal(make("topk:k=7")(x), x)
    assert torch.equal(make("randk:k=7")(x, _rng()), x)


# ---- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, match",
    [
        ("nosuch", "valid: .*topk"),
        ("topkk:k=1", "did you mean 'topk'"),
        ("topk:kk=1", "valid options: k, ratio"),
        ("topk:k=0", "k must be >= 1"),
        ("topk:ratio=0", r"ratio must be in \(0, 1\]"),
        ("topk:ratio=1.5", r"ratio must be in \(0, 1\]"),
        ("topk:k=abc", "must be an integer"),
        ("topk", "exactly one of k="),
        ("topk:k=1,ratio=0.1", "exactly one of k="),
        ("qsgd:levels=0", "levels must be"),
        ("bernoulli:p=0", r"p must be in \(0, 1\]"),
        ("randk:k=3,scaled=maybe", "true or false"),
        ("topk:k", "key=value"),
        ("dither:norm=1", "must be one of 2, inf"),
    ],
)
def test_bad_specs_name_the_fix(spec, match):
    with pytest.raises(ValueError, match=match):
        make(spec)


def test_k_larger_than_d_and_non_finite_inputs():
    with pytest.raises(ValueError, match="exceeds the vector length d=5"):
        make("topk:k=6").compress(torch.randn(5))
    for bad in (float("nan"), float("inf")):
        x = torch.randn(10)
        x[3] = bad
        with pytest.raises(ValueError, match="non-finite"):
            make("topk:k=2").compress(x)
    with pytest.raises(ValueError, match="rng=distopt.Noise"):
        make("randk:k=2").compress(torch.randn(5))
    with pytest.raises(ValueError, match="rows"):
        make("qsgd").compress(torch.randn(3, 5), Noise(0, 0, 0))
    with pytest.raises(ValueError, match="not contractive"):
        make("sign").alpha(10)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("spec", SPECS)
def test_every_compressor_rejects_non_finite_input(spec, bad):
    """Some compressors skip the separate finiteness pass (their norm is finite iff x is)."""
    x = _vec(3 * 50).reshape(3, 50)
    x[1, 7] = bad
    rng = Noise(seed=1, step=0, worker=torch.arange(3), n_workers=4)
    with pytest.raises(ValueError, match="non-finite"):
        make(spec).compress(x, rng)


def test_topk_sampled_path_rejects_non_finite_input():
    """Top-K's sampled path finds NaN/inf among the values it selects (they rank first), instead
    of a separate pass over x: wherever they are, however many, in the sample or not."""
    d, k = 300_000, 3000
    stride = d // 16384
    for bad in (float("nan"), float("inf"), -float("inf"), -float("nan")):
        for where in ([5], [stride * 3], list(range(0, d, 7)), list(range(0, d, stride))):
            x = _vec(d, seed=len(where))
            x[where] = bad
            with pytest.raises(ValueError, match="non-finite"):
                make(f"topk:k={k}").compress(x)
    for bad in (float("nan"), float("inf"), -float("inf")):  # group-maxima threshold; lone short rows (torch.topk)
        for where in ([5], list(range(0, 10_000, 7))):
            x = _vec(4 * 10_000, seed=len(where)).reshape(4, 10_000)
            x[2, where] = bad
            for rows in (x, x[2]):
                with pytest.raises(ValueError, match="non-finite"):
                    make("topk:k=100").compress(rows)
            x[2, [i for i in range(10_000) if i not in where]] = 0.0  # zero threshold: the row-wise path
            x[1] = 1.0  # a huge tie in another row: that row too
            with pytest.raises(ValueError, match="non-finite"):
                make("topk:k=100").compress(x)


def test_public_api():
    c = distopt.compressor("topk:ratio=0.01")
    assert c.spec == "topk:ratio=0.01" and str(c) == "topk:ratio=0.01"
    assert make(c) is c
    assert c.alpha(1000) == 0.01
    assert make("qsgd:levels=4").omega(100) == min(100 / 16, 10 / 4)
    assert abs(make("natural").alpha(10) - 8 / 9) < 1e-15


@pytest.mark.parametrize("spec", SPECS)
def test_decompress_add_equals_adding_the_dense_message(spec):
    c = make(spec)
    x = _vec(300, seed=4, dtype=torch.float64)
    rng = _rng()
    p = c.compress(x, rng)
    base = _vec(300, seed=5, dtype=torch.float64)
    out = c.decompress_add(base.clone(), p, 300, rng, scale=0.7)
    assert torch.allclose(out, base + 0.7 * c.decompress(p, 300, rng, torch.float64), atol=1e-12)
    scaled = distopt.methods.contractive_compressor(c) if c.unbiased else c
    out = scaled.decompress_add(base.clone(), p, 300, rng, scale=2.0)
    assert torch.allclose(out, base + 2.0 * scaled.decompress(p, 300, rng, torch.float64), atol=1e-12)
