"""Unit tests of the inference-time diffusion mechanisms (issue 8, part B): BDIA's exact
inversion, NoiseDiffusion's mix, RED-diff's operators, OMS's prompts, DIRE's pieces. The
mechanism checks themselves run in test_workloads.py."""
from __future__ import annotations

import math

import pytest
import torch

from experiments.workloads.generative.core import data as D
from experiments.workloads.generative.core import samplers as S
from experiments.workloads.generative.core.bdia import bdia_encode, bdia_invert, bdia_sample
from experiments.workloads.generative.core.schedules import Discrete


@pytest.fixture(scope="module")
def toy():
    """The exact eps of a two-Gaussian mixture in 4-D (0.5 N(+m, s^2 I) + 0.5 N(-m, s^2 I)): a
    smooth nonlinear 'perfectly trained' model, float64, on a linear T = 100 schedule."""
    sched = Discrete("linear", 100)
    m, s2 = torch.tensor([0.8, -0.4, 0.6, 0.2], dtype=torch.float64), 0.09

    def eps(x, t):
        ab = sched.alpha_bar(t).to(x.dtype)[:, None]
        v = ab * s2 + 1 - ab                                            # variance of x_t per component
        d = torch.stack([x - ab.sqrt() * m, x + ab.sqrt() * m])         # [2, B, 4]
        w = torch.softmax(-(d * d).sum(-1) / (2 * v[:, 0]), 0)[..., None]
        score = -(w * d).sum(0) / v
        return -(1 - ab).sqrt() * score

    x0 = torch.randn(16, 4, generator=D.rng("toy-x0"), dtype=torch.float64).clamp(-1, 1)
    return eps, sched, x0


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_bdia_round_trip_is_exact_where_ddim_inversion_is_not(toy, gamma):
    eps, sched, x0 = toy
    times = sched.grid(20)
    z0, z1 = bdia_encode(eps, sched, x0, times, gamma)
    rec = bdia_sample(eps, sched, z0, times, gamma, x_next=z1)
    assert float((rec - x0).abs().max()) < 1e-10
    ddim = S.ddim_sample(eps, sched, S.ddim_invert(eps, sched, x0, times), times)
    assert float((ddim - x0).abs().max()) > 1e-4


def test_bdia_inverts_its_own_sampling_and_gamma_zero_is_ddim(toy):
    eps, sched, x0 = toy
    times = sched.grid(12)
    xT = torch.randn(8, 4, generator=D.rng("toy-noise"), dtype=torch.float64)
    pair = bdia_sample(eps, sched, xT, times, 0.5, return_pair=True)
    z0, z1 = bdia_invert(eps, sched, pair, times, 0.5)
    assert float((z0 - xT).abs().max()) < 1e-10
    # gamma = 0 drops the backward estimate: plain DDIM (up to rounding: x + (step - x))
    assert torch.allclose(bdia_sample(eps, sched, xT, times, 0.0), S.ddim_sample(eps, sched, xT, times), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="gamma"):
        bdia_invert(eps, sched, pair, times, 0.0)


def test_bdia_inverse_rounding_grows_like_one_over_gamma_to_the_steps(toy):
    """The backward recursion's parasitic root is -1/gamma: at 60 steps gamma = 0.5 loses the
    float64 round trip while gamma = 1 keeps it."""
    eps, sched, x0 = toy
    times = sched.grid(60)
    err = {}
    for gamma in (0.5, 1.0):
        z0, z1 = bdia_encode(eps, sched, x0, times, gamma)
        err[gamma] = float((bdia_sample(eps, sched, z0, times, gamma, x_next=z1) - x0).abs().max())
    assert err[1.0] < 1e-10 and err[0.5] > 1e3 * err[1.0]


def test_ddim_invert_eps_at_current_differs_and_validates(toy):
    eps, sched, x0 = toy
    times = sched.grid(10)
    a, b = S.ddim_invert(eps, sched, x0, times), S.ddim_invert(eps, sched, x0, times, eps_at="current")
    assert a.shape == b.shape and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="eps_at"):
        S.ddim_invert(eps, sched, x0, times, eps_at="previous")


def test_noise_diffusion_mix_and_slerp_by_hand():
    from experiments.workloads.generative.noise_diffusion_interp import noise_diffusion_mix, slerp

    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert torch.allclose(slerp(e1, e2, 0.0), e1, atol=1e-6) and torch.allclose(slerp(e1, e2, 1.0), e2, atol=1e-6)
    mid = slerp(e1, e2, 0.5)
    assert torch.allclose(mid, torch.tensor([[1.0, 1.0]]) / math.sqrt(2), atol=1e-6)
    # lambda = 0.5, gamma = 0: a = b = 1/sqrt(2), mu = nu = 0.6
    l1, l2 = torch.tensor([[3.0, 0.5]]), torch.tensor([[-0.5, 0.2]])
    x1, x2 = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 1.0]])
    a = 1 / math.sqrt(2)
    want = a * torch.tensor([[2.0, 0.5]]) + a * l2 + 0.5 * ((0.6 - a) * x1 + (0.6 - a) * x2)  # clip(l1) at B = 2
    assert torch.allclose(noise_diffusion_mix(l1, l2, x1, x2, 0.25, 0.5), want.clamp(-2, 2), atol=1e-6)


@pytest.mark.parametrize("task", ["inpaint", "sr2"])
def test_red_diff_pseudo_inverse_is_moore_penrose(task):
    from experiments.workloads.generative.red_diff_inverse import Operator

    op = Operator(task)
    H = op.H(torch.eye(64, dtype=torch.float64)).T  # [m, 64]: column j = H e_j
    y = torch.randn(5, H.shape[0], generator=D.rng("y"), dtype=torch.float64)
    assert torch.allclose(op.pinv(y), y @ torch.linalg.pinv(H).T, atol=1e-12)
    assert torch.allclose(op.H(op.pinv(y)), y, atol=1e-12)


def test_red_diff_time_orders():
    from experiments.workloads.generative.red_diff_inverse import REDDiffInverse

    w = REDDiffInverse()
    desc = w.times(10, "descending", D.rng(0))
    assert desc == sorted(desc, reverse=True) and desc[0] == 199 and desc[-1] == 0
    assert w.times(10, "ascending", D.rng(0)) == desc[::-1]
    assert sorted(w.times(10, "random", D.rng(0))) == sorted(desc)
    with pytest.raises(ValueError, match="order"):
        w.times(10, "sideways", D.rng(0))


def test_oms_prompts_are_brightness_bins_and_psi_loss_is_zero_snr_v():
    from experiments.workloads.generative.oms_one_more_step import OneMoreStep, with_brightness

    x = torch.zeros(300, 64)
    xb, c = with_brightness(x, D.rng("b"), 1.0, 3)
    b = xb[:, 0]
    assert torch.equal(c, ((b + 1) / 2 * 3).long().clamp(max=2)) and float(b.abs().max()) <= 1.0
    w = OneMoreStep()
    p = w.init_params(0)  # zero output layer: psi = 0, so the loss is E||x0||^2
    x0, cc, eps = w.batch(0, 2, 0)
    assert float(w.loss(p, (x0, cc, eps))) == pytest.approx(float((x0 ** 2).sum(1).mean()), rel=1e-6)


def test_dire_auc_and_blur():
    from experiments.workloads.generative.dire_detect import auc, blur

    assert auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert auc(torch.tensor([0.0]), torch.tensor([0.0])) == 0.5
    assert auc(torch.tensor([1.0, 3.0]), torch.tensor([2.0])) == 0.5
    flat = torch.full((2, 64), 0.3)
    assert torch.allclose(blur(flat), flat)
