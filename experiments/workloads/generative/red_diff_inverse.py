"""``red_diff_inverse`` -- A Variational Perspective on Solving Inverse Problems with Diffusion
Models (RED-diff; Mardani, Song, Kautz, Vahdat; ICLR 2024). Official code: NVlabs/RED-diff
(``algos/reddiff.py``, ``algos/dps.py``, ``_configs/algo/*.yaml``; read, not copied).

Inverse problem: y = H(x_0) + sigma_y n. RED-diff fits a variational posterior q = N(mu, sigma^2 I)
with sigma -> 0, optimising mu by Adam while t sweeps the diffusion times from noisy to clean
(one step per t). At each step, with fresh eps ~ N(0, I):

    x_t = sqrt(ab_t) mu + sqrt(1 - ab_t) eps,
    loss(mu) = v ||y - H(mu)||^2 / 2 + w_t mean( sg[eps_theta(x_t, t) - eps] * mu ),
    w_t = lambda sqrt(1 - ab_t) / sqrt(ab_t)        (1/SNR^(1/2), the code's "linear" weighting),

(both terms averaged over entries, as the official code; lambda = 0.25, v = 1, Adam lr 0.1,
betas (0.9, 0.99), mu initialised at the pseudo-inverse H^+ y). The denoiser at every t acts as
a regulariser (score distillation), and no gradient flows through it.

Baselines: the pseudo-inverse H^+ y (the "plain" solution) and DPS (Chung et al. 2023, the
code's ``original`` variant): DDIM (eta = 0) from H^+ y noised to T, each step subtracting
zeta / ||y - H(x0_hat)|| * grad_{x_t} ||y - H(x0_hat(x_t))||^2 (zeta in {0.1, 1}, the code's
values for inpainting and super-resolution; the better per task is reported), at the same
number of function evaluations. Ablations: the order of t (descending, ascending, random) and
the weighting (1/SNR^(1/2) vs constant w_t = lambda).

Tasks on 8x8 digits in [-1, 1], sigma_y = 0.05: ``inpaint`` (the bottom half -- 32 pixels --
missing; H^+ fills it with 0) and ``sr2`` (2x2 average pooling to 4x4; H^+ = nearest upsampling).
Prior: the family's cached digits base (core.presets.DIGITS_V). Metric: PSNR (dB, range 2) to
the clean digit.

DP: RED-diff is per-image optimisation at inference time (no all-reduce); what trains through
the communication layer is the *base model* (core.presets.TrainsTheBase: its v-prediction
loss, each worker a shard of the training digits, minibatch/times/noise drawn from (data_seed,
worker, step)). ``evaluate`` runs a 20-step RED-diff inpainting of 16 held-out digits with the
params being trained.

Mechanism check (over seeds, both tasks, held-out digits): RED-diff's PSNR beats the
pseudo-inverse and DPS at equal NFE; descending t beats ascending and random; 1/SNR^(1/2)
weighting beats constant.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.reproduce.result import Result

from .core import data as D
from .core import metrics as M
from .core.base import base_model
from .core.losses import bcast, eps_to_x0
from .core.presets import TrainsTheBase
from .core.report import arm_table, mean, plot_images, seeds_or, single_thread


# -- forward operators (flat images [B, 64] <-> measurements [B, m]) -----------------------------
@dataclasses.dataclass(frozen=True)
class Operator:
    task: Literal["inpaint", "sr2"] = "inpaint"

    def H(self, x: Tensor) -> Tensor:
        img = x.reshape(-1, 8, 8)
        if self.task == "inpaint":
            return img[:, :4, :].reshape(len(x), 32)   # the top half is observed
        return F.avg_pool2d(img[:, None], 2).reshape(len(x), 16)

    def pinv(self, y: Tensor) -> Tensor:
        """Moore-Penrose pseudo-inverse H^+ y."""
        if self.task == "inpaint":
            return torch.cat([y, torch.zeros_like(y)], 1)
        return F.interpolate(y.reshape(-1, 1, 4, 4), scale_factor=2, mode="nearest").reshape(len(y), 64)

    def measure(self, x0: Tensor, sigma_y: float, gen: torch.Generator) -> Tensor:
        y = self.H(x0)
        return y + sigma_y * torch.randn(y.shape, generator=gen, dtype=y.dtype)


def _adam(g: Tensor, state: tuple, lr: float, betas=(0.9, 0.99), eps: float = 1e-8) -> tuple[Tensor, tuple]:
    """One Adam step (the official RED-diff betas): (update to subtract, new state)."""
    m, v, k = state
    m = betas[0] * m + (1 - betas[0]) * g
    v = betas[1] * v + (1 - betas[1]) * g * g
    k = k + 1
    mh, vh = m / (1 - betas[0] ** k), v / (1 - betas[1] ** k)
    return lr * mh / (vh.sqrt() + eps), (m, v, k)


@dataclasses.dataclass(frozen=True)
class REDDiffInverse(TrainsTheBase):
    task: Literal["inpaint", "sr2"] = "inpaint"   # evaluate's task (the check runs both)
    steps: int = 100            # RED-diff steps (= NFE; the same for DPS)
    lr: float = 0.1             # Adam step on mu
    lam: float = 0.25           # lambda: the regulariser weight (grad_term_weight)
    obs_weight: float = 1.0     # v
    sigma_y: float = 0.05
    eval_images: int = 16
    eval_steps: int = 20
    batch_size: int = 128       # base-model training: images per worker per round
    data_seed: int = 0

    name: ClassVar[str] = "red_diff_inverse"
    paper: ClassVar[str] = "A Variational Perspective on Solving Inverse Problems with Diffusion Models (RED-Diff)"
    primary_metric: ClassVar[str] = "psnr"
    higher_is_better: ClassVar[bool] = True

    def __post_init__(self):
        if self.task not in ("inpaint", "sr2"):
            raise ValueError(f"red_diff_inverse: task must be inpaint or sr2, got {self.task!r}")
        if self.steps < 1 or self.eval_steps < 1 or self.lr <= 0 or self.sigma_y < 0:
            raise ValueError("red_diff_inverse: need steps, eval_steps >= 1, lr > 0 and sigma_y >= 0")

    # -- the mechanism ----------------------------------------------------------------------------
    def times(self, steps: int, order: str, gen: torch.Generator) -> list[int]:
        """``steps`` times of the DDIM grid in the given order (descending is RED-diff's)."""
        ts = self.trainer.sched.grid(steps)[:-1]  # T-1 .. 0
        if order == "ascending":
            return ts[::-1]
        if order == "random":
            return [ts[i] for i in torch.randperm(len(ts), generator=gen).tolist()]
        if order != "descending":
            raise ValueError(f"order must be descending, ascending or random, got {order!r}")
        return ts

    def red_diff(self, eps, op: Operator, y: Tensor, steps: int, gen: torch.Generator, order: str = "descending",
                 weighting: str = "snr") -> Tensor:
        """mu after one Adam step per time (module docstring); ``y [B, m]`` -> ``[B, 64]``."""
        sched = self.trainer.sched
        mu = op.pinv(y).clone()
        state = (torch.zeros_like(mu), torch.zeros_like(mu), 0)
        for t in self.times(steps, order, gen):
            ab = float(sched.alpha_bar(torch.tensor(t)))
            noise = torch.randn(mu.shape, generator=gen, dtype=mu.dtype)
            x_t = math.sqrt(ab) * mu + math.sqrt(1 - ab) * noise
            e = eps(x_t, torch.full((len(mu),), t))                        # sg[eps_theta(x_t, t)]
            w = self.lam * (math.sqrt((1 - ab) / ab) if weighting == "snr" else 1.0)
            with torch.enable_grad():
                m = mu.detach().requires_grad_(True)
                loss = self.obs_weight * ((y - op.H(m)) ** 2).mean() / 2 + w * ((e - noise) * m).mean()
                (g,) = torch.autograd.grad(loss, m)
            step, state = _adam(g, state, self.lr)
            mu = mu - step
        return mu

    def dps(self, eps_grad, op: Operator, y: Tensor, steps: int, zeta: float, gen: torch.Generator) -> Tensor:
        """DPS with DDIM (eta = 0) on the same grid; ``eps_grad`` must allow autograd through x."""
        sched = self.trainer.sched
        times = sched.grid(steps)
        ab0 = float(sched.alpha_bar(torch.tensor(times[0])))
        x = math.sqrt(ab0) * op.pinv(y) + math.sqrt(1 - ab0) * torch.randn(op.pinv(y).shape, generator=gen, dtype=y.dtype)
        for t, s in zip(times[:-1], times[1:]):
            ab, ab_s = sched.alpha_bar(torch.full((len(x),), t)), sched.alpha_bar(torch.full((len(x),), s))
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                e = eps_grad(xr, torch.full((len(x),), t))
                x0 = eps_to_x0(xr, e, ab.to(x.dtype))
                r = ((y - op.H(x0)) ** 2).sum(1)                          # [B]
                (g,) = torch.autograd.grad(r.sum(), xr)
            coeff = zeta / r.detach().sqrt().clamp(min=1e-12)
            x = bcast(ab_s.sqrt(), x) * x0.detach() + bcast((1 - ab_s).sqrt(), x) * e.detach() - bcast(coeff, x) * g
        return x

    def eps_grad(self, params):
        """eps_theta(x, t) in float64 that autograd can differentiate through x (for DPS)."""
        p = {k: v.detach().double() for k, v in params.items()}
        return lambda x, t: self.trainer.eps(p, x, t)

    def evaluate(self, params) -> dict[str, float]:
        eps = self.eps_fn(params)
        x0 = D.digits("test")[0][: self.eval_images].double()
        op = Operator(self.task)
        g = D.rng("reddiff-eval", self.data_seed)
        y = op.measure(x0, self.sigma_y, g)
        with torch.no_grad():
            mu = self.red_diff(eps, op, y, self.eval_steps, g).clamp(-1, 1)
            return {"loss": float(self.loss(params, self.trainer.eval_batch())), "psnr": float(M.psnr(mu, x0).mean()),
                    "psnr_pinv": float(M.psnr(op.pinv(y).clamp(-1, 1), x0).mean())}

    # -- mechanism check -------------------------------------------------------------------------
    def reproduce(self, quick: bool = True, out=None, seeds: Optional[int] = None) -> Result:
        """RED-diff vs pseudo-inverse and DPS (equal NFE); t order and weighting ablations."""
        k = seeds_or(seeds, 3)
        n_img, steps = (24 if quick else 128), self.steps
        params = base_model(self.base_spec).params
        eps, eps_g = self.eps_fn(params), self.eps_grad(params)
        x_test = D.digits("test")[0].double()
        arm_names = ["pseudo-inverse", "DPS (best zeta)", "RED-diff", "RED-diff, ascending t", "RED-diff, random t",
                     "RED-diff, constant w_t"]
        psnr = {a: {} for a in arm_names}
        figs = {}
        with single_thread():
            for s in range(k):
                idx = torch.randperm(len(x_test), generator=D.rng("reddiff-pick", s))[:n_img]
                x0 = x_test[idx]
                for task in ("inpaint", "sr2"):
                    op = Operator(task)
                    y = op.measure(x0, self.sigma_y, D.rng("reddiff-y", task, s))
                    g = lambda tag: D.rng("reddiff", tag, task, s)
                    with torch.no_grad():
                        outs = {"pseudo-inverse": op.pinv(y),
                                "RED-diff": self.red_diff(eps, op, y, steps, g("red")),
                                "RED-diff, ascending t": self.red_diff(eps, op, y, steps, g("red"), order="ascending"),
                                "RED-diff, random t": self.red_diff(eps, op, y, steps, g("red"), order="random"),
                                "RED-diff, constant w_t": self.red_diff(eps, op, y, steps, g("red"), weighting="const")}
                    dps = {z: self.dps(eps_g, op, y, steps, z, g("dps")) for z in (0.1, 1.0)}
                    outs["DPS (best zeta)"] = max(dps.values(), key=lambda v: float(M.psnr(v.clamp(-1, 1), x0).mean()))
                    for a, v in outs.items():
                        psnr[a].setdefault(task, []).append(float(M.psnr(v.clamp(-1, 1), x0).mean()))
                    if s == 0:
                        figs.update({f"{task}: clean": x0[:12], f"{task}: H^+ y": op.pinv(y)[:12],
                                     f"{task}: DPS": outs["DPS (best zeta)"][:12].clamp(-1, 1),
                                     f"{task}: RED-diff": outs["RED-diff"][:12].clamp(-1, 1)})
        res = Result(f"red_diff_inverse: inpainting (bottom half) and 2x super-resolution of held-out digits, "
                     f"sigma_y = {self.sigma_y} ({k} seeds, {n_img} images, {steps} steps = NFE)")
        res.tables["PSNR dB (mean ± sd over seeds)"] = arm_table(psnr, ["inpaint", "sr2"], "method")
        m = {a: {task: mean(v) for task, v in d.items()} for a, d in psnr.items()}
        red = m["RED-diff"]
        for other, what in (("pseudo-inverse", "the pseudo-inverse"), ("DPS (best zeta)", "DPS at equal NFE"),
                            ("RED-diff, ascending t", "ascending t"), ("RED-diff, random t", "random t"),
                            ("RED-diff, constant w_t", "constant weighting")):
            res.check(f"RED-diff beats {what}", "PSNR higher on both tasks",
                      ", ".join(f"{task} {red[task]:.2f} vs {m[other][task]:.2f} dB ({red[task] - m[other][task]:+.2f})"
                                for task in red), all(red[task] > m[other][task] for task in red))
        if out is not None and not quick:
            res.figures.append(plot_images(figs, Path(out) / "red_diff_inverse.png"))
        return res
