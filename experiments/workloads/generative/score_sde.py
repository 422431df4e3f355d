"""``score_sde`` -- Score-Based Generative Modeling through Stochastic Differential Equations
(Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, ICLR 2021). Official code:
yang-song/score_sde_pytorch (``sde_lib.py``, ``losses.py``, ``sampling.py``, ``likelihood.py``;
read, not copied). The SDEs, samplers and likelihood live in the family core
(core/schedules.py, core/samplers.py); this file is the model, the loss and the check.

SDEs (eqs. 9-11):  VP  dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,  beta(t) = 0.1 + 19.9 t;
                   VE  dx = sqrt(d sigma^2/dt) dw,  sigma(t) = sigma_min (sigma_max/sigma_min)^t.
Training (eq. 7 with lambda(t) = sigma_t^2): denoising score matching

    L = E_{t ~ U[eps, 1], x_0, z} || sigma_t s_theta(x_t, t) + z ||^2,   x_t = alpha_t x_0 + sigma_t z,

with the network's output divided by sigma_t (the official ``scale_by_sigma``).
Sampling: the reverse SDE dx = [f - g^2 grad log p_t] dt + g dw-bar (eq. 6) by the
predictor-corrector sampler (Alg. 1-3: reverse-diffusion predictor, Langevin corrector
x <- x + e s + sqrt(2 e) z, e = 2 alpha (r ||z|| / ||s||)^2), or the probability-flow ODE
dx = [f - 1/2 g^2 s] dt (eq. 13) with RK45, which also gives exact likelihoods via
log p_0(x) = log p_T(x_T) + int_0^T div f~ dt (app. D.2; exact divergence in 2-D).

Model/data: a time-conditioned MLP (3 x 128, core.denoisers.mlp) on the ring of 8 Gaussians
(``data=moons`` for two moons). Metrics: ``nll`` -- held-out negative log-likelihood (nats) by the
probability-flow ODE with a cheap fixed-step RK4 (the check uses RK45); ``loss`` (held-out DSM).

DP: plain minibatch training -- each worker holds a contiguous shard of the data set; its
points, times and noise are drawn from (data_seed, worker, step); the DSM loss's gradient is
what is communicated. Sampling and likelihoods are inference.

Mechanism check (over seeds): (1) at equal predictor steps (10), PC (one Langevin corrector per
step, r = 0.16) beats predictor-only on MMD to held-out data; (2) the ODE sampler (RK45,
tolerance 1e-3) is at least as good as PC with 100 predictor steps with fewer score
evaluations; (3) the ODE NLL falls during training.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Literal, Optional

import torch
from torch import Tensor

from experiments.reproduce.result import Result

from .core import data as D
from .core import metrics as M
from .core import samplers as S
from .core.base import fit
from .core.denoisers import mlp_apply, mlp_init
from .core.losses import bcast, dsm_loss
from .core.report import arm_table, mean, plot_points, seeds_or, single_thread
from .core.schedules import make_sde


@dataclasses.dataclass(frozen=True)
class ScoreSDE:
    data: Literal["ring8", "moons"] = "ring8"
    sde: Literal["vp", "ve"] = "ve"  # VE (SMLD): the SDE the paper's PC sampler is tuned for
    sigma_max: float = 5.0       # VE only (about the data's largest pairwise distance, as the paper sets it)
    hidden: int = 128
    depth: int = 3
    batch_size: int = 256        # points per worker per round
    n_points: int = 8192         # training set size
    eval_points: int = 256
    eval_steps: int = 12         # RK4 steps of the cheap per-round NLL
    data_seed: int = 0

    name: ClassVar[str] = "score_sde"
    paper: ClassVar[str] = "Score-Based Generative Modeling through Stochastic Differential Equations"
    primary_metric: ClassVar[str] = "nll"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[float] = 5e-3
    default_rounds: ClassVar[int] = 1000
    default_optimizer: ClassVar[str] = "adam"

    def __post_init__(self):
        if self.sigma_max <= 0.01 or self.eval_steps < 1 or self.batch_size < 1:
            raise ValueError("score_sde: need sigma_max > sigma_min = 0.01, eval_steps >= 1, batch_size >= 1")

    @property
    def sde_(self):
        return make_sde(self.sde) if self.sde == "vp" else make_sde("ve", sigma_max=self.sigma_max)

    # -- data ----------------------------------------------------------------------------------
    def points(self, split: str = "train", n: Optional[int] = None) -> Tensor:
        return D.mixture(self.data, n or self.n_points, D.rng(self.data, self.data_seed, split))[0]

    def batch(self, worker: int, num_workers: int, step: int):
        """(x0 [B, 2], t [B] ~ U[eps, 1], z [B, 2]) from the worker's shard, from (data_seed, worker, step)."""
        x = self.points()
        idx = D.minibatch(len(x), self.batch_size, self.data_seed, worker, num_workers, step, "score_sde")
        g = D.rng("score_sde", self.data_seed, worker, step)
        return x[idx], self.sde_.sample_times(self.batch_size, g).float(), torch.randn(self.batch_size, 2, generator=g)

    # -- model ---------------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        return mlp_init(D.rng("score_sde-init", seed), 2, hidden=self.hidden, depth=self.depth)

    def score(self, params, x: Tensor, t: Tensor) -> Tensor:
        """s_theta(x, t) = net(x, t) / sigma_t  ([B, 2], t [B])."""
        t = t.to(x.dtype)
        return mlp_apply(params, x, t) / bcast(self.sde_.alpha_sigma(t)[1], x)

    def loss(self, params, batch) -> Tensor:
        x0, t, z = batch
        dtype = params["out.w"].dtype
        return dsm_loss(lambda x, tt: self.score(params, x, tt), self.sde_, x0.to(dtype), t.to(dtype), z.to(dtype))

    def score_fn(self, params, dtype=torch.float32):
        p = {k: v.detach().to(dtype) for k, v in params.items()}
        return lambda x, t: self.score(p, x.to(dtype), t)

    # -- metrics -------------------------------------------------------------------------------
    def nll(self, params, x: Tensor, method: str = "rk45", steps: Optional[int] = None) -> float:
        """Mean negative log-likelihood (nats) of ``x`` by the probability-flow ODE."""
        nll, _ = S.ode_likelihood(self.score_fn(params, torch.float64), self.sde_, x.double(), method=method, steps=steps)
        return float(nll.mean())

    def evaluate(self, params) -> dict[str, float]:
        x = self.points("test", self.eval_points)
        g = D.rng("score_sde-eval", self.data_seed)
        batch = (x, self.sde_.sample_times(len(x), g).float(), torch.randn(len(x), 2, generator=g))
        with torch.no_grad():
            loss = float(self.loss(params, batch))
        return {"loss": loss, "nll": self.nll(params, x, "rk4", self.eval_steps)}

    # -- mechanism check -----------------------------------------------------------------------
    def samples(self, params, n: int, seed: int, how: str, steps: int, snr: float):
        """(samples [n, 2], score evaluations): ``how`` = pc | predictor | ode."""
        sde = self.sde_
        x = torch.randn(n, 2, generator=D.rng("score_sde-prior", seed)) * sde.prior_std()
        if how == "ode":
            return S.ode_sample(self.score_fn(params), sde, x, rtol=1e-3, atol=1e-3)
        return S.pc_sample(self.score_fn(params), sde, x, steps, D.rng("score_sde-pc", seed), snr=snr,
                           corrector="langevin" if how == "pc" else "none")

    def reproduce(self, quick: bool = True, out=None, seeds: Optional[int] = None) -> Result:
        """PC vs predictor-only at equal predictor steps (MMD); the ODE sampler's quality and
        evaluations against PC's at 100 steps; the ODE NLL along training."""
        k = seeds_or(seeds, 3)
        rounds, n, lr = (600, 1000, self.default_lr) if quick else (3000, 4000, 2e-3)  # longer runs: a smaller step
        snr = 0.16  # r = 0.16: the paper's PC setting
        runs = {"P, 10 steps": ("predictor", 10), "PC, 10 steps": ("pc", 10), "P, 20 steps": ("predictor", 20),
                "PC, 20 steps": ("pc", 20), "PC, 100 steps": ("pc", 100), "ODE (RK45, tol 1e-3)": ("ode", 0)}
        arms: dict[str, dict[str, list[float]]] = {a: {"mmd": [], "nfe": []} for a in runs}
        nll_rows: dict[str, list[float]] = {}
        figs = {}
        with single_thread():
            for s in range(k):
                w = dataclasses.replace(self, data_seed=s)
                params, hist = fit(w, s, rounds, lr=lr, eval_every=rounds // 4)
                for r in hist:
                    nll_rows.setdefault(f"round {r['round']}", []).append(r["nll"])
                ref = w.points("test", n)
                for name, (how, steps) in runs.items():
                    x, nfe = w.samples(params, n, s, how, steps, snr)
                    arms[name]["mmd"].append(M.mmd(x, ref))
                    arms[name]["nfe"].append(nfe)
                    if s == 0 and name in ("P, 20 steps", "PC, 20 steps", "ODE (RK45, tol 1e-3)"):
                        figs[name] = x
                if not quick:
                    nll_rows.setdefault("final (RK45)", []).append(w.nll(params, w.points("test", 500)))
        res = Result(f"score_sde: {self.sde.upper()} SDE on {self.data} ({k} seeds, {rounds} rounds, n=2)")
        res.tables[f"samplers, MMD to {n} held-out points (mean ± sd over seeds)"] = arm_table(arms, ["mmd", "nfe"], "sampler")
        res.tables["held-out NLL (nats), probability-flow ODE, during training"] = arm_table(
            {r: {"nll": v} for r, v in nll_rows.items()}, ["nll"], "checkpoint")
        m = {a: mean(v["mmd"]) for a, v in arms.items()}
        res.check("PC beats predictor-only at equal predictor steps", "MMD(PC) < MMD(P) at 10 predictor steps",
                  f"{m['PC, 10 steps']:.4g} vs {m['P, 10 steps']:.4g} (margin {m['P, 10 steps'] - m['PC, 10 steps']:.3g}; "
                  f"at 20 steps {m['PC, 20 steps']:.4g} vs {m['P, 20 steps']:.4g})", m["PC, 10 steps"] < m["P, 10 steps"])
        ode, pc = "ODE (RK45, tol 1e-3)", "PC, 100 steps"
        ode_nfe, pc_nfe = mean(arms[ode]["nfe"]), mean(arms[pc]["nfe"])
        res.check("the ODE sampler needs fewer evaluations", "NFE(ODE) < NFE(PC, 100 steps) with MMD(ODE) <= MMD(PC)",
                  f"NFE {ode_nfe:.0f} vs {pc_nfe:.0f}; MMD {m[ode]:.4g} vs {m[pc]:.4g}", ode_nfe < pc_nfe and m[ode] <= m[pc])
        marks = [f"round {r['round']}" for r in hist][1:]  # from the first quarter on (round 0 is untrained)
        curve = [mean(nll_rows[r]) for r in marks]
        res.check("the ODE NLL falls during training", "NLL(end) < NLL(first quarter)",
                  " -> ".join(f"{v:.3f}" for v in curve), curve[-1] < curve[0])
        res.notes.append(f"MMD noise floor at n={n}: about 0.001-0.002 (independent data draws)")
        if out is not None and not quick:
            res.figures.append(plot_points({"data": self.points("test", n), **figs}, Path(out) / "score_sde_samples.png"))
        return res
