"""``oms_one_more_step`` -- One More Step: A Versatile Plug-and-Play Module for Rectifying
Diffusion Schedule Flaws and Enhancing Low-Frequency Controls (Hu, Chen, Li, Li, Han, Lu, Li;
CVPR 2024). Official code: mhh0318/OneMoreStep (``diffusers_patch/pipelines/oms/pipeline_oms.py``;
read, not copied).

The flaw: a schedule that keeps signal at T (alpha_bar_T > 0, Stable Diffusion's scaled-linear)
trains the model on x_T = sqrt(ab_T) x_0 + sqrt(1 - ab_T) eps, whose low frequencies (here: the
image's mean brightness) still carry the data, but sampling starts from x*_T ~ N(0, I). The
model reads the missing brightness from pure noise, so the samples' brightness collapses toward
the average: "a dark image" comes out grey. OMS prepends one step at zero SNR: a small net
psi(x*_T, prompt), trained with v-prediction at SNR 0 (there v = -x_0, so the loss is
||psi(x*_T, c) + x_0||^2) with the base frozen, predicts x0_hat = -psi(x*_T, c); then

    x_T = sqrt(ab_T) x0_hat + sqrt(1 - ab_T) x*_T,

and the unchanged base sampler (DDIM, 50 steps) continues from x_T. (The spec's deterministic
form; the official ``oms_step`` takes a DDPM posterior step with fresh noise instead.)

Model/data: 8x8 digits in [-1, 1] plus a random brightness offset b ~ U(-``offset``, ``offset``)
per image; the "prompt" (the toy's text) is the brightness bin of b (``prompts`` equal bins;
1 = unconditional). The base is a prompt-conditioned eps-MLP (3 x 192, one-hot prompt input)
on a scaled-linear schedule, T = 200, beta_end = 0.0065: ab_T = 0.038 (the spec's 0.02-0.05);
trained once through the simulator (gd + identity + Adam) and cached. psi is a 2 x 64 MLP.

Metrics: ``w1_brightness`` -- Wasserstein-1 between the mean-pixel brightness of samples and of
data (equal counts per prompt); per-prompt mean brightness; ``loss`` (psi's zero-SNR v-loss).

DP: psi's training -- each worker holds a contiguous shard of the training digits and draws
images, offsets and the zero-SNR noise from (data_seed, worker, step); psi's gradients are what
is communicated (the base stays frozen).

Mechanism check (over seeds): base samples' brightness collapses toward the average (the spread
of per-prompt mean brightness shrinks against the data's); with OMS (psi trained with the
simulator's gd + identity + Adam iterates, core.base.fit) the W1 distance of the brightness distribution to the data at least halves.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.reproduce.result import Result

from .core import data as D
from .core import metrics as M
from .core import samplers as S
from .core.base import fit, train
from .core.cache import cached
from .core.denoisers import mlp_apply, mlp_init
from .core.losses import eps_loss
from .core.report import arm_table, mean, plot_images, seeds_or, single_thread
from .core.schedules import Discrete


def with_brightness(x: Tensor, gen: torch.Generator, offset: float, prompts: int) -> tuple[Tensor, Tensor]:
    """(x + b, prompt): b ~ U(-offset, offset) per image, prompt = b's bin among ``prompts`` equal bins."""
    u = torch.rand(len(x), generator=gen)
    c = (u * prompts).long().clamp(max=prompts - 1)
    return x + (2 * u[:, None] - 1) * offset, c


def brightness(x: Tensor) -> Tensor:
    return x.reshape(len(x), -1).mean(1)


