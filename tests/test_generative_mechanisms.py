"""The mechanisms of rddm, score_sde, adjoint_dpm, dfm_inverse and stem_video against
hand-computed or exact expectations (the quick mechanism checks run in test_workloads.py)."""
from __future__ import annotations

import dataclasses
import math

import torch

from experiments.workloads.generative.core import data as D


def test_rddm_sampler_recovers_the_target_with_exact_predictions():
    """With the true residual and noise, the eta = 0 sampler walks I_T back to I_0 exactly, at
    any step count: I_t - (abar_t - abar_t') res - (bbar_t - bbar_t') eps stays on the path."""
    from experiments.workloads.generative.rddm import RDDM, RDDMSchedule, rain

    x0 = D.digits("test")[0][:8]
    x_in = rain(x0, D.rng(0))
    assert torch.equal(x_in, rain(x0, D.rng(0))) and float((x_in - x0).abs().max()) > 0.3
    assert float(x_in.min()) >= -1 and float(x_in.max()) <= 1
    img, inp = x0.reshape(-1, 1, 8, 8), x_in.reshape(-1, 1, 8, 8)
    abar, bbar = RDDMSchedule(50, 0.01).tables()
    assert float(abar[-1]) == 1.0 and abs(float(bbar[-1]) ** 2 - 0.01) < 1e-12 and float(abar[0]) == 0.0
    eps = torch.randn(img.shape, generator=D.rng(1))

    class Oracle(RDDM):
        def predict(self, params, x_t, x_in, t):
            return x_in - img, eps

    for steps in (1, 5, 50):
        w = Oracle(T=50, sample_steps=steps)
        gen = D.rng(2)
        noise = torch.randn(inp.shape, generator=D.rng(2))
        out = w.sample({"w": torch.zeros(1)}, inp, gen)
        # the sampler draws I_T = I_in + bbar_T eps' with its own eps'; the oracle's eps differs,
        # so compare with the closed form: I_0 + bbar_T (eps' - eps)
        expect = (img + bbar[-1].float() * (noise - eps)).clamp(-1, 1)
        assert torch.allclose(out, expect, atol=1e-5), steps


def test_score_sde_untrained_nll_is_the_prior_density():
    """A zero score makes the VE probability-flow ODE the identity, so the ODE NLL is exactly
    -log N(x; 0, sigma_max^2 I)."""
    from experiments.workloads.generative.score_sde import ScoreSDE

    w = ScoreSDE(sde="ve")
    p = w.init_params(0)  # the output layer starts at zero
    x = w.points("test", 64).double()
    exact = 0.5 * 2 * math.log(2 * math.pi * w.sigma_max ** 2) + (x * x).sum(1) / (2 * w.sigma_max ** 2)
    assert abs(w.nll(p, x, "rk4", 4) - float(exact.mean())) < 1e-9


def test_adjoint_gradient_is_the_exact_gradient_of_the_sampler():
    from experiments.workloads.generative.adjoint_dpm import AdjointDPM

    w = AdjointDPM(steps=8, newton=6)  # large steps: Newton needs a few more iterations to reach round-off
    params = {k: v.double() for k, v in w.init_params(0).items()}
    x_T = torch.randn(16, 2, generator=D.rng(3), dtype=torch.float64)
    gp_a, gx_a, mem_a = w.gradients(params, x_T, 8, adjoint=True)
    gp_b, gx_b, mem_b = w.gradients(params, x_T, 8, adjoint=False)
    assert torch.allclose(gp_a, gp_b, rtol=1e-6, atol=1e-8) and torch.allclose(gx_a, gx_b, rtol=1e-6, atol=1e-8)
    gp_e, _, _ = dataclasses.replace(w, adjoint_solver="explicit").gradients(params, x_T, 8, adjoint=True)
    assert not torch.allclose(gp_e, gp_b, rtol=1e-3)  # the continuous adjoint on the same grid is not exact
    assert w.gradients(params, x_T, 16, adjoint=True)[2] == mem_a  # O(1) in the steps
    assert w.gradients(params, x_T, 16, adjoint=False)[2] > 1.8 * mem_b
    oracle = w.oracle(2, dtype=torch.float64)
    g = oracle.grads(oracle.x0(), 0, torch.arange(2))
    assert g.shape == (2, oracle.d) and bool(torch.isfinite(g).all())


