"""BDIA-DDIM: bi-directional integration approximation (Zhang, Lewis, Kleijn, ECCV 2024, "Exact
Diffusion Inversion via Bi-directional Integration Approximation"; official code
guoqiang-zhang-x/BDIA, ``BDIAddim.py`` and the README; read, not copied).

With the DDIM increment Delta(t_i -> t_j | z_i) = DDIM_step(z_i, eps(z_i, t_i); t_i -> t_j) - z_i
(one model evaluation serves both directions), the README's update is

    z_{i-1} = z_{i+1} - (1 - gamma)(z_{i+1} - z_i) - gamma Delta(t_i -> t_{i+1} | z_i) + Delta(t_i -> t_{i-1} | z_i),

gamma in [0, 1]; gamma = 0 is DDIM, gamma = 1 replaces the previous slot's forward estimate by
the backward one. The very first step (no z_{i+1} yet) is plain DDIM. The update is linear in
(z_{i+1}, z_i, eps(z_i, t_i)), so z_{i+1} follows exactly from (z_i, z_{i-1}):

    z_{i+1} = [z_{i-1} - (1 - gamma) z_i + gamma Delta(t_i -> t_{i+1} | z_i) - Delta(t_i -> t_{i-1} | z_i)] / gamma.

(specs/workloads.md #40 writes the same update with gamma and 1 - gamma swapped; at the usual
gamma = 0.5 the two agree. We keep the paper's convention: gamma = 0 is DDIM, inversion needs
gamma > 0.)

Indexing here follows the grid: ``times`` decreasing (``sched.grid``), state k lives at
times[k]; sampling walks k = 0 -> K, inversion K -> 0. A trajectory is carried as the *pair* of
its two latest states, and inverting a real image x_0 starts from (one DDIM-inversion step of
x_0, x_0): then decoding the inverted pair reproduces x_0 to rounding.

Numerics (our observation, not the paper's): the backward recursion has characteristic roots
1 and -1/gamma, so rounding errors grow like (1/gamma)^K along the inversion (the forward
recursion's roots are 1 and -gamma: stable). In float64 with gamma = 0.5 that is ~1e-10 at
K = 20 steps but O(0.1) at K = 50; gamma = 1 keeps it bounded (|roots| = 1).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from torch import Tensor

from .samplers import _times, ddim_step

__all__ = ["ddim_delta", "bdia_sample", "bdia_invert", "bdia_encode"]

Fn = Callable[[Tensor, Tensor], Tensor]


def ddim_delta(sched, z: Tensor, eps: Tensor, t, t_to) -> Tensor:
    """Delta(t -> t_to | z) = DDIM_step(z; t -> t_to) - z, given eps = eps_theta(z, t) (either direction)."""
    ab, ab_to = sched.alpha_bar(_times(t, z)).to(z.dtype), sched.alpha_bar(_times(t_to, z)).to(z.dtype)
    return ddim_step(z, eps, ab, ab_to)[0] - z


def _check(gamma: float, times: Sequence, inverting: bool = False) -> None:
    lo = 0.0 if not inverting else 1e-12
    if not lo <= gamma <= 1 or (inverting and gamma == 0):
        raise ValueError(f"BDIA gamma must be in {'(0, 1]' if inverting else '[0, 1]'} (0 = DDIM, which has no exact "
                         f"inverse), got {gamma}")
    if len(times) < 2:
        raise ValueError(f"BDIA needs a grid of >= 2 times, got {list(times)}")


def bdia_sample(eps_fn: Fn, sched, x: Tensor, times: Sequence, gamma: float = 0.5, x_next: Optional[Tensor] = None,
                return_pair: bool = False):
    """BDIA-DDIM from ``x`` at times[0] to the clean end times[-1]. With ``x_next`` (the state at
    times[1], e.g. from :func:`bdia_invert`) the trajectory continues without the plain-DDIM
    first step. Returns x at times[-1], or with ``return_pair`` (state at times[-2], at times[-1])."""
    _check(gamma, times)
    if x_next is None:
        x_next = x + ddim_delta(sched, x, eps_fn(x, _times(times[0], x)), times[0], times[1])  # first step: DDIM
    prev, cur = x, x_next
    for k in range(1, len(times) - 1):
        e = eps_fn(cur, _times(times[k], cur))
        back = ddim_delta(sched, cur, e, times[k], times[k - 1])   # Delta(t_k -> t_{k-1} | z_k), towards noise
        fwd = ddim_delta(sched, cur, e, times[k], times[k + 1])    # Delta(t_k -> t_{k+1} | z_k), towards data
        prev, cur = cur, gamma * prev + (1 - gamma) * cur - gamma * back + fwd
    return (prev, cur) if return_pair else cur


def bdia_invert(eps_fn: Fn, sched, pair: tuple[Tensor, Tensor], times: Sequence, gamma: float = 0.5
                ) -> tuple[Tensor, Tensor]:
    """Exact inverse of :func:`bdia_sample`: from (state at times[-2], state at times[-1]) back to
    (state at times[0], state at times[1]), one model evaluation per step."""
    _check(gamma, times, inverting=True)
    cur, nxt = pair  # z_k, z_{k+1}
    for k in range(len(times) - 2, 0, -1):
        e = eps_fn(cur, _times(times[k], cur))
        back = ddim_delta(sched, cur, e, times[k], times[k - 1])
        fwd = ddim_delta(sched, cur, e, times[k], times[k + 1])
        cur, nxt = (nxt - (1 - gamma) * cur + gamma * back - fwd) / gamma, cur
    return cur, nxt


def bdia_encode(eps_fn: Fn, sched, x0: Tensor, times: Sequence, gamma: float = 0.5) -> tuple[Tensor, Tensor]:
    """Invert a clean ``x0`` (at times[-1]): one DDIM-inversion step to times[-2] (the model at
    times[-2] with x0, as ``ddim_invert``), then :func:`bdia_invert`. Decoding the returned pair
    with ``bdia_sample(..., x_next=pair[1])`` gives back x0 up to rounding."""
    z = x0 + ddim_delta(sched, x0, eps_fn(x0, _times(times[-2], x0)), times[-1], times[-2])
    return bdia_invert(eps_fn, sched, (z, x0), times, gamma)
