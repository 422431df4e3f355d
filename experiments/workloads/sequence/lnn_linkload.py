"""``lnn_linkload`` -- Ayoub, Andreoletti et al.: "Liquid Neural Network-based Adaptive
Learning vs. Incremental Learning for Link Load Prediction amid Concept Drift due to Network
Failures" (2024; no public code found).

Liquid time-constant cell (Hasani et al. 2021), per unit:
    dx/dt = -[1/tau + f(x, I)] * x + f(x, I) * A,   f = sigmoid(W_r x + W_i I + b) >= 0,
integrated by the fused semi-implicit Euler step (``ode_unfolds`` steps of size 1/unfolds per
input sample)
    x <- (x + dt f * A) / (1 + dt (1/tau + f)),
so the effective time constant tau / (1 + tau f) shrinks when the input drives f up. Read-out
y = W_o x + b_o. Two learning regimes after deployment (the paper's comparison):
* adaptive learning (LTC): no retraining; the cell keeps adapting as data arrive -- after each
  new observation one Adam step (``online_lr``, moments kept across steps) on the newest
  ``online_batch`` windows, one period of the demands (``online_lr = 0``: frozen weights, only
  the liquid dynamics adapt);
* incremental learning (baseline, an LSTM): frozen between refits; every ``refit_every`` steps
  it is refitted (``refit_steps`` Adam steps) on the newest ``refit_window`` observations, so it
  lags a sudden change until enough new data have arrived.

Data (signals.mesh_link_loads): an 8-node mesh (ring + diameters) carrying sinusoidal OD
demands with noise, shortest-path routed into 12 link loads; at t* one link fails and traffic
reroutes. The rerouted share sets the drift severity on the monitored link: "drastic" is the
(failed, monitored) pair with the largest relative load increase, "mild" the pair closest to
+15%. Task: from a window of 24 loads of one link (divided by that link's pre-deployment
maximum), predict the next load; MSE. Both models are trained offline on the pre-deployment
history of every link. Metrics on the monitored link after t*: RMSE, MAPE and
time-to-convergence (steps until the 6-step moving absolute percentage error stays below 10%
for 12 steps). The paper's code is not public and its abstract does not fix the protocol: the
adaptive regime follows a secondary summary of the paper ("parameters tuned continuously as
new data arrive"); the paper's incremental baseline may be an MLP, the spec's is an LSTM.

DP: offline training is data-parallel with the history sharded by series: worker k holds a
contiguous block of links (all of their pre-deployment history) and draws (link, time)
windows from (data_seed, step, worker); every parameter is communicated. The online phase is
one stream (one link), evaluated in one process (its updates are plain local steps).

Mechanism check: 3 seeds; quick: 150 training rounds, 120 online steps (failure after 24,
refits every 72), 3 ODE unfolds. Departures and changes (the protocol is not public):
* The LTC's online step was one SGD step (lr 0.1, gradient clipped at norm 1) on the newest 4
  windows; its error after a drastic failure stalled at 10-14% MAPE, so it never met the 10%
  convergence level. Not the saturating sigmoids: 300 Adam steps on all post-failure windows of
  the monitored link fit them to 2-3% MAPE (the LSTM to 2%). The step chased the newest sixth of
  the daily cycle: the error alternated between half-periods (12-step MAPE 0.14, 0.11, 0.15,
  0.12 on seed 1). Now one Adam step (the offline optimizer) on the newest 24 windows, one
  period. Tried, quick setting, 300 rounds: SGD on 4, 12 or 24 windows and Adam (lr 0.01 or
  0.003) on 4 never converged; Adam lr 0.01 on 24 converged in 14-34 steps. The LSTM's refit got
  a grid of the same size, refit_lr in {0.002, 0.005, 0.01, 0.02} x refit_steps in {20, 40}
  (quick setting, 150 rounds); its best post-failure RMSE under drastic drift, (0.01, 40), is the default
  (was 0.005 with 30 steps, 20 in the quick check). Its time to convergence is bounded below by
  its first refit (44 steps after the failure in the quick setting) under every setting.
* The quick check trained 60 rounds: both models stayed undertrained (frozen, their one-step
  MAPE on the drastic link before the failure was ~40%, against 4% for a least-squares AR(24)),
  and neither ever converged, so the time-to-convergence check compared two censored values.
The choices above were made on seeds 0-2; on seeds 3-5 (quick) the checks hold as well: time to
convergence 27.3 vs 42.0 steps, post-failure RMSE 1.80 vs 1.97 (the LSTM wins seed 5), ratios
0.76 (mild) vs 1.09 (drastic).
Full check (400 rounds, 3 seeds), drastic drift: post-failure RMSE LTC 1.67 vs LSTM 2.17,
time to convergence 27.7 vs 46.3 steps; RMSE_LSTM / RMSE_LTC 1.20 under mild drift vs 1.30 under
drastic (holds narrowly; the LTC's RMSE is lower under mild drift too). The continuous updates
cost accuracy before the failure: pre-failure RMSE 0.23 vs 0.19 (drastic link), 0.74 vs 0.50 (mild).

Compressed offline training (experiments/results/sequence.md: n = 4, top-1% = 11 of d = 1185
coordinates per worker, 300 rounds): at seed 0, EF21 ends worse than DCGD under both server
optimizers. Under SGD that is one seed's early overshoot, not error feedback failing. The lr
the table's search picks for gd, 0.09, sits at gd's edge of stability there: gd's loss goes
3.0 -> 13.2 -> 33.7 and then recovers, because each round brings a fresh gradient. EF21 at that
lr keeps the overshoot's stale entries in its estimate and diverges within 15 rounds, also with
4x the batch (128), so it is not gradient noise. At 0.5x and 0.3x it is stable but slow (RMSE
0.135 and 0.143; DCGD 0.116, gd 0.098). At seeds 1 and 2 (data and init), where gd starts lower
and does not overshoot, EF21 at lr 0.09 beats DCGD: 0.121 vs 0.130 and 0.116 vs 0.118 (gd 0.108,
0.110); at the table's 0.3x it does not (0.167, 0.160). EF14 at lr 0.09 ends within 1% of gd or below it at every seed (0.090, 0.1085, 0.111) and
6-22% below DCGD.
EF21-SGDM (momentum 0.1) is not steadier: 0.082 at seed 0 but 0.158 at seed 1, where it
overshoots to a loss of 9.8. Under Adam, see distopt/optim.py: Adam gives EF21's stale entries
full steps.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .recurrent import rnn, rnn_init
from .signals import draw, mape, mean_sd, mesh, mesh_link_loads, rmse, time_to_convergence, train

MODELS = ("ltc", "lstm")


@functools.lru_cache(maxsize=32)
def loads(steps: int, seed: int, failed: int | None, t_fail: int | None) -> Tensor:
    return mesh_link_loads(steps, seed, failed, t_fail)


@dataclasses.dataclass(frozen=True)
class LNNLinkLoad:
    model: str = "ltc"         # ltc (liquid time-constant) | lstm (incremental-learning baseline)
    units: int = 32
    window: int = 24
    ode_unfolds: int = 6
    train_steps: int = 480     # pre-deployment history (20 days of 24 samples)
    online_steps: int = 240    # online phase after deployment (10 days)
    fail_after: int = 48       # t* = train_steps + fail_after
    refit_every: int = 96      # LSTM: refit period R (steps): every 4 days
    refit_window: int = 96     # LSTM: newest steps a refit trains on
    refit_steps: int = 40      # LSTM: Adam steps per refit
    refit_lr: float = 0.01     # (refit_steps, refit_lr): the best of a grid, see Departures
    online_lr: float = 0.01    # LTC: Adam step size of the online adaptation
    online_batch: int = 24     # LTC: newest windows per online step (one period of the demands)
    batch_size: int = 32
    data_seed: int = 0

    name: ClassVar[str] = "lnn_linkload"
    paper: ClassVar[str] = ("Liquid Neural Network-based Adaptive Learning vs. Incremental Learning for Link Load "
                            "Prediction amid Concept Drift due to Network Failures")
    primary_metric: ClassVar[str] = "rmse"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[float] = 0.03
    default_rounds: ClassVar[int] = 300
    default_optimizer: ClassVar[str] = "adam"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"lnn_linkload: model must be one of {MODELS}, got {self.model!r}")
        if self.train_steps < 4 * self.window or self.units < 1 or self.ode_unfolds < 1:
            raise ValueError("lnn_linkload: need train_steps >= 4 * window, units >= 1, ode_unfolds >= 1")
        if not self.window <= self.fail_after < self.online_steps or self.refit_window < self.window + 1:
            raise ValueError("lnn_linkload: need window <= fail_after < online_steps and refit_window > window")
        if not 1 <= self.online_batch <= self.train_steps - self.window:
            raise ValueError(f"lnn_linkload: online_batch must be in [1, train_steps - window = "
                             f"{self.train_steps - self.window}], got {self.online_batch}")

    # -- data -----------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self.train_steps + self.online_steps

    @property
    def t_fail(self) -> int:
        return self.train_steps + self.fail_after

    def stream(self, failed: int | None = None) -> Tensor:
        """Link loads [steps, links], link ``failed`` down from t* on (None: no failure)."""
        return loads(self.steps, self.data_seed, failed, self.t_fail if failed is not None else None)

    def scale(self) -> Tensor:
        """Per-link maximum load of the pre-deployment history [links] (min-max scaling with the
        minimum at 0, fitted once: after a failure loads can exceed 1 -- that is the drift)."""
        return self.stream()[:self.train_steps].max(0).values

    def windows(self, x: Tensor, link: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [steps, links] loads -> (inputs [B, window, 1], target [B], scale [B]) for predicting
        x[t, link] from the ``window`` loads before it, both divided by the link's scale."""
        idx = t[:, None] + torch.arange(-self.window, 0)
        m = self.scale()[link]
        return (x[idx, link[:, None]] / m[:, None])[..., None], x[t, link] / m, m

    def scenarios(self) -> dict[str, tuple[int, int, float]]:
        """{'drastic' | 'mild': (failed link, monitored link, relative load increase)}."""
        edges, _ = mesh(self.data_seed)
        pre = self.stream()[:self.train_steps].mean(0)
        pairs = []
        for f in range(len(edges)):
            post = self.stream(f)[self.t_fail:].mean(0)
            rel = (post - pre) / pre
            rel[f] = -math.inf
            pairs += [(f, m, float(rel[m])) for m in range(len(edges)) if m != f]
        return {"drastic": max(pairs, key=lambda p: p[2]),
                "mild": min((p for p in pairs if p[2] >= 0.05), key=lambda p: abs(p[2] - 0.15))}

    # -- parameters ---------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        U = self.units
        if self.model == "lstm":
            p = rnn_init("lstm", 1, U, g)
        else:
            tau = torch.logspace(0, math.log10(20), U)                     # time constants 1..20 samples
            p = {"ltc.w_in": 2 * torch.randn(U, generator=g), "ltc.w_rec": torch.randn(U, U, generator=g) / math.sqrt(U),
                 "ltc.b": torch.full((U,), -1.0), "ltc.tau_raw": torch.log(torch.expm1(tau - 0.1)),  # tau = softplus + 0.1
                 "ltc.A": torch.randn(U, generator=g)}
        return p | {"out.w": torch.randn(U, generator=g) / math.sqrt(U), "out.b": torch.zeros(1)}

    # -- model ----------------------------------------------------------------------------------
    def ltc(self, p: dict[str, Tensor], u: Tensor) -> Tensor:
        """Fused LTC over u [B, T, 1] -> final state [B, U]."""
        inv_tau = 1.0 / (F.softplus(p["ltc.tau_raw"]) + 0.1)
        dt = 1.0 / self.ode_unfolds
        x = torch.zeros(u.shape[0], self.units, dtype=u.dtype)
        for t in range(u.shape[1]):
            drive = u[:, t] * p["ltc.w_in"] + p["ltc.b"]                      # input part of f, [B, U]
            for _ in range(self.ode_unfolds):
                f = torch.sigmoid(x @ p["ltc.w_rec"].T + drive)
                x = (x + dt * f * p["ltc.A"]) / (1 + dt * (inv_tau + f))
        return x

    def predict(self, p: dict[str, Tensor], u: Tensor) -> Tensor:
        """u [B, window, 1] scaled loads -> next scaled load [B]."""
        u = u.to(p["out.w"].dtype)
        h = self.ltc(p, u) if self.model == "ltc" else rnn("lstm", p, u)[:, -1]
        return h @ p["out.w"] + p["out.b"]

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        u, y = batch
        return F.mse_loss(self.predict(params, u), y.to(params["out.w"].dtype))

    def batch(self, worker: int, num_workers: int, step: int) -> tuple[Tensor, Tensor]:
        x = self.stream()
        if num_workers > x.shape[1]:
            raise ValueError(f"lnn_linkload: the history is sharded by link and there are {x.shape[1]} links; "
                             f"use at most {x.shape[1]} workers, not {num_workers}")
        links = torch.tensor_split(torch.arange(x.shape[1]), num_workers)[worker]  # sharded by series
        span = self.train_steps - self.window                                      # targets t in [window, train_steps)
        k = draw(len(links) * span, self.batch_size, self.data_seed, step, worker)
        return self.windows(x, links[k // span], self.window + k % span)[:2]

    @torch.no_grad()
    def evaluate(self, params: dict[str, Tensor]) -> dict[str, float]:
        """One-step-ahead error on every link over the online phase before the failure."""
        x = self.stream()
        t = torch.arange(self.train_steps, self.t_fail)
        links = torch.arange(x.shape[1]).repeat_interleave(len(t))
        u, y, _ = self.windows(x, links, t.repeat(x.shape[1]))
        pred = self.predict(params, u)
        m = float(F.mse_loss(pred, y.to(pred.dtype)))
        return {"loss": m, "rmse": math.sqrt(m)}

    # -- online phase and mechanism check -------------------------------------------------------
    def online(self, params: dict[str, Tensor], failed: int, link: int) -> Tensor:
        """One-step-ahead load predictions for the monitored link over the online phase.
        LTC (adaptive learning): after each new observation, one Adam step (its moments kept
        across steps) on the newest ``online_batch`` windows -- continuous adaptation, no
        retraining. LSTM (incremental learning): weights frozen between refits every
        ``refit_every`` steps."""
        x = self.stream(failed)
        p = {k: v.detach().clone().requires_grad_(self.model == "ltc") for k, v in params.items()}
        opt = torch.optim.Adam(p.values(), lr=self.online_lr) if self.model == "ltc" else None  # moments persist
        preds = []
        for t in range(self.train_steps, self.steps):
            if self.model == "lstm" and t > self.train_steps and (t - self.train_steps) % self.refit_every == 0:
                p = self.refit(p, x, link, t)
            with torch.no_grad():
                u, _, m = self.windows(x, torch.tensor([link]), torch.tensor([t]))
                preds.append(self.predict(p, u) * m)
            if self.model == "ltc":  # y_t is observed now: adapt before predicting t + 1
                tt = torch.arange(t - self.online_batch + 1, t + 1)   # the newest period of windows
                opt.zero_grad()
                self.loss(p, self.windows(x, torch.full_like(tt, link), tt)[:2]).backward()
                opt.step()
        return torch.cat(preds)

    def refit(self, p: dict[str, Tensor], x: Tensor, link: int, now: int) -> dict[str, Tensor]:
        """Incremental learning: ``refit_steps`` Adam steps on the windows whose targets are the
        newest ``refit_window`` observations (before ``now``)."""
        t = torch.arange(now - self.refit_window, now)
        t = t[t >= self.window]
        u, y, _ = self.windows(x, torch.full_like(t, link), t)
        p = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
        opt = torch.optim.Adam(p.values(), lr=self.refit_lr)
        for _ in range(self.refit_steps):
            opt.zero_grad()
            self.loss(p, (u, y)).backward()
            opt.step()
        return {k: v.detach() for k, v in p.items()}

    def scores(self, params: dict[str, Tensor], failed: int, link: int) -> dict[str, float]:
        pred = self.online(params, failed, link)
        y = self.stream(failed)[self.train_steps:, link]
        k = self.fail_after
        rel = F.avg_pool1d(((pred - y).abs() / y.abs().clamp_min(1e-3))[None, None], 6, 1).flatten()  # 6-step moving APE
        return {"pre rmse": float(rmse(pred[:k], y[:k])), "post rmse": float(rmse(pred[k:], y[k:])),
                "post mape": float(mape(pred[k:], y[k:])), "ttc": time_to_convergence(rel, k, 0.1, hold=12)}

    def reproduce(self, quick: bool = False, out=None, seeds: int | None = None):
        from experiments.reproduce.result import Result

        seeds = seeds or 3
        me = dataclasses.replace(self, online_steps=120, fail_after=24, refit_every=72, refit_window=72,
                                 ode_unfolds=3) if quick else self
        rounds = 150 if quick else 400
        res = Result(f"lnn_linkload: LTC (no retraining) vs incremental LSTM under link failure "
                     f"({'quick' if quick else 'full'}, {seeds} seeds)")
        t0 = time.perf_counter()
        rows = []
        for s in range(seeds):
            scen = dataclasses.replace(me, data_seed=s).scenarios()
            for m in MODELS:
                w = dataclasses.replace(me, model=m, data_seed=s)
                params = train(w, seed=s, rounds=rounds)
                for name, (failed, link, rel) in scen.items():
                    rows.append({"drift": name, "model": m, "seed": s, "failed": failed, "link": link,
                                 "load increase": round(rel, 3), **w.scores(params, failed, link)})
        res.tables["monitored link after the failure (per seed)"] = rows
        summary, mean = [], {}
        for name in ("drastic", "mild"):
            for m in MODELS:
                sel = [r for r in rows if r["drift"] == name and r["model"] == m]
                mean[(name, m)] = {k: sum(r[k] for r in sel) / len(sel) for k in ("post rmse", "ttc")}
                summary.append({"drift": name, "model": m, **{k: mean_sd([r[k] for r in sel]) for k in
                                                              ("load increase", "pre rmse", "post rmse", "post mape", "ttc")}})
        res.tables["mean ± sd over seeds"] = summary
        d_ltc, d_lstm = mean[("drastic", "ltc")], mean[("drastic", "lstm")]
        per = {m: [r for r in rows if r["drift"] == "drastic" and r["model"] == m] for m in ("ltc", "lstm")}
        res.paired("drastic drift, LTC minus LSTM", {k: ([r[k] for r in per["ltc"]], [r[k] for r in per["lstm"]])
                                                     for k in ("post rmse", "ttc")})
        res.check("drastic drift: the LTC's post-failure RMSE is lower", "mean post RMSE LTC < LSTM (incremental)",
                  f"{d_ltc['post rmse']:.3f} vs {d_lstm['post rmse']:.3f}", d_ltc["post rmse"] < d_lstm["post rmse"])
        res.check("drastic drift: the LTC converges sooner", "mean time-to-convergence LTC < LSTM",
                  f"{d_ltc['ttc']:.1f} vs {d_lstm['ttc']:.1f} steps", d_ltc["ttc"] < d_lstm["ttc"])
        adv = {k: mean[(k, "lstm")]["post rmse"] / mean[(k, "ltc")]["post rmse"] for k in ("drastic", "mild")}
        res.check("the LTC's advantage shrinks under mild drift (where incremental learning can win)",
                  "RMSE_LSTM / RMSE_LTC smaller for mild than for drastic drift",
                  f"{adv['mild']:.3f} vs {adv['drastic']:.3f}", adv["mild"] < adv["drastic"])
        if not quick and out is not None:
            from .common import bars

            vals = {f"{m}/{d}": {k: [r[k] for r in rows if r["model"] == m and r["drift"] == d] for k in ("post rmse", "ttc")}
                    for d in ("drastic", "mild") for m in MODELS}
            res.figures.append(bars(vals, ["post rmse", "ttc"], Path(out) / "lnn_linkload.png", "LTC vs incremental LSTM"))
        res.notes.append(f"wall time {time.perf_counter() - t0:.1f} s")
        return res