# -- the frozen base: a prompt-conditioned eps-model on a schedule with signal at T ----------------
@dataclasses.dataclass(frozen=True)
class OMSBase:
    offset: float = 1.0
    prompts: int = 3
    T: int = 200
    beta_end: float = 0.0065    # scaled-linear: ab_T = 0.038
    hidden: int = 192
    depth: int = 3
    batch_size: int = 128
    data_seed: int = 0

    name: ClassVar[str] = "oms-base"
    default_lr: ClassVar[float] = 2e-3
    default_optimizer: ClassVar[str] = "adam"

    @property
    def sched(self) -> Discrete:
        return Discrete("scaled_linear", self.T, beta_end=self.beta_end)

    def init_params(self, seed: int) -> dict[str, Tensor]:
        return mlp_init(D.rng("oms-base-init", seed), 64, hidden=self.hidden, depth=self.depth, cond_dim=self.prompts)

    def cond(self, c: Tensor, dtype) -> Tensor:
        return F.one_hot(c, self.prompts).to(dtype)

    def loss(self, params, batch) -> Tensor:
        x0, c, t, noise = batch
        dtype = next(iter(params.values())).dtype
        return eps_loss(mlp_apply, params, self.sched, x0.to(dtype), t, noise.to(dtype), self.cond(c, dtype))

    def batch(self, worker: int, num_workers: int, step: int):
        """(x0 + b [B, 64], prompt [B], t [B], noise [B, 64]) from the worker's shard, drawn from (data_seed, worker, step)."""
        x = D.digits("train")[0]
        idx = D.minibatch(len(x), self.batch_size, self.data_seed, worker, num_workers, step, "oms-base")
        g = D.rng("oms-base", self.data_seed, worker, step)
        x0, c = with_brightness(x[idx], g, self.offset, self.prompts)
        return x0, c, self.sched.sample_times(len(x0), g), torch.randn(x0.shape, generator=g)

    def evaluate(self, params) -> dict[str, float]:
        x = D.digits("test")[0]
        g = D.rng("oms-base-eval")
        x0, c = with_brightness(x, g, self.offset, self.prompts)
        with torch.no_grad():
            return {"loss": float(self.loss(params, (x0, c, self.sched.sample_times(len(x0), g), torch.randn(x0.shape, generator=g))))}

    def trained(self, rounds: int = 3000, seed: int = 0) -> dict[str, Tensor]:
        """Trained once through the simulator (gd + identity + Adam, 2 workers), cached."""
        key = {"workload": dataclasses.asdict(self), "rounds": rounds, "seed": seed, "lr": self.default_lr,
               "method": "gd+identity+adam", "workers": 2}
        return cached("oms-base", key, lambda: train(self, seed, rounds, n=2)[0])

    def eps_fn(self, params, c: Tensor, dtype=torch.float64):
        """eps_theta(x, t | prompt c) with frozen params, for the samplers."""
        p = {k: v.to(dtype) for k, v in params.items()}
        cond = self.cond(c, dtype)

        def eps(x: Tensor, t: Tensor) -> Tensor:
            with torch.no_grad():
                return mlp_apply(p, x.to(dtype), self.sched.model_time(t).to(dtype), cond)
        return eps