def test_dfm_forward_model_and_target_frame_output():
    from experiments.workloads.generative.core.denoisers import mlp_apply
    from experiments.workloads.generative.dfm_inverse import (DFMInverse, angle_features, projection_matrices, render,
                                                                view_maps)

    x = D.digits("test")[0][:4]
    P = projection_matrices(16)
    assert torch.allclose(P[0] @ ((x[0] + 1) / 2), ((x[0] + 1) / 2).reshape(8, 8).sum(0), atol=1e-5)  # phi = 0: column sums
    A, c, Ap = view_maps(16)
    v = render(x, P[[3, 3, 3, 3]])
    assert torch.allclose(render(torch.einsum("ji,bi->bj", Ap[3], v - c[3]), P[[3, 3, 3, 3]]), v, atol=1e-4)
    # head=view: the signal renders the net's target-view prediction exactly
    w = DFMInverse(head="view")
    p = {k: torch.randn(t.shape, generator=D.rng(4)) * 0.1 for k, t in w.init_params(0).items()}
    a_ctx, a_trgt, t = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8]), torch.tensor([10, 20, 30, 40])
    O_ctx, x_t = render(x, P[a_ctx]), torch.randn(4, 8, generator=D.rng(5))
    S = w.signal(p, O_ctx, a_ctx, a_trgt, x_t, t)
    cond = torch.cat([torch.einsum("bji,bi->bj", Ap[a_ctx], O_ctx - c[a_ctx]), angle_features(a_ctx, 16),
                      angle_features(a_trgt, 16)], 1)
    v_pred = mlp_apply(p, x_t, w.sched.model_time(t).float(), cond)[:, :8] + x_t
    assert torch.allclose(render(S, P[a_trgt]), v_pred, atol=1e-4)


def test_stem_likelihoods_masking_and_shared_reconstructions():
    from experiments.workloads.generative.stem_video import STEMVideo, gaussian_likelihood, laplace_likelihood, sprites

    bins = torch.arange(-40.0, 41.0)
    assert abs(float(gaussian_likelihood(bins, torch.tensor(0.3), torch.tensor(2.0)).sum()) - 1) < 1e-6
    lap = laplace_likelihood(bins.reshape(1, 1, -1, 1).expand(1, 2, -1, 1), torch.tensor([0.2, -0.4]), torch.tensor([1.0, 3.0]))
    assert torch.allclose(lap.sum(2).flatten(), torch.ones(2), atol=1e-5)
    w = STEMVideo(ablation=True)
    p = w.init_params(0)
    clip = sprites(2, D.rng(6))
    assert clip.shape == (2, 3, 1, 32, 32) and float(clip.min()) >= 0 and float(clip.max()) <= 1
    # causal context: changing a latent changes mu only at later raster positions
    y = torch.randn(1, w.latent, 8, 8, generator=D.rng(7))
    z = torch.zeros(1, w.hyper, 4, 4)
    prev = torch.zeros_like(y)
    mu0, _ = w.entropy_params(p, y, prev, z)
    y2 = y.clone()
    y2[0, :, 4, 4] += 5.0
    mu1, _ = w.entropy_params(p, y2, prev, z)
    changed = (mu1 - mu0).abs().amax(1)[0] > 1e-7  # [8, 8]
    order = torch.arange(64).reshape(8, 8)
    assert not bool(changed[order <= 4 * 8 + 4].any())
    c = w.code_clip(p, clip, None)
    assert c["bits"].shape == c["img_bits"].shape == (2, 3)
