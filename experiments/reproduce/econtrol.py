"""``distopt reproduce econtrol`` -- EControl (Gao, Islamov, Stich, ICLR 2024) and the error-feedback
baselines it is compared with (specs/ef-family.md §7):

* R2: naive compressed GD (DCGD + Top-1) diverges on the 3-worker example, exactly as
  ||x^T|| = sqrt(3) (1 + lr (6 - mu)/3)^T; EF14 and EF21 converge.
* R6: EF14's floor (its mean ||x_t - x*||^2 over the last quarter of the rounds) on
  heterogeneous quadratics grows like zeta^2 and shrinks like lr^2; EF21 and EControl converge
  to x*; naive Top-5 GD stalls far away.
* R7: EControl with eta in {0, 0.01, 0.1} converges, eta in {0.5, 1} diverges.
* R8: with gradient noise sigma, EControl's floor falls roughly as 1/n and is the lowest for
  n >= 4; EF21-SGD's stays above it; EF14's is dominated by the zeta floor.

The quadratics are f_i(x) = 1/2 ||x - c_i||^2 with c_i = zeta N(0, I), n = 10, d = 50 (the spec's
generator is not published: its curvature differs from ours, so the spec's lr = 0.2 becomes
lr = 0.1 here for R6/R7 -- the regime where eta = 0.1 is stable; the orderings, not the exact
numbers, are what is checked).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from experiments.reproduce.common import run_sim
from experiments.reproduce.result import Result
from experiments.report import mean_sd
from experiments.workloads import make
from simulator.history import plot_runs
from simulator.oracles import QuadraticOracle


def r2_oracle(mu: float = 0.5) -> QuadraticOracle:
    """f_i(x) = <a_i, x>^2 + (mu/2)||x||^2, a_1 = (-3,2,2), a_2 = (2,-3,2), a_3 = (2,2,-3): Hessian
    H_i = 2 a_i a_i^T + mu I, minimiser 0; x^0 = (1, 1, 1)."""
    a = torch.tensor([[-3.0, 2, 2], [2, -3, 2], [2, 2, -3]], dtype=torch.float64)
    H = 2 * a.unsqueeze(2) * a.unsqueeze(1) + mu * torch.eye(3, dtype=torch.float64)
    return QuadraticOracle(torch.zeros(3, 3, dtype=torch.float64), H=H, x0=torch.ones(3, dtype=torch.float64))


def _final(sim, key="dist_sq") -> float:
    v = sim.history.last.get(key, math.nan)
    return v if sim.status == "finished" else math.inf


def _floor(sim, key="dist_sq") -> float:
    """EF14's floor: the mean of ``key`` over the last quarter of the rounds. Its iterates do not
    settle: at lr 0.1 (zeta = 10) ||x_t - x*||^2 swings between 11 and 37 over the last quarter,
    so one final value can put a 4x smaller stepsize's floor 26x lower where the means show
    the lr^2 law to within 4% per halving (4.15, 4.08, 3.88, 4.05 for lr 0.1 ... 0.00625)."""
    if sim.status != "finished":
        return math.inf
    last = sim.history.last["round"]
    vals = [r[key] for r in sim.history.rows if r["round"] >= 0.75 * last]
    return sum(vals) / len(vals)


def run(quick: bool, out, seeds=None) -> Result:
    out = Path(out)
    res = Result("EControl and the error-feedback baselines: R2, R6, R7, R8")
    # ---- R2 -------------------------------------------------------------------------------
    lr, T, mu = 0.05, 200, 0.5
    o = r2_oracle(mu)
    naive = run_sim(o, keep_iterates=True, method="dcgd", compressor="topk:k=1", lr=lr, rounds=T, eval_every=T)
    predicted = math.sqrt(3) * (1 + lr * (6 - mu) / 3) ** T
    got = float(naive.iterates[-1].norm())
    ef14 = run_sim(o, method="ef14", compressor="topk:k=1", lr=lr, rounds=T, eval_every=T)
    ef21 = run_sim(o, method="ef21", compressor="topk:k=1", lr=lr, rounds=T, eval_every=T)
    res.tables["R2: ||x^T|| after 200 rounds, Top-1, lr 0.05"] = [
        {"method": "naive (dcgd)", "||x_T||": got, "predicted": predicted},
        {"method": "ef14", "||x_T||": math.sqrt(ef14.history.last["dist_sq"])},
        {"method": "ef21", "||x_T||": math.sqrt(ef21.history.last["dist_sq"])},
    ]
    res.check("R2: naive compressed GD diverges as sqrt(3)(1 + lr(6-mu)/3)^T", "relative error to the formula < 1e-9",
              f"{got:.4g} vs {predicted:.4g}", abs(got / predicted - 1) < 1e-9)
    res.check("R2: EF14 and EF21 converge on the same problem", "||x_T|| < 1e-5 for both",
              f"ef14 {math.sqrt(ef14.history.last['dist_sq']):.2e}, ef21 {math.sqrt(ef21.history.last['dist_sq']):.2e}",
              max(ef14.history.last["dist_sq"], ef21.history.last["dist_sq"]) < 1e-10)
    # ---- R6 -------------------------------------------------------------------------------
    T = 1000 if quick else 3000
    lr = 0.1
    floors = {}
    for zeta in (0.0, 1.0, 10.0):
        oq = make(f"quadratic:dim=50,zeta={zeta}").oracle(10)
        floors[zeta] = _floor(run_sim(oq, method="ef14", compressor="topk:k=5", lr=lr, rounds=T, eval_every=T // 200))
    o10 = make("quadratic:dim=50,zeta=10").oracle(10)
    # rounds ~ 1/lr: every run covers the same lr * T, so each has settled on its floor alike
    by_lr = {g: _floor(run_sim(o10, method="ef14", compressor="topk:k=5", lr=g, rounds=round(T * lr / g),
                               eval_every=round(T * lr / g) // 200)) for g in (lr, lr / 4, lr / 16)}
    others = {m: _final(run_sim(o10, method=m, compressor="topk:k=5", lr=lr, rounds=T, eval_every=T))
              for m in ("ef21", "econtrol:eta=0.1", "dcgd")}
    res.tables["R6: EF14's floor, mean ||x_t - x*||^2 over the last quarter (n=10, d=50, Top-5; other methods: final)"] = (
        [{"setting": f"zeta={z:g}, lr={lr}", "ef14": v} for z, v in floors.items()]
        + [{"setting": f"zeta=10, lr={g:g}", "ef14": v} for g, v in by_lr.items()]
        + [{"setting": f"zeta=10, lr={lr}: {m}", "ef14": v} for m, v in others.items()])
    res.check("R6: EF14's floor grows like zeta^2", "floor(zeta=0) < 1e-20 and floor(10)/floor(1) in [50, 200]",
              f"{floors[0.0]:.2e}, {floors[1.0]:.3g}, {floors[10.0]:.3g} (ratio {floors[10.0] / floors[1.0]:.3g})",
              floors[0.0] < 1e-20 and 50 <= floors[10.0] / floors[1.0] <= 200)
    g1, g4, g16 = by_lr.values()
    res.check("R6: EF14's floor shrinks like lr^2", "each 4x smaller lr divides the floor by 10-25x (lr^2: 16x)",
              f"{g1:.3g} / {g4:.3g} / {g16:.3g} (ratios {g1 / g4:.3g}, {g4 / g16:.3g})",
              10 <= g1 / g4 <= 25 and 10 <= g4 / g16 <= 25)
    res.check("R6: EF21 and EControl (eta=0.1) converge to x*; naive Top-5 GD stalls",
              "ef21, econtrol < 1e-6; dcgd > 1", ", ".join(f"{m} {v:.2e}" for m, v in others.items()),
              others["ef21"] < 1e-6 and others["econtrol:eta=0.1"] < 1e-6 and others["dcgd"] > 1)
    # ---- R7 -------------------------------------------------------------------------------
    o1 = make("quadratic:dim=50,zeta=1").oracle(10)
    etas = {eta: _final(run_sim(o1, method=f"econtrol:eta={eta}", compressor="topk:k=5", lr=lr, rounds=T, eval_every=T))
            for eta in (0.0, 0.01, 0.1, 0.5, 1.0)}
    res.tables["R7: EControl's eta (zeta=1, Top-5, lr 0.1)"] = [{"eta": e, "||x_T - x*||^2": v} for e, v in etas.items()]
    res.check("R7: small eta converges, large eta diverges", "eta in {0, 0.01, 0.1}: < 1e-6; eta in {0.5, 1}: diverged",
              ", ".join(f"{e}: {v:.2e}" for e, v in etas.items()),
              all(etas[e] < 1e-6 for e in (0.0, 0.01, 0.1)) and all(etas[e] == math.inf or etas[e] > 1e3 for e in (0.5, 1.0)))
    # ---- R8 -------------------------------------------------------------------------------
    n_seeds = seeds or (2 if quick else 3)
    T8 = 1000 if quick else 3000
    ns = (1, 4, 16)
    methods = {"econtrol:eta=0.1": "EControl", "ef21": "EF21-SGD", "ef14": "EF14"}
    table, floor8 = [], {}
    for m, label in methods.items():
        row = {"method": label}
        for n in ns:
            vals = []
            for s in range(n_seeds):
                oq = make("quadratic:dim=50,zeta=10,sigma=1").oracle(n, seed=s)
                vals.append(_final(run_sim(oq, method=m, compressor="topk:k=5", lr=0.05, rounds=T8, eval_every=T8, seed=s)))
            mu_, sd = mean_sd(vals)
            floor8[(label, n)] = mu_
            row[f"n={n}"] = f"{mu_:.3g} ± {sd:.2g}"
        table.append(row)
    res.tables[f"R8: stochastic floor ||x_T - x*||^2 (zeta=10, sigma=1, lr 0.05, {n_seeds} seeds)"] = table
    ec = [floor8[("EControl", n)] for n in ns]
    res.check("R8: EControl's floor falls roughly as 1/n", "floor(n=1)/floor(n=16) >= 8", f"{ec[0]:.3g} -> {ec[2]:.3g} "
              f"({ec[0] / ec[2]:.3g}x)", ec[0] / ec[2] >= 8)
    res.check("R8: EControl's floor is below EF21-SGD's at every n", "EControl < EF21-SGD for n = 1, 4, 16",
              ", ".join(f"n={n}: {floor8[('EControl', n)]:.3g} vs {floor8[('EF21-SGD', n)]:.3g}" for n in ns),
              all(floor8[("EControl", n)] < floor8[("EF21-SGD", n)] for n in ns))
    res.check("R8: EF14 is dominated by the zeta floor (lowest only without heterogeneity, n=1)",
              "EControl < EF14 for n = 4, 16", ", ".join(f"n={n}: EF14 {floor8[('EF14', n)]:.3g}" for n in ns),
              all(floor8[("EControl", n)] < floor8[("EF14", n)] for n in (4, 16)))
    if not quick:
        curves = {m: run_sim(o10, method=m, compressor="topk:k=5", lr=lr, rounds=T, eval_every=10).history.rows
                  for m in ("ef14", "ef21", "econtrol:eta=0.1", "dcgd")}
        res.figures.append(str(plot_runs(curves, out / "r6_methods.png", metrics=("dist_sq",),
                                         title="zeta=10, n=10, Top-5: ||x - x*||^2")))
    res.notes.append("R6/R7 use lr = 0.1 (the spec's 0.2 on its unpublished generator): with our identity-Hessian "
                     "quadratics EControl(eta=0.1) is stable at 0.1 and not at 0.2; EF14's and naive GD's behaviour "
                     "is the same at either")
    res.notes.append("R6's floor is EF14's mean ||x_t - x*||^2 over the last quarter of its rounds (rounds ~ 1/lr): "
                     "its iterates keep swinging (at lr 0.1 by 3x), so a single final value is a noisy floor")
    return res
