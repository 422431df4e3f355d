"""``rddm`` -- Residual Denoising Diffusion Models (Liu et al., CVPR 2024). Official code:
nachifur/RDDM (``src/residual_denoising_diffusion_pytorch.py``; read, not copied).

Forward process (paper eq. 5): with the residual I_res = I_in - I_0,

    I_t = I_0 + abar_t I_res + bbar_t eps,    abar_t = sum_{s<=t} alpha_s,  bbar_t^2 = sum_{s<=t} beta_s^2,

abar_T = 1 and bbar_T^2 = ``sum_scale`` (1 for generation, where I_in = 0 and I_T is pure noise;
0.01 for restoration, where I_T is the degraded image plus a little noise). The official code's
schedules: alpha "decreased" (alpha_s proportional to T - s + 1) and beta^2 "increased"
(proportional to s), and the network is conditioned on (abar_t, bbar_t).

The network predicts both the residual and the noise (objective ``pred_res_noise``):

    L = || I_res - I_res^theta(I_t, I_in, t) ||_1 + || eps - eps^theta(I_t, I_in, t) ||_1.

Sampling, eta = 0 (eq. 12 with sigma = 0; the code's ``special_eta_0`` branch), on any sub-grid:

    I_{t'} = I_t - (abar_t - abar_{t'}) I_res^theta - (bbar_t - bbar_{t'}) eps^theta.

Baseline (``mode=ddim``): the usual noise-only conditional diffusion the paper contrasts with --
an eps-network fed [x_t, I_in], x_t = sqrt(ab) I_0 + sqrt(1 - ab) eps (linear schedule), DDIM
from pure noise.

Model/data: a tiny time-conditioned conv net (core.denoisers.convnet, 3 layers of 16 channels)
on [I_t, I_in] with two output channels (residual, noise) (``arch=unet|mlp`` for the others); 8x8 digits in [-1, 1], degraded by synthetic rain streaks (1 to
``streaks`` bright near-vertical lines per image, fresh per draw) for restoration, I_in = 0 for
generation.

Metrics: ``psnr`` of 5-step restorations of held-out degraded digits (generation mode: PSNR of
each sample to its nearest training digit) and ``confidence`` (the digits classifier's mean
max-probability on the outputs).

DP: standard diffusion training -- each worker holds a contiguous shard of the training digits;
its images, rain streaks, times and noise are drawn from (data_seed, worker, step); the
gradient of the L1 loss is what is communicated.

Mechanism check (over seeds, every model trained with the simulator's gd iterates, core.base.fit):
restoration in 5 steps -- RDDM's PSNR exceeds the degraded input's and the noise-only
conditional DDIM's at the same step count; generation mode's samples are labelled confidently
by the digits classifier ("confidently": mean max-probability closer to real test digits' than
to pure noise's; the classifier is trained with outlier exposure). The generation arm uses
``arch=mlp``: at this budget the 3-layer conv net, with no global receptive field, draws blobs.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar, Literal, Optional

import torch
from torch import Tensor

from experiments.reproduce.result import Result

from .core import data as D
from .core import metrics as M
from .core.base import fit
from .core.denoisers import convnet_apply, convnet_init, mlp_apply, mlp_init, unet_apply, unet_init
from .core.losses import bcast
from .core.samplers import ddim_sample
from .core.schedules import Discrete
from .core.report import arm_table, mean, plot_images, seeds_or, single_thread


def rain(x: Tensor, gen: torch.Generator, streaks: int = 3, amp: tuple[float, float] = (0.8, 1.6)) -> Tensor:
    """Add 1..``streaks`` bright near-vertical lines (angles within 25 degrees of vertical, soft
    width one pixel) to images ``x [B, 64]`` in [-1, 1]; returns the clipped degraded images."""
    B = x.shape[0]
    k = torch.randint(1, streaks + 1, (B, 1), generator=gen)
    theta = (torch.rand(B, streaks, generator=gen) - 0.5) * math.radians(50)
    offset = torch.rand(B, streaks, generator=gen) * 9 - 0.5  # where the line crosses the middle row
    a = amp[0] + (amp[1] - amp[0]) * torch.rand(B, streaks, generator=gen)
    r, c = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    # distance of pixel (r, c) to the line through (3.5, offset) with direction (cos theta, sin theta)
    dist = ((c[None, None] - offset[..., None, None]) * torch.cos(theta)[..., None, None]
            - (r[None, None] - 3.5) * torch.sin(theta)[..., None, None]).abs()  # [B, streaks, 8, 8]
    on = (torch.arange(streaks)[None] < k).float()  # [B, streaks] active lines
    lines = ((1 - dist).clamp(min=0) * (a * on)[..., None, None]).sum(1).reshape(B, 64)
    return (x + lines).clamp(-1, 1)


@dataclasses.dataclass(frozen=True)
class RDDMSchedule:
    """abar_t, bbar_t for t = 0..T (index 0 is clean: abar_0 = bbar_0 = 0)."""

    T: int = 100
    sum_scale: float = 0.01

    def tables(self) -> tuple[Tensor, Tensor]:
        s = torch.arange(1, self.T + 1, dtype=torch.float64)
        zero = torch.zeros(1, dtype=torch.float64)
        abar = torch.cat([zero, (self.T - s + 1).cumsum(0)]) / (self.T - s + 1).sum()  # alpha "decreased", abar_T = 1
        bbar2 = torch.cat([zero, s.cumsum(0)]) / s.sum() * self.sum_scale              # beta^2 "increased"
        return abar, bbar2.sqrt()


@dataclasses.dataclass(frozen=True)
class RDDM:
    mode: Literal["restore", "generate", "ddim"] = "restore"
    T: int = 100
    sum_scale: Optional[float] = None   # bbar_T^2; default 0.01 (restore) or 1 (generate)
    arch: Literal["conv", "unet", "mlp"] = "conv"
    width: int = 16                     # conv / U-Net channels, MLP width / 8
    layers: int = 3                     # conv layers (mlp: hidden layers)
    batch_size: int = 32                # images per worker per round
    streaks: int = 3
    sample_steps: int = 5
    eval_images: int = 128
    data_seed: int = 0

    name: ClassVar[str] = "rddm"
    paper: ClassVar[str] = "Residual Denoising Diffusion Models"
    primary_metric: ClassVar[str] = "psnr"
    higher_is_better: ClassVar[bool] = True
    default_lr: ClassVar[float] = 3e-3
    default_rounds: ClassVar[int] = 600
    default_optimizer: ClassVar[str] = "adam"

    def __post_init__(self):
        if self.T < self.sample_steps or self.sample_steps < 1:
            raise ValueError(f"rddm: need 1 <= sample_steps <= T, got sample_steps={self.sample_steps}, T={self.T}")
        if self.sum_scale is not None and not 0 < self.sum_scale <= 1:
            raise ValueError(f"rddm: sum_scale (bbar_T^2) must be in (0, 1], got {self.sum_scale}")

    @property
    def scale(self) -> float:
        return self.sum_scale if self.sum_scale is not None else (1.0 if self.mode == "generate" else 0.01)

    # -- data ----------------------------------------------------------------------------------
    def pairs(self, x0: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """(clean I_0, input I_in) as images ``[B, 1, 8, 8]``."""
        x_in = torch.zeros_like(x0) if self.mode == "generate" else rain(x0, gen, self.streaks)
        return x0.reshape(-1, 1, 8, 8), x_in.reshape(-1, 1, 8, 8)

    def batch(self, worker: int, num_workers: int, step: int):
        """(I_0, I_in, t [B] in 1..T, eps) from the worker's shard, drawn from (data_seed, worker, step)."""
        x, _ = D.digits("train")
        idx = D.minibatch(len(x), self.batch_size, self.data_seed, worker, num_workers, step, "rddm")
        g = D.rng("rddm", self.data_seed, worker, step)
        x0, x_in = self.pairs(x[idx], g)
        t = torch.randint(1, self.T + 1, (self.batch_size,), generator=g)
        return x0, x_in, t, torch.randn(x0.shape, generator=g)

    def test_set(self) -> tuple[Tensor, Tensor]:
        x, _ = D.digits("test")
        return self.pairs(x[: self.eval_images], D.rng("rddm-test", self.data_seed))

    # -- model ---------------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        out = 1 if self.mode == "ddim" else 2
        g, nt = D.rng("rddm-init", seed), 1 if self.mode == "ddim" else 2
        if self.arch == "mlp":
            return mlp_init(g, 64, 64 * out, hidden=8 * self.width, depth=self.layers, cond_dim=64, n_times=nt)
        if self.arch == "unet":
            return unet_init(g, 1, out, base=self.width, cond_channels=1, n_times=nt)
        return convnet_init(g, channels=1, out_channels=out, width=self.width, layers=self.layers,
                            cond_channels=1, n_times=nt)

    def net(self, params, x: Tensor, t: Tensor, x_in: Tensor) -> Tensor:
        """The denoiser on images ``[B, 1, 8, 8]`` -> ``[B, out, 8, 8]``."""
        if self.arch == "mlp":
            B = len(x)
            return mlp_apply(params, x.reshape(B, 64), t, x_in.reshape(B, 64)).reshape(B, -1, 8, 8)
        return (unet_apply if self.arch == "unet" else convnet_apply)(params, x, t, x_in)

    def _ddim_sched(self) -> Discrete:
        return Discrete("linear", self.T)

    def predict(self, params, x_t: Tensor, x_in: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """RDDM: (I_res^theta, eps^theta) at integer times ``t [B]``; ddim mode: (None, eps^theta)."""
        if self.mode == "ddim":
            sched = self._ddim_sched()
            return None, self.net(params, x_t, sched.model_time(t - 1).to(x_t.dtype), x_in)
        abar, bbar = (v.to(x_t.dtype) for v in RDDMSchedule(self.T, self.scale).tables())
        out = self.net(params, x_t, torch.stack([abar[t], bbar[t]], 1), x_in)  # conditioned on (abar_t, bbar_t)
        return out[:, :1], out[:, 1:]

    def loss(self, params, batch) -> Tensor:
        x0, x_in, t, eps = batch
        dtype = next(iter(params.values())).dtype
        x0, x_in, eps = x0.to(dtype), x_in.to(dtype), eps.to(dtype)
        if self.mode == "ddim":  # the baseline: eps-MSE of a conditional DDPM (t in 1..T is index t-1)
            ab = self._ddim_sched().alpha_bar(t - 1).to(dtype)
            x_t = bcast(ab.sqrt(), x0) * x0 + bcast((1 - ab).sqrt(), x0) * eps
            return ((self.predict(params, x_t, x_in, t)[1] - eps) ** 2).mean()
        abar, bbar = (v.to(dtype) for v in RDDMSchedule(self.T, self.scale).tables())
        res = x_in - x0
        x_t = x0 + bcast(abar[t], x0) * res + bcast(bbar[t], x0) * eps   # eq. 5
        res_hat, eps_hat = self.predict(params, x_t, x_in, t)
        return (res_hat - res).abs().mean() + (eps_hat - eps).abs().mean()

    # -- sampling ------------------------------------------------------------------------------
    def grid(self, steps: int) -> list[int]:
        return torch.linspace(self.T, 0, steps + 1, dtype=torch.float64).round().long().tolist()

    @torch.no_grad()
    def sample(self, params, x_in: Tensor, gen: torch.Generator, steps: Optional[int] = None) -> Tensor:
        """Outputs ``[B, 1, 8, 8]`` for inputs ``x_in`` in ``steps`` (default sample_steps) eta = 0 steps."""
        steps = steps or self.sample_steps
        params = {k: v.to(x_in.dtype) for k, v in params.items()}
        noise = torch.randn(x_in.shape, generator=gen, dtype=x_in.dtype)
        if self.mode == "ddim":
            sched = self._ddim_sched()
            eps_fn = lambda x, t: self.predict(params, x, x_in, t + 1)[1]
            return ddim_sample(eps_fn, sched, noise, sched.grid(steps), clip=1.0).clamp(-1, 1)
        abar, bbar = (v.to(x_in.dtype) for v in RDDMSchedule(self.T, self.scale).tables())
        x = x_in + bbar[self.T] * noise  # I_T
        grid = self.grid(steps)
        for t, t_next in zip(grid[:-1], grid[1:]):
            res_hat, eps_hat = self.predict(params, x, x_in, torch.full((len(x),), t))
            x = x - (abar[t] - abar[t_next]) * res_hat - (bbar[t] - bbar[t_next]) * eps_hat
        return x.clamp(-1, 1)

    # -- metrics -------------------------------------------------------------------------------
    def evaluate(self, params) -> dict[str, float]:
        x0, x_in = self.test_set()
        dtype = next(iter(params.values())).dtype
        x0, x_in = x0.to(dtype), x_in.to(dtype)
        out = self.sample(params, x_in, D.rng("rddm-eval", self.data_seed))
        g = D.rng("rddm-eval-loss", self.data_seed)
        t = torch.randint(1, self.T + 1, (len(x0),), generator=g)
        with torch.no_grad():
            loss = float(self.loss(params, (x0, x_in, t, torch.randn(x0.shape, generator=g))))
        if self.mode == "generate":  # fidelity to the data: PSNR to the nearest training digit
            train_x = D.digits("train")[0].to(dtype)
            ref = train_x[torch.cdist(out.reshape(len(out), -1), train_x).argmin(1)]
        else:
            ref = x0
        return {"loss": loss, "psnr": float(M.psnr(out.reshape(len(out), -1), ref.reshape(len(out), -1)).mean()),
                "confidence": M.digits_classifier().confidence(out.reshape(len(out), -1))}

    # -- mechanism check -----------------------------------------------------------------------
    def reproduce(self, quick: bool = True, out=None, seeds: Optional[int] = None) -> Result:
        """5-step restoration: RDDM beats the degraded input and the noise-only conditional DDIM
        (PSNR); generation mode (I_in = 0, bbar_T = 1) gives samples the digits classifier finds
        digit-like (confidence closer to real digits' than to pure noise's)."""
        k = seeds_or(seeds, 3)
        rounds, gen_rounds = (200, 300) if quick else (1500, 3000)
        names = {"restore": "RDDM (5 steps)", "ddim": "conditional DDIM (5 steps)", "generate": "RDDM generation (5 steps)"}
        arms: dict[str, dict[str, list[float]]] = {a: {"psnr": [], "confidence": []} for a in
                                                   ("degraded input", *names.values(), "clean test digits", "pure noise")}
        clf = M.digits_classifier()
        samples = {}
        with single_thread():
            for s in range(k):
                for mode, arm in names.items():
                    # generation: an MLP denoiser -- at this budget a 3-layer conv net (receptive
                    # field 11 px, no global context) generates blobs; restoration is local
                    w = dataclasses.replace(self, mode=mode, data_seed=s, **({"arch": "mlp", "width": 32} if mode == "generate" else {}))
                    params, _ = fit(w, s, gen_rounds if mode == "generate" else rounds)
                    ev = w.evaluate(params)
                    arms[arm]["confidence"].append(ev["confidence"])
                    if mode != "generate":
                        arms[arm]["psnr"].append(ev["psnr"])
                    if s == 0:
                        samples[arm] = w.sample(params, w.test_set()[1][:12], D.rng("rddm-fig"))
                x0, x_in = dataclasses.replace(self, mode="restore", data_seed=s).test_set()
                flat = lambda z: z.reshape(len(z), -1)
                arms["degraded input"]["psnr"].append(float(M.psnr(flat(x_in), flat(x0)).mean()))
                arms["degraded input"]["confidence"].append(clf.confidence(flat(x_in)))
                arms["clean test digits"]["confidence"].append(clf.confidence(flat(x0)))
                arms["pure noise"]["confidence"].append(clf.confidence(torch.randn(256, 64, generator=D.rng("rddm-noise", s)).clamp(-1, 1)))
                if s == 0:
                    samples = {"clean": x0[:12], "degraded": x_in[:12], **samples}
        res = Result(f"rddm: residual + noise diffusion, 5-step restoration and generation "
                     f"({k} seeds, {rounds}/{gen_rounds} rounds, n=2)")
        res.tables["8x8 digits with rain streaks (mean ± sd over seeds)"] = arm_table(arms, ["psnr", "confidence"])
        m = {a: {q: mean(v) for q, v in d.items()} for a, d in arms.items()}
        r, dd, inp = m[names["restore"]]["psnr"], m[names["ddim"]]["psnr"], m["degraded input"]["psnr"]
        res.check("RDDM restores better than the degraded input", "PSNR(RDDM) > PSNR(input)",
                  f"{r:.2f} dB vs {inp:.2f} dB (margin {r - inp:+.2f} dB)", r > inp)
        res.check("RDDM beats noise-only conditional DDIM at 5 steps", "PSNR(RDDM) > PSNR(DDIM)",
                  f"{r:.2f} dB vs {dd:.2f} dB (margin {r - dd:+.2f} dB)", r > dd)
        gc, real, noise = (m[a]["confidence"] for a in (names["generate"], "clean test digits", "pure noise"))
        res.check("generation mode yields digits the classifier labels confidently",
                  "confidence closer to real digits' than to pure noise's (> their midpoint)",
                  f"{gc:.3f} (real {real:.3f}, noise {noise:.3f}, midpoint {(real + noise) / 2:.3f})", gc > (real + noise) / 2)
        res.notes.append("confidence = the digits classifier's mean max-probability (trained with outlier exposure, "
                         "so noise scores low); generation uses an MLP denoiser, restoration the spec's conv net")
        if out is not None and not quick:
            res.figures.append(plot_images(samples, Path(out) / "rddm_samples.png"))
        return res
