"""Samplers of the diffusion family. Each takes the model as a function and the schedule as an
object of schedules.py; none holds state between calls, and every random draw comes from a
``torch.Generator`` the caller passes.

Model functions: ``eps_fn(x, t) -> eps`` (x ``[B, ...]``, t ``[B]`` times in the schedule's units:
integer indices for :class:`Discrete`, floats in [0, 1] for the SDEs) and
``score_fn(x, t) -> grad log p_t(x)`` (continuous t).

* :func:`ddim_step` / :func:`ddim_sample` -- DDIM (Song, Meng, Ermon 2021, eq. 12) at any eta
  (eta = 1 is DDPM-like ancestral sampling on the sub-grid), optional x0 clipping, a
  ``callback`` that may replace the state after any step (the hook for extra steps: OMS's
  prepended step, NoiseDiffusion's re-injection, BDIA's bi-directional update).
  With eta = 0 on a VP SDE this is exactly the first-order exponential integrator of the
  probability-flow ODE in y = x/alpha, rho = sigma/alpha: y' = y + (rho' - rho) eps(x, t)
  (DPM-Solver-1; AdjointDPM's forward solver).
* :func:`ddim_invert` -- deterministic DDIM inversion x_0 -> x_t along the same grid, evaluating
  the model at the *next* (noisier) time with the current state (the standard approximation
  of Null-text inversion / diffusers' DDIMInverseScheduler); not exact, which is what BDIA fixes.
* :func:`ddpm_sample` -- ancestral sampling over all T steps with the posterior variance beta-tilde.
* :func:`pc_sample` -- score SDE's predictor-corrector sampler (Alg. 1-3): reverse-diffusion or
  Euler-Maruyama predictor, Langevin corrector with step 2 alpha (r ||z|| / ||s||)^2.
* :func:`ode_sample` -- the probability-flow ODE dx = [f - g^2 s/2] dt, by scipy's RK45 (adaptive,
  counts evaluations) or a fixed-step euler/heun/rk4.
* :func:`ode_likelihood` -- log p_0(x) = log p_T(x(T)) + int_0^T div f~(x(t), t) dt (score SDE
  app. D.2), exact divergence (small d) or Skilling-Hutchinson with a Rademacher probe.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .losses import bcast, eps_to_x0

__all__ = ["ddim_step", "ddim_sample", "ddim_invert", "ddpm_sample", "pc_sample", "ode_sample", "ode_likelihood",
           "pf_drift"]

Fn = Callable[[Tensor, Tensor], Tensor]


def _times(t, x: Tensor) -> Tensor:
    """A [B] tensor of the time ``t`` (int for discrete schedules, float otherwise)."""
    dtype = torch.long if isinstance(t, int) else torch.float64
    return torch.full((x.shape[0],), t, dtype=dtype)


def ddim_step(x: Tensor, eps: Tensor, ab: Tensor, ab_next: Tensor, eta: float = 0.0, noise: Optional[Tensor] = None,
              clip: Optional[float] = None) -> tuple[Tensor, Tensor]:
    """One DDIM update from alpha-bar ``ab`` to ``ab_next`` ([B] each; ab_next < ab inverts, eta
    must then be 0): x0 = (x - sqrt(1-ab) eps)/sqrt(ab); sigma = eta sqrt((1-ab')/(1-ab)) sqrt(1-ab/ab');
    x' = sqrt(ab') x0 + sqrt(1 - ab' - sigma^2) eps + sigma z. Returns (x', x0)."""
    x0 = eps_to_x0(x, eps, ab)
    if clip is not None:  # clip the prediction and re-derive eps from it, as DDIM/DDPM codebases do
        x0 = x0.clamp(-clip, clip)
        eps = (x - bcast(ab.sqrt(), x) * x0) / bcast((1 - ab).sqrt(), x)
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        sigma = eta * ((1 - ab_next) / (1 - ab)).sqrt() * (1 - ab / ab_next).clamp(min=0).sqrt()
    else:
        sigma = torch.zeros_like(ab)
    x_next = bcast(ab_next.sqrt(), x) * x0 + bcast((1 - ab_next - sigma ** 2).clamp(min=0).sqrt(), x) * eps
    if eta > 0:
        x_next = x_next + bcast(sigma, x) * noise
    return x_next, x0


def ddim_sample(eps_fn: Fn, sched, x: Tensor, times: Sequence, eta: float = 0.0, gen: Optional[torch.Generator] = None,
                clip: Optional[float] = None, callback: Optional[Callable] = None) -> Tensor:
    """Run DDIM along ``times`` (decreasing, e.g. ``sched.grid(50)``; the last entry is the clean
    end). ``callback(i, t, t_next, x_next, eps, x0)`` may return a tensor to replace x_next."""
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        tt = _times(t, x)
        ab, ab_next = sched.alpha_bar(tt).to(x.dtype), sched.alpha_bar(_times(t_next, x)).to(x.dtype)
        eps = eps_fn(x, tt)
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype) if eta > 0 else None
        x_next, x0 = ddim_step(x, eps, ab, ab_next, eta, noise, clip)
        if callback is not None:
            out = callback(i, t, t_next, x_next, eps, x0)
            x_next = x_next if out is None else out
        x = x_next
    return x


def ddim_invert(eps_fn: Fn, sched, x0: Tensor, times: Sequence, return_path: bool = False, eps_at: str = "next"):
    """Deterministic DDIM inversion along ``times`` (the sampling grid, decreasing) walked
    backwards: from the clean end ``times[-1]`` up to ``times[0]``. Each step uses
    eps_theta(x_{t}, t_next), the model at the noisier time with the current state
    (``eps_at="current"``: eps_theta(x_t, t), guided-diffusion's ``ddim_reverse_sample``, which DIRE uses).
    Returns x at times[0] (and, with ``return_path``, the states from clean to noisy)."""
    if eps_at not in ("next", "current"):
        raise ValueError(f"eps_at must be next or current, got {eps_at!r}")
    x, path = x0, [x0]
    rev = list(times)[::-1]
    for t, t_next in zip(rev[:-1], rev[1:]):
        ab, ab_next = sched.alpha_bar(_times(t, x)).to(x.dtype), sched.alpha_bar(_times(t_next, x)).to(x.dtype)
        eps = eps_fn(x, _times(t_next if eps_at == "next" else t, x))
        x, _ = ddim_step(x, eps, ab, ab_next)
        path.append(x)
    return (x, path) if return_path else x


def ddpm_sample(eps_fn: Fn, sched, x: Tensor, gen: torch.Generator, clip: Optional[float] = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) over all T steps of a discrete schedule,
    posterior variance beta~_t = (1 - ab_{t-1})/(1 - ab_t) beta_t; the same as ``ddim_sample``
    with eta = 1 on the full grid."""
    return ddim_sample(eps_fn, sched, x, list(range(sched.T - 1, -1, -1)) + [-1], eta=1.0, gen=gen, clip=clip)


def pc_sample(score_fn: Fn, sde, x: Tensor, steps: int, gen: torch.Generator, predictor: str = "reverse_diffusion",
              corrector: str = "langevin", snr: float = 0.16, n_corrector: int = 1, denoise: bool = True
              ) -> tuple[Tensor, int]:
    """Predictor-corrector sampling from t = 1 to eps in ``steps`` steps (score SDE Alg. 1-3,
    corrector first, then predictor, as the official ``pc_sampler``). ``predictor``:
    reverse_diffusion | euler_maruyama | none; ``corrector``: langevin | none. Langevin:
    x <- x + e s + sqrt(2 e) z, e = 2 a (r ||z|| / ||s||)^2 (norms averaged over the batch;
    a = 1 - beta_i for VP, 1 for VE). Returns (samples, score evaluations)."""
    if predictor not in ("reverse_diffusion", "euler_maruyama", "none") or corrector not in ("langevin", "none"):
        raise ValueError("predictor must be reverse_diffusion|euler_maruyama|none, corrector langevin|none")
    ts = torch.linspace(1.0, sde.eps, steps, dtype=torch.float64)
    dt = (1.0 - sde.eps) / steps
    x_mean, nfe = x, 0
    for t in ts.tolist():
        tt = torch.full((x.shape[0],), t, dtype=x.dtype)
        if corrector == "langevin":
            a = (1 - sde.beta(tt) * dt) if hasattr(sde, "beta") else torch.ones_like(tt)
            for _ in range(n_corrector):
                s = score_fn(x, tt)
                z = torch.randn(x.shape, generator=gen, dtype=x.dtype)
                s_norm = s.reshape(len(s), -1).norm(dim=1).mean()
                z_norm = z.reshape(len(z), -1).norm(dim=1).mean()
                e = 2 * a * (snr * z_norm / s_norm) ** 2
                x_mean = x + bcast(e, x) * s
                x = x_mean + bcast((2 * e).sqrt(), x) * z
                nfe += 1
        if predictor != "none":
            s = score_fn(x, tt)
            z = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            nfe += 1
            if predictor == "reverse_diffusion":  # eq. 46: x_{i} = x_{i+1} - f + G^2 s + G z
                f, G = sde.discretize(x, tt, dt)
                x_mean = x - f + bcast(G * G, x) * s
                x = x_mean + bcast(G, x) * z
            else:  # Euler-Maruyama on the reverse SDE, dt < 0
                f, g = sde.sde(x, tt)
                x_mean = x - (f - bcast(g * g, x) * s) * dt
                x = x_mean + bcast(g, x) * (dt ** 0.5) * z
    return (x_mean if denoise else x), nfe


def pf_drift(score_fn: Fn, sde) -> Fn:
    """The probability-flow ODE's drift f~(x, t) = f(x, t) - g(t)^2 s(x, t)/2 (score SDE eq. 13)."""
    def drift(x: Tensor, t: Tensor) -> Tensor:
        f, g = sde.sde(x, t)
        return f - 0.5 * bcast(g * g, x) * score_fn(x, t)
    return drift


def _solve(fun, y0: np.ndarray, t0: float, t1: float, method: str, steps: int | None, rtol: float, atol: float):
    """(y(t1), evaluations): scipy RK45 (adaptive), or a fixed-step euler/heun/rk4 with ``steps``."""
    if method == "rk45":
        from scipy.integrate import solve_ivp

        sol = solve_ivp(fun, (t0, t1), y0, rtol=rtol, atol=atol, method="RK45")
        if not sol.success:
            raise RuntimeError(f"probability-flow ODE solve failed: {sol.message}")
        return sol.y[:, -1], int(sol.nfev)
    if method not in ("euler", "heun", "rk4") or not steps:
        raise ValueError("method must be rk45, or euler|heun|rk4 with steps >= 1")
    h, y, t, nfe = (t1 - t0) / steps, y0, t0, 0
    for _ in range(steps):
        if method == "euler":
            y, nfe = y + h * fun(t, y), nfe + 1
        elif method == "heun":
            k1 = fun(t, y)
            k2 = fun(t + h, y + h * k1)
            y, nfe = y + h / 2 * (k1 + k2), nfe + 2
        else:
            k1 = fun(t, y)
            k2 = fun(t + h / 2, y + h / 2 * k1)
            k3 = fun(t + h / 2, y + h / 2 * k2)
            k4 = fun(t + h, y + h * k3)
            y, nfe = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), nfe + 4
        t += h
    return y, nfe


