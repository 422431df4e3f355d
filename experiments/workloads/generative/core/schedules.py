"""Noise schedules: discrete DDPM tables and the continuous VP/VE SDEs of score SDE.

Both kinds answer the same questions, so one sampler serves them:

* ``alpha_bar(t)`` -- alpha-bar at time ``t`` (a tensor of times, any shape): x_t = sqrt(ab) x_0
  + sqrt(1 - ab) eps (VE: ab = 1/(1 + sigma^2) after the scaling x/sqrt(1 + sigma^2), see VESDE);
* ``model_time(t)`` -- the float in [0, 1] the denoiser is fed;
* ``grid(steps)`` -- a decreasing list of ``steps + 1`` times from the noisiest to the clean end
  (alpha_bar = 1), the DDIM / ODE grid.

Discrete (Ho et al. 2020; Nichol & Dhariwal 2021; Lin et al. 2024): ``t`` is an integer index
0..T-1, alpha_bar[t] = prod_{s <= t} (1 - beta_s), and t = -1 means clean (alpha_bar = 1).
Schedules: ``linear`` (DDPM's 1e-4..0.02 rescaled by 1000/T so alpha_bar_T stays ~4e-5 at any
T), ``scaled_linear`` (Stable Diffusion's sqrt-linear betas, keeps signal at T), ``cosine``
(alpha_bar = cos^2((t/T + s)/(1 + s) pi/2), s = 0.008, betas capped at 0.999). ``zero_snr=True``
rescales sqrt(alpha_bar) so the last step has exactly zero SNR (Lin et al. 2024, Alg. 1).

Continuous (Song et al. 2021, score SDE, eqs. 9-11 and app. B): VP
dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, beta(t) = beta_min + t (beta_max - beta_min);
VE dx = sqrt(d sigma^2/dt) dw, sigma(t) = sigma_min (sigma_max/sigma_min)^t; t in [0, 1].
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["Discrete", "make_schedule", "VPSDE", "VESDE", "make_sde", "rescale_zero_snr"]


def rescale_zero_snr(alpha_bar: Tensor) -> Tensor:
    """Lin et al. 2024 (Common Diffusion Noise Schedules and Sample Steps are Flawed), Alg. 1:
    shift and scale sqrt(alpha_bar) so it keeps its first value and ends at exactly 0."""
    s = alpha_bar.double().sqrt()
    s0, sT = s[0].clone(), s[-1].clone()
    s = (s - sT) * s0 / (s0 - sT)
    return (s * s).to(alpha_bar.dtype)


@dataclasses.dataclass(frozen=True)
class Discrete:
    """A discrete schedule of ``T`` steps (float64 tables; cast at use)."""

    kind: Literal["linear", "scaled_linear", "cosine"] = "linear"
    T: int = 200
    beta_start: float | None = None  # default per kind (linear 1e-4, scaled_linear 8.5e-4), at T = 1000
    beta_end: float | None = None    # (linear 0.02, scaled_linear 0.012); rescaled by 1000/T
    zero_snr: bool = False

    continuous = False

    def __post_init__(self):
        if self.T < 2:
            raise ValueError(f"a discrete schedule needs T >= 2 steps, got {self.T}")
        if self.kind not in ("linear", "scaled_linear", "cosine"):
            raise ValueError(f"unknown schedule {self.kind!r}; valid: linear, scaled_linear, cosine")
        ab = self._table()
        if not bool((ab[1:] <= ab[:-1]).all()) or not 0 <= float(ab[-1]) < float(ab[0]) <= 1:
            raise ValueError(f"schedule {self} does not decrease from <= 1 to >= 0: check beta_start/beta_end")
        object.__setattr__(self, "_ab", ab)

    def _table(self) -> Tensor:
        T, scale = self.T, 1000.0 / self.T
        if self.kind == "cosine":
            s = 0.008
            f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        elif self.kind == "linear":
            b0, b1 = self.beta_start or 1e-4, self.beta_end or 0.02
            betas = torch.linspace(scale * b0, scale * b1, T, dtype=torch.float64)
        else:
            b0, b1 = self.beta_start or 0.00085, self.beta_end or 0.012
            betas = torch.linspace(math.sqrt(scale * b0), math.sqrt(scale * b1), T, dtype=torch.float64) ** 2
        if float(betas.max()) >= 1:
            raise ValueError(f"betas reach {float(betas.max()):.3g} >= 1 at T={T}: lower beta_end or raise T")
        ab = torch.cumprod(1 - betas, 0)
        return rescale_zero_snr(ab) if self.zero_snr else ab

    @property
    def alpha_bars(self) -> Tensor:
        """The table alpha_bar[0..T-1], ``[T]`` float64."""
        return self._ab

    @property
    def betas(self) -> Tensor:
        ab = self._ab
        return 1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])

    def alpha_bar(self, t: Tensor) -> Tensor:
        """alpha_bar at integer times ``t`` (any shape); t = -1 gives 1 (clean)."""
        t = torch.as_tensor(t).long()
        table = torch.cat([self._ab.new_ones(1), self._ab])  # index t + 1
        return table[t + 1]

    def model_time(self, t: Tensor) -> Tensor:
        return (torch.as_tensor(t).double() + 1) / self.T

    def grid(self, steps: int, start: int | None = None) -> list[int]:
        """``steps + 1`` integer times, evenly spaced from ``start`` (default T-1) down to 0,
        then -1 (clean): the DDIM grid (Song et al. 2021, DDIM); ``start`` < T-1 begins part way
        (SDEdit-style, NoiseDiffusion's t = 140 of 200)."""
        start = self.T - 1 if start is None else start
        if not 1 <= steps <= start + 1:
            raise ValueError(f"steps must be in [1, {start + 1}] for a grid from t={start}, got {steps}")
        ts = torch.linspace(start, 0, steps, dtype=torch.float64).round().long().tolist()
        return ts + [-1]

    def sample_times(self, n: int, gen: torch.Generator) -> Tensor:
        """Training times, uniform over 0..T-1, ``[n]`` long."""
        return torch.randint(0, self.T, (n,), generator=gen)


def make_schedule(spec: str = "linear", T: int = 200, **kw) -> Discrete:
    """``linear``, ``cosine``, ``scaled_linear``; a ``+zsnr`` suffix rescales to zero terminal SNR."""
    kind, _, suffix = spec.partition("+")
    if suffix not in ("", "zsnr"):
        raise ValueError(f"schedule suffix must be +zsnr, got {spec!r}")
    return Discrete(kind, T, zero_snr=suffix == "zsnr", **kw)


@dataclasses.dataclass(frozen=True)
class VPSDE:
    """Variance-preserving SDE (DDPM's continuous limit). alpha(t) = exp(m(t)),
    m(t) = -t^2 (beta_max - beta_min)/4 - t beta_min/2; sigma(t)^2 = 1 - alpha(t)^2."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    eps: float = 1e-3  # smallest time used in training and sampling (t = 0 is singular for the score)

    continuous = True
    T = 1.0

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _m(self, t: Tensor) -> Tensor:
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a = torch.exp(self._m(t))
        return a, torch.sqrt(-torch.expm1(2 * self._m(t)))

    def alpha_bar(self, t: Tensor) -> Tensor:
        return torch.exp(2 * self._m(torch.as_tensor(t, dtype=torch.float64)))

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(drift f(x, t) [B, d], diffusion g(t) [B])."""
        b = self.beta(t)
        return -0.5 * b[:, None] * x, b.sqrt()

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        a, s = self.alpha_sigma(t)
        return a[:, None] * x0, s

    def prior_logp(self, z: Tensor) -> Tensor:
        d = z.shape[-1]
        return -0.5 * d * math.log(2 * math.pi) - 0.5 * (z * z).sum(-1)

    def prior_std(self) -> float:
        return 1.0

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """DDPM's ancestral step as the SDE's discretisation (score SDE app. E, eq. 44): over
        one step of size dt, f = (sqrt(1 - b) - 1) x, G = sqrt(b), b = beta(t) dt."""
        b = self.beta(t) * dt
        return (torch.sqrt(1 - b) - 1)[:, None] * x, b.sqrt()

    def rho_to_time(self, rho: Tensor) -> Tensor:
        """Invert rho(t) = sigma(t)/alpha(t) (AdjointDPM's variable): alpha^2 = 1/(1 + rho^2),
        so m(t) = -log(1 + rho^2)/2, a quadratic in t."""
        c = 0.5 * torch.log1p(rho * rho)  # = -m(t) = a t^2 + b t
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return (-b + torch.sqrt(b * b + 4 * a * c)) / (2 * a)

    def model_time(self, t: Tensor) -> Tensor:
        return torch.as_tensor(t, dtype=torch.float64)

    def grid(self, steps: int, start: float = 1.0) -> list[float]:
        """``steps`` evenly spaced times from ``start`` to eps, then 0 (clean): the last step
        is the usual final denoising step."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return torch.linspace(start, self.eps, steps, dtype=torch.float64).tolist() + [0.0]

    def sample_times(self, n: int, gen: torch.Generator) -> Tensor:
        return self.eps + (1 - self.eps) * torch.rand(n, generator=gen, dtype=torch.float64)


@dataclasses.dataclass(frozen=True)
class VESDE:
    """Variance-exploding SDE (SMLD's continuous limit): x_t = x_0 + sigma(t) z,
    sigma(t) = sigma_min (sigma_max/sigma_min)^t, g(t) = sigma(t) sqrt(2 log(sigma_max/sigma_min))."""

    sigma_min: float = 0.01
    sigma_max: float = 10.0
    eps: float = 1e-5

    continuous = True
    T = 1.0

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), self.sigma(t)

    def alpha_bar(self, t: Tensor) -> Tensor:
        """In the scaled variable x/sqrt(1 + sigma^2) VE is VP-like: alpha_bar = 1/(1 + sigma^2)."""
        s = self.sigma(torch.as_tensor(t, dtype=torch.float64))
        return 1 / (1 + s * s)

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
        return torch.zeros_like(x), g

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x0, self.sigma(t)

    def prior_std(self) -> float:
        return self.sigma_max

    def prior_logp(self, z: Tensor) -> Tensor:
        d = z.shape[-1]
        s2 = self.sigma_max ** 2
        return -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * (z * z).sum(-1) / s2

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """SMLD's ancestral step (score SDE eq. 47): G = sqrt(sigma(t)^2 - sigma(t - dt)^2)."""
        s, s_prev = self.sigma(t), self.sigma((t - dt).clamp(min=0))
        s_prev = torch.where(t - dt <= 0, torch.zeros_like(s_prev), s_prev)
        return torch.zeros_like(x), torch.sqrt(s * s - s_prev * s_prev)

    def model_time(self, t: Tensor) -> Tensor:
        return torch.as_tensor(t, dtype=torch.float64)

    def grid(self, steps: int, start: float = 1.0) -> list[float]:
        return torch.linspace(start, self.eps, steps, dtype=torch.float64).tolist() + [0.0]

    def sample_times(self, n: int, gen: torch.Generator) -> Tensor:
        return self.eps + (1 - self.eps) * torch.rand(n, generator=gen, dtype=torch.float64)


def make_sde(kind: str = "vp", **kw):
    if kind == "vp":
        return VPSDE(**kw)
    if kind == "ve":
        return VESDE(**kw)
    raise ValueError(f"unknown SDE {kind!r}; valid: vp, ve")
