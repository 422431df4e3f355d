"""Training losses of the diffusion family, pure in their inputs: the noise and the times are
drawn by the workload's ``batch`` (from (seed, worker, step)) and passed in, so a loss is a
deterministic function of (params, batch) that the simulator can differentiate and vmap.

* :func:`q_sample`: x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps (DDPM eq. 4).
* :func:`eps_loss`: ||eps - eps_theta(x_t, t)||^2 (DDPM's L_simple, eq. 14).
* :func:`v_loss`: ||v - v_theta(x_t, t)||^2, v = sqrt(ab) eps - sqrt(1 - ab) x_0 (Salimans & Ho 2022).
* :func:`dsm_loss`: E ||sigma_t s_theta(x_t, t) + z||^2 (score SDE eq. 7 with lambda(t) = sigma_t^2),
  for any SDE of schedules.py, x_t = alpha_t x_0 + sigma_t z.

The conversions between heads (:func:`eps_to_x0`, :func:`v_to_eps`, :func:`score_from_eps`)
live here too, so samplers and workloads never re-derive them.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["q_sample", "eps_loss", "v_loss", "dsm_loss", "eps_to_x0", "v_to_eps", "v_to_x0", "score_from_eps", "bcast"]

Apply = Callable[..., Tensor]


def bcast(a: Tensor, x: Tensor) -> Tensor:
    """``a [B]`` -> ``[B, 1, ...]`` broadcastable against ``x`` (in x's dtype)."""
    return a.to(x.dtype).reshape(a.shape + (1,) * (x.dim() - a.dim()))


def q_sample(ab: Tensor, x0: Tensor, noise: Tensor) -> Tensor:
    """``ab [B]`` alpha-bars, ``x0``, ``noise`` ``[B, ...]``."""
    return bcast(ab.sqrt(), x0) * x0 + bcast((1 - ab).sqrt(), x0) * noise


def eps_to_x0(x: Tensor, eps: Tensor, ab: Tensor) -> Tensor:
    return (x - bcast((1 - ab).sqrt(), x) * eps) / bcast(ab.sqrt(), x)


def v_to_eps(x: Tensor, v: Tensor, ab: Tensor) -> Tensor:
    return bcast(ab.sqrt(), x) * v + bcast((1 - ab).sqrt(), x) * x


def v_to_x0(x: Tensor, v: Tensor, ab: Tensor) -> Tensor:
    return bcast(ab.sqrt(), x) * x - bcast((1 - ab).sqrt(), x) * v


def score_from_eps(eps: Tensor, sigma: Tensor) -> Tensor:
    """grad log p_t(x) = -eps/sigma_t for x_t = alpha_t x_0 + sigma_t eps."""
    return -eps / bcast(sigma, eps)


def _mean_sq(a: Tensor) -> Tensor:
    return (a * a).reshape(a.shape[0], -1).sum(1).mean()


def eps_loss(apply: Apply, params, sched, x0: Tensor, t: Tensor, noise: Tensor, cond: Tensor | None = None) -> Tensor:
    """DDPM's L_simple: per-sample squared error summed over dimensions, averaged over the batch."""
    ab = sched.alpha_bar(t).to(x0.dtype)
    xt = q_sample(ab, x0, noise)
    return _mean_sq(apply(params, xt, sched.model_time(t).to(x0.dtype), cond) - noise)


def v_loss(apply: Apply, params, sched, x0: Tensor, t: Tensor, noise: Tensor, cond: Tensor | None = None) -> Tensor:
    ab = sched.alpha_bar(t).to(x0.dtype)
    xt = q_sample(ab, x0, noise)
    v = bcast(ab.sqrt(), x0) * noise - bcast((1 - ab).sqrt(), x0) * x0
    return _mean_sq(apply(params, xt, sched.model_time(t).to(x0.dtype), cond) - v)


def dsm_loss(score: Callable[[Tensor, Tensor], Tensor], sde, x0: Tensor, t: Tensor, z: Tensor) -> Tensor:
    """Denoising score matching with lambda(t) = sigma_t^2: mean over the batch of
    ||sigma_t s(x_t, t) + z||^2 (summed over dimensions). ``score(x, t)`` is the model's score."""
    t = t.to(x0.dtype)
    mean, std = sde.marginal(x0, t)
    xt = mean + bcast(std, x0) * z
    return _mean_sq(bcast(std, x0) * score(xt, t) + z)