def ode_sample(score_fn: Fn, sde, x: Tensor, method: str = "rk45", steps: int | None = None, rtol: float = 1e-5,
               atol: float = 1e-5) -> tuple[Tensor, int]:
    """Integrate the probability-flow ODE from t = 1 down to eps. Returns (samples, model
    evaluations); each evaluation covers the whole batch (as in the official sampler)."""
    drift = pf_drift(score_fn, sde)
    shape, dtype = x.shape, x.dtype

    def fun(t, y):
        xt = torch.as_tensor(y, dtype=dtype).reshape(shape)
        with torch.no_grad():
            return drift(xt, torch.full((shape[0],), float(t), dtype=dtype)).reshape(-1).double().numpy()

    y, nfe = _solve(fun, x.detach().reshape(-1).double().numpy(), 1.0, sde.eps, method, steps, rtol, atol)
    return torch.as_tensor(y, dtype=dtype).reshape(shape), nfe


def _divergence(f: Fn, x: Tensor, t: Tensor, probe: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(f(x, t), div_x f) for flat ``x [B, d]``: exact (d backward passes) or Hutchinson."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        fx = f(x, t)
        if probe is not None:
            (g,) = torch.autograd.grad((fx * probe).sum(), x)
            div = (g * probe).sum(1)
        else:
            div = sum(torch.autograd.grad(fx[:, i].sum(), x, retain_graph=i + 1 < x.shape[1])[0][:, i]
                      for i in range(x.shape[1]))
    return fx.detach(), div.detach()


def ode_likelihood(score_fn: Fn, sde, x: Tensor, method: str = "rk45", steps: int | None = None, rtol: float = 1e-5,
                   atol: float = 1e-5, exact: bool = True, gen: Optional[torch.Generator] = None) -> tuple[Tensor, int]:
    """Negative log-likelihood (nats, per sample, ``[B]``) of flat data ``x [B, d]`` under the
    probability-flow ODE: integrate [x, delta] from eps to 1 with d delta/dt = div f~, then
    -log p_0(x) = -(log p_T(x(1)) + delta(1)). ``exact=False`` uses one Rademacher probe per
    sample drawn from ``gen`` (fixed along the path). Returns (nll, evaluations)."""
    drift = pf_drift(score_fn, sde)
    B, d = x.shape
    dtype = x.dtype
    probe = None if exact else (torch.randint(0, 2, (B, d), generator=gen) * 2 - 1).to(dtype)

    def fun(t, y):
        xt = torch.as_tensor(y[: B * d], dtype=dtype).reshape(B, d)
        fx, div = _divergence(drift, xt, torch.full((B,), float(t), dtype=dtype), probe)
        return np.concatenate([fx.reshape(-1).double().numpy(), div.double().numpy()])

    y0 = np.concatenate([x.detach().reshape(-1).double().numpy(), np.zeros(B)])
    y, nfe = _solve(fun, y0, sde.eps, 1.0, method, steps, rtol, atol)
    z = torch.as_tensor(y[: B * d]).reshape(B, d)
    delta = torch.as_tensor(y[B * d:])
    return -(sde.prior_logp(z) + delta), nfe
