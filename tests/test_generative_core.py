"""The diffusion family's shared core: hand-computed schedule tables, samplers against closed
forms (a Gaussian data distribution has an exact score), the cache's rebuild contract."""
from __future__ import annotations

import math

import pytest
import torch

from experiments.workloads.generative.core import cache as C
from experiments.workloads.generative.core import data as D
from experiments.workloads.generative.core import losses as L
from experiments.workloads.generative.core import metrics as M
from experiments.workloads.generative.core import samplers as S
from experiments.workloads.generative.core.schedules import Discrete, VPSDE, make_schedule

S2 = 0.25  # data variance of the Gaussian test distribution N(m, S2 I)
MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)


def gaussian_eps(sched, mean=MEAN, s2=S2):
    """Exact eps(x, t) = sqrt(1-ab) (x - sqrt(ab) m) / (ab s2 + 1 - ab) for data N(m, s2 I)."""
    def eps(x, t):
        ab = sched.alpha_bar(t).to(x.dtype)[:, None]
        return (1 - ab).sqrt() * (x - ab.sqrt() * mean) / (ab * s2 + 1 - ab)
    return eps


def gaussian_score(sde, mean=MEAN, s2=S2):
    def score(x, t):
        a, s = sde.alpha_sigma(t.double())
        a, s = a[:, None].to(x.dtype), s[:, None].to(x.dtype)
        return -(x - a * mean) / (a * a * s2 + s * s)
    return score


def test_linear_schedule_table_is_the_cumulative_product():
    s = Discrete("linear", T=1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(s.alpha_bars, torch.cumprod(1 - betas, 0))
    assert torch.allclose(s.betas, betas)
    # rescaled for T = 200: the same end-to-end noise level
    assert abs(math.log(float(Discrete("linear", T=200).alpha_bars[-1])) - math.log(float(s.alpha_bars[-1]))) < 0.5
    assert float(s.alpha_bar(torch.tensor(-1))) == 1.0


def test_cosine_and_zero_terminal_snr():
    c = Discrete("cosine", T=100)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    assert abs(float(c.alpha_bars[49]) - f(50 / 100) / f(0)) < 1e-9
    z = make_schedule("scaled_linear+zsnr", T=100)
    plain = make_schedule("scaled_linear", T=100)
    assert float(z.alpha_bars[-1]) == 0.0 and float(plain.alpha_bars[-1]) > 0.0
    assert abs(float(z.alpha_bars[0]) - float(plain.alpha_bars[0])) < 1e-12
    with pytest.raises(ValueError, match="zsnr"):
        make_schedule("linear+foo")


def test_grids_and_vp_closed_form():
    s = Discrete("linear", T=200)
    g = s.grid(50)
    assert len(g) == 51 and g[0] == 199 and g[-2] == 0 and g[-1] == -1
    assert s.grid(10, start=140)[0] == 140
    vp = VPSDE()
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    integral = 0.1 * t + 0.5 * (20 - 0.1) * t * t  # int_0^t beta
    assert torch.allclose(vp.alpha_bar(t), torch.exp(-integral))
    a, s_ = vp.alpha_sigma(t)
    assert torch.allclose(vp.rho_to_time(s_[1:] / a[1:]), t[1:])


def test_ddim_inversion_round_trip_shrinks_with_steps():
    sched = Discrete("linear", T=200)
    eps = gaussian_eps(sched)
    x0 = MEAN + math.sqrt(S2) * torch.randn(256, 2, generator=D.rng(0), dtype=torch.float64)
    errs = []
    for steps in (10, 100):
        grid = sched.grid(steps)
        back = S.ddim_sample(eps, sched, S.ddim_invert(eps, sched, x0, grid), grid)
        errs.append(float((back - x0).abs().max()))
    assert errs[1] < errs[0] / 3 and errs[1] < 0.1, errs  # first-order: the eps(x_t, t_next) approximation


def test_ddim_and_ancestral_samples_have_the_data_moments():
    sched = Discrete("linear", T=200)
    eps = gaussian_eps(sched)
    x = torch.randn(4000, 2, generator=D.rng(1), dtype=torch.float64)
    for eta in (0.0, 1.0):  # (eta = 1 with beta-tilde variances is slightly under-dispersed at T = 200)
        y = S.ddim_sample(eps, sched, x, sched.grid(200), eta=eta, gen=D.rng(2))
        assert torch.allclose(y.mean(0), MEAN, atol=0.05) and abs(float(y.var(0).mean()) - S2) < 0.03


def test_pc_and_ode_samplers_reach_the_data_distribution():
    vp = VPSDE()
    score = gaussian_score(vp)
    x = torch.randn(2000, 2, generator=D.rng(3), dtype=torch.float64)
    y, nfe = S.pc_sample(score, vp, x, 200, D.rng(4))
    assert nfe == 400 and torch.allclose(y.mean(0), MEAN, atol=0.06) and abs(float(y.var(0).mean()) - S2) < 0.04
    y, nfe = S.ode_sample(score, vp, x, rtol=1e-4, atol=1e-4)
    assert 10 < nfe < 400 and torch.allclose(y.mean(0), MEAN, atol=0.06) and abs(float(y.var(0).mean()) - S2) < 0.04


def test_ode_likelihood_of_a_gaussian_equals_the_closed_form():
    vp = VPSDE(beta_max=40.0, eps=1e-5)  # alpha(1) ~ 5e-5: the prior N(0, I) is exact to 1e-4
    x = MEAN + math.sqrt(S2) * torch.randn(64, 2, generator=D.rng(5), dtype=torch.float64)
    nll, _ = S.ode_likelihood(gaussian_score(vp), vp, x, rtol=1e-6, atol=1e-6)
    exact = 0.5 * 2 * math.log(2 * math.pi * S2) + ((x - MEAN) ** 2).sum(1) / (2 * S2)
    assert float((nll - exact).abs().max()) < 1e-2
    hutch, _ = S.ode_likelihood(gaussian_score(vp), vp, x, method="rk4", steps=200, exact=False, gen=D.rng(6))
    assert abs(float(hutch.mean() - exact.mean())) < 0.1  # the probe is unbiased; a diagonal Jacobian makes it exact


def test_losses_vanish_for_the_exact_predictor():
    sched = Discrete("linear", T=50)
    x0 = torch.randn(8, 3, generator=D.rng(7), dtype=torch.float64)
    t = torch.arange(8) * 6
    noise = torch.randn(8, 3, generator=D.rng(8), dtype=torch.float64)
    xt = L.q_sample(sched.alpha_bar(t), x0, noise)
    oracle = lambda p, x, tm, c=None: noise  # predicts the true noise
    assert float(L.eps_loss(oracle, None, sched, x0, t, noise)) == 0.0
    ab = sched.alpha_bar(t)
    assert torch.allclose(L.eps_to_x0(xt, noise, ab), x0)
    v = L.bcast(ab.sqrt(), x0) * noise - L.bcast((1 - ab).sqrt(), x0) * x0
    assert torch.allclose(L.v_to_eps(xt, v, ab), noise) and torch.allclose(L.v_to_x0(xt, v, ab), x0)


def test_metrics():
    g = D.rng(9)
    a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    assert abs(M.mmd(a, b)) < 0.01 and M.mmd(a, b + 1.0) > 0.3  # unbiased: ~0 for equal laws
    assert abs(M.sliced_wasserstein(a, a + torch.tensor([3.0, 0.0]), n_proj=2000) - 3 / math.sqrt(2)) < 0.1
    assert abs(M.wasserstein_1d(a[:, 0], a[:, 0] + 2)) - 2 < 1e-6
    assert float(M.psnr(torch.zeros(1, 4), torch.full((1, 4), 0.2))[0]) == pytest.approx(10 * math.log10(4 / 0.04))
    f = torch.randn(400, 5, generator=g, dtype=torch.float64)
    assert abs(M.frechet_distance(f, f)) < 1e-6 and M.frechet_distance(f, f + 1) == pytest.approx(5, rel=1e-6)


def test_cache_builds_once_and_rebuilds_corrupt_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTOPT_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(3.0)}

    assert torch.equal(C.cached("toy", {"a": 1}, build)["w"], torch.arange(3.0))
    C.cached("toy", {"a": 1}, build)
    assert len(calls) == 1
    path = C.cache_path("toy", {"a": 1})
    assert path.is_relative_to(tmp_path) and path.exists()
    path.write_bytes(b"garbage")
    assert torch.equal(C.cached("toy", {"a": 1}, build)["w"], torch.arange(3.0)) and len(calls) == 2
    C.cached("toy", {"a": 2}, build)
    assert len(calls) == 3  # a new config is a new file