# -- OMS: psi, trained at zero SNR with the base frozen ----------------------------------------
@dataclasses.dataclass(frozen=True)
class OneMoreStep:
    offset: float = 1.0         # brightness offsets b ~ U(-offset, offset)
    prompts: int = 3            # brightness bins used as the prompt (1 = unconditional)
    hidden: int = 64            # psi: MLP width
    depth: int = 2
    steps: int = 50             # the base's DDIM steps
    eval_samples: int = 96      # per prompt, in evaluate (20 DDIM steps there)
    batch_size: int = 128
    data_seed: int = 0

    name: ClassVar[str] = "oms_one_more_step"
    paper: ClassVar[str] = ("One More Step: A Versatile Plug-and-Play Module for Rectifying Diffusion Schedule Flaws "
                            "and Enhancing Low-Frequency Controls")
    primary_metric: ClassVar[str] = "w1_brightness"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[float] = 3e-3
    default_rounds: ClassVar[int] = 300
    default_optimizer: ClassVar[str] = "adam"

    def __post_init__(self):
        if self.prompts < 1 or self.offset < 0:
            raise ValueError(f"oms_one_more_step: need prompts >= 1 and offset >= 0, got {self.prompts}, {self.offset}")

    @property
    def base(self) -> OMSBase:
        return OMSBase(offset=self.offset, prompts=self.prompts)

    def init_params(self, seed: int) -> dict[str, Tensor]:
        return mlp_init(D.rng("oms-psi-init", seed), 64, hidden=self.hidden, depth=self.depth, cond_dim=self.prompts)

    def psi(self, params, x_star: Tensor, c: Tensor) -> Tensor:
        """v-prediction at the zero-SNR step: ``x*_T [B, 64]``, prompts ``c [B]`` -> ``[B, 64]``."""
        dtype = next(iter(params.values())).dtype
        zero_snr_time = torch.ones(len(x_star), dtype=dtype)  # the one time psi ever sees
        return mlp_apply(params, x_star.to(dtype), zero_snr_time, self.base.cond(c, dtype))

    def loss(self, params, batch) -> Tensor:
        """v-loss at SNR 0: x_T = eps and v = sqrt(0) eps - sqrt(1) x_0 = -x_0."""
        x0, c, eps = batch
        dtype = next(iter(params.values())).dtype
        return ((self.psi(params, eps, c) + x0.to(dtype)) ** 2).sum(1).mean()

    def batch(self, worker: int, num_workers: int, step: int):
        """(x0 + b, prompt, x*_T) from the worker's shard, drawn from (data_seed, worker, step)."""
        x = D.digits("train")[0]
        idx = D.minibatch(len(x), self.batch_size, self.data_seed, worker, num_workers, step, "oms")
        g = D.rng("oms", self.data_seed, worker, step)
        x0, c = with_brightness(x[idx], g, self.offset, self.prompts)
        return x0, c, torch.randn(x0.shape, generator=g)

    # -- sampling ----------------------------------------------------------------------------------
    def sample(self, base_params, c: Tensor, x_star: Tensor, steps: int, psi_params=None) -> Tensor:
        """DDIM from x*_T (base) or from OMS's x_T = sqrt(ab_T) x0_hat + sqrt(1 - ab_T) x*_T."""
        sched = self.base.sched
        x = x_star
        if psi_params is not None:
            ab_T = sched.alpha_bar(torch.tensor(sched.T - 1)).to(x.dtype)
            with torch.no_grad():
                x0_hat = -self.psi({k: v.to(x.dtype) for k, v in psi_params.items()}, x_star, c)
            x = ab_T.sqrt() * x0_hat + (1 - ab_T).sqrt() * x_star
        return S.ddim_sample(self.base.eps_fn(base_params, c), sched, x, sched.grid(steps))

    def draws(self, n: int, tag, dtype=torch.float64) -> tuple[Tensor, Tensor, Tensor]:
        """n per prompt: (data x0 + b from held-out digits, prompts, x*_T ~ N(0, I))."""
        g = D.rng("oms-draws", tag, self.data_seed)
        x_test = D.digits("test")[0]
        rows, cs = [], []
        for c in range(self.prompts):  # rejection-free: draw b inside bin c
            xi = x_test[torch.randint(0, len(x_test), (n,), generator=g)]
            u = (c + torch.rand(n, generator=g)) / self.prompts
            rows.append(xi + (2 * u[:, None] - 1) * self.offset)
            cs.append(torch.full((n,), c))
        x0, cc = torch.cat(rows).to(dtype), torch.cat(cs)
        return x0, cc, torch.randn(x0.shape, generator=g, dtype=dtype)

    def brightness_stats(self, x: Tensor, data: Tensor, c: Tensor) -> dict[str, float]:
        bx, bd = brightness(x), brightness(data)
        out = {"w1_brightness": M.wasserstein_1d(bx, bd), "sd_brightness": float(bx.std())}
        for k in range(self.prompts):
            out[f"mean b | prompt {k}"] = float(bx[c == k].mean())
        return out

    def evaluate(self, params) -> dict[str, float]:
        base_params = self.base.trained()
        x0, c, x_star = self.draws(self.eval_samples, "eval")
        with torch.no_grad():
            loss = float(self.loss(params, (x0, c, x_star)))
            x = self.sample(base_params, c, x_star, 20, psi_params=params)
        return {"loss": loss, "w1_brightness": self.brightness_stats(x, x0, c)["w1_brightness"]}

    # -- mechanism check -------------------------------------------------------------------------
    def reproduce(self, quick: bool = True, out=None, seeds: Optional[int] = None) -> Result:
        """Base sampling vs OMS (psi trained through the simulator) on brightness-offset digits."""
        k = seeds_or(seeds, 3)
        n, rounds = (128, 300) if quick else (512, 600)
        base_params = self.base.trained()
        arms: dict[str, dict[str, list[float]]] = {"data": {}, "base sampler": {}, "OMS + base sampler": {}}
        figs = {}
        with single_thread():
            for s in range(k):
                w = dataclasses.replace(self, data_seed=s)
                psi, _ = fit(w, s, rounds, n=2)  # = the simulator's gd + identity + Adam iterates, 2 workers
                x0, c, x_star = w.draws(n, "check")
                with torch.no_grad():
                    outs = {"data": x0, "base sampler": w.sample(base_params, c, x_star, self.steps),
                            "OMS + base sampler": w.sample(base_params, c, x_star, self.steps, psi_params=psi)}
                for a, x in outs.items():
                    for q, v in w.brightness_stats(x, x0, c).items():
                        arms[a].setdefault(q, []).append(v)
                if s == 0:
                    pick = torch.cat([torch.nonzero(c == j)[:4, 0] for j in range(self.prompts)])
                    figs = {a: x[pick] for a, x in outs.items()}
        ab_T = float(self.base.sched.alpha_bars[-1])
        res = Result(f"oms_one_more_step: brightness of samples, scaled-linear ab_T = {ab_T:.3f}, {self.prompts} "
                     f"brightness prompts ({k} seeds, {n} samples per prompt, psi {rounds} rounds n=2, DDIM {self.steps})")
        cols = ["w1_brightness", "sd_brightness", *[f"mean b | prompt {j}" for j in range(self.prompts)]]
        res.tables["mean-pixel brightness (mean ± sd over seeds)"] = arm_table(arms, cols, "samples")
        m = {a: {q: mean(v) for q, v in d.items()} for a, d in arms.items()}
        spread = {a: m[a][f"mean b | prompt {self.prompts - 1}"] - m[a]["mean b | prompt 0"] for a in m}
        res.check("base samples' brightness collapses toward the average",
                  "spread of per-prompt mean brightness (last - first prompt): base < data",
                  f"base {spread['base sampler']:.3f} vs data {spread['data']:.3f}; sd {m['base sampler']['sd_brightness']:.3f} "
                  f"vs {m['data']['sd_brightness']:.3f}", spread["base sampler"] < spread["data"])
        wb, wo = m["base sampler"]["w1_brightness"], m["OMS + base sampler"]["w1_brightness"]
        res.check("OMS's extra step brings the brightness distribution back", "W1(OMS) <= W1(base) / 2",
                  f"{wo:.4f} vs {wb:.4f} (ratio {wo / wb:.2f})", wo <= wb / 2)
        if out is not None and not quick:
            res.figures.append(plot_images({a: x.clamp(-2, 2) / 2 for a, x in figs.items()}, Path(out) / "oms_samples.png"))
        return res