def test_cache_builds_with_gradients_under_no_grad(tmp_path, monkeypatch):
    """A cold cache first asked for a model inside an ``evaluate`` (run under no_grad by the
    simulator) still trains it: CI found the digits classifier failing that way."""
    monkeypatch.setenv("DISTOPT_CACHE", str(tmp_path))

    def build():
        w = torch.zeros(3, requires_grad=True)
        ((w - 1.0) ** 2).sum().backward()
        return {"w": w - 0.5 * w.grad}

    with torch.no_grad():
        assert torch.equal(C.cached("trained", {}, build)["w"], torch.ones(3))


def test_digits_shards_and_minibatches_are_deterministic():
    x, y = D.digits("train")
    assert x.shape == (1500, 64) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert D.shard_bounds(10, 0, 3) == (0, 4) and D.shard_bounds(10, 2, 3) == (7, 10)
    i1 = D.minibatch(1500, 32, 0, 1, 4, 7)
    assert torch.equal(i1, D.minibatch(1500, 32, 0, 1, 4, 7)) and int(i1.min()) >= 375 and int(i1.max()) < 750


def test_fit_matches_the_simulators_gd_iterates():
    import dataclasses

    from experiments.workloads.generative.core.base import DenoiserTraining, fit, train

    w = DenoiserTraining(data="ring8", hidden=16, depth=2, schedule="vp", batch_size=8, n_points=64)
    for opt in ("sgd", "adam"):
        a, _ = train(w, 3, 5, n=2, lr=1e-2, optimizer=opt, dtype=torch.float64)
        b, _ = fit(w, 3, 5, n=2, lr=1e-2, optimizer=opt, dtype=torch.float64)
        assert all(torch.allclose(a[k], b[k], atol=1e-10) for k in a), opt
