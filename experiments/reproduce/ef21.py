"""``distopt reproduce ef21`` -- EF21 (Richtarik, Sokolov, Fatkhullin 2021) and its "bells and
whistles" (specs/ef-family.md §7):

* R5: the nonconvex theorem's bound holds at the L_AM stepsize with g_i^0 = grad f_i(x^0):
  (1/T) sum_{t<T} ||grad f(x^t)||^2 <= 2 (f(x^0) - f^inf)/(lr T)  (G^0 = 0; f^inf >= 0).
* R9: partial participation (p = 0.5, EF21-PP) converges and about halves the uplink bits to
  the target; bidirectional compression (EF21-BC, Top-1 down) converges.
* R10: EControl(eta=0) equals EF21 exactly; EControl(eta=1) with its shift frozen at 0 equals
  EF14 in model units (a unit test of the state updates).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from experiments.reproduce.common import fmt, rounds_and_bits, run_sim
from experiments.reproduce.result import Result
from experiments.workloads import make
from simulator.history import plot_runs


def run(quick: bool, out, seeds=None) -> Result:
    out = Path(out)
    res = Result("EF21: R5 (theorem bound), R9 (partial participation, bidirectional), R10 (EControl special cases)")
    o = make("logreg:rows=1000,features=30,scale=5,scaled_frac=0.1,reg=0.1").oracle(20)
    # ---- R5 -------------------------------------------------------------------------------
    T = 500 if quick else 3000
    sim = run_sim(o, method="ef21", compressor="topk:k=1", lr="theory", rounds=T, eval_every=1)
    avg = sum(r["grad_norm_sq"] for r in sim.history.rows[:T]) / T
    bound = 2 * sim.history.rows[0]["loss"] / (sim.lr * T)
    res.check("R5: EF21's nonconvex bound holds at lr = 1/(L + L_AM xi)", "mean_{t<T} ||grad f(x^t)||^2 <= 2 f(x^0)/(lr T)",
              f"{avg:.4g} <= {bound:.4g} (T = {T}, lr = {sim.lr:.4g})", avg <= bound)
    # ---- R9 -------------------------------------------------------------------------------
    target = 1e-6 if quick else 1e-8
    limit = 20_000 if quick else 60_000
    full_run = run_sim(o, method="ef21", compressor="topk:k=1", lr="theory", rounds=limit, eval_every=1, target=target)
    runs = {
        "EF21": full_run,
        "EF21-PP p=0.5 (same lr)": run_sim(o, method="ef21", compressor="topk:k=1", lr=full_run.lr, rounds=limit,
                                           eval_every=1, target=target, participation=0.5),
        "EF21-BC (Top-1 down)": run_sim(o, method="ef21", compressor="topk:k=1", lr="theory", rounds=limit, eval_every=1,
                                        target=target, down_compressor="topk:k=1"),
    }
    pp_rule = run_sim(o, method="ef21", compressor="topk:k=1", lr="theory", rounds=limit, eval_every=1, target=target,
                      participation=0.5)
    runs["EF21-PP p=0.5 (PP rule lr)"] = pp_rule
    rows = []
    for label, s in runs.items():
        r, b = rounds_and_bits(s.history, target)
        hit = s.history.rows[int(r)] if r < math.inf else s.history.last
        rows.append({"run": label, "lr": s.lr, "rounds": r, "uplink bits/n": b, "downlink bits/n": hit["bits_down"],
                     "reached": r < math.inf})
    res.tables[f"R9: rounds and bits per worker to ||grad f||^2 <= {target:g} (n = 20, Top-1)"] = rows
    full, pp, bc = rows[0], rows[1], rows[2]
    res.check("R9: EF21, EF21-PP and EF21-BC all converge", "all reach the target",
              ", ".join(f"{r['run']}: {fmt(r['rounds'])}" for r in rows[:3]), all(r["reached"] for r in rows[:3]))
    ratio = pp["uplink bits/n"] / full["uplink bits/n"]
    res.check("R9: partial participation (p = 0.5) roughly halves the uplink bits to the target",
              "PP/full uplink bits in [0.35, 0.7]", f"{ratio:.3g}", 0.35 <= ratio <= 0.7)
    res.check("R9: bidirectional compression sends far fewer downlink bits", "BC downlink bits/round < 1/5 of full",
              f"{bc['downlink bits/n'] / max(bc['rounds'], 1):.4g} vs {full['downlink bits/n'] / max(full['rounds'], 1):.4g} per round",
              bc["downlink bits/n"] / max(bc["rounds"], 1) < 0.2 * full["downlink bits/n"] / max(full["rounds"], 1))
    # ---- R10 ------------------------------------------------------------------------------
    oq = make("quadratic:dim=50,zeta=10").oracle(10)
    steps = 500
    a = run_sim(oq, keep_iterates=True, method="econtrol:eta=0", compressor="topk:k=5", lr=0.1, rounds=steps, eval_every=steps)
    b = run_sim(oq, keep_iterates=True, method="ef21", compressor="topk:k=5", lr=0.1, rounds=steps, eval_every=steps)
    c = run_sim(oq, keep_iterates=True, method="econtrol:eta=1,init_shift=zero,learn_shift=false", compressor="topk:k=5",
                lr=0.1, rounds=steps, eval_every=steps)
    d = run_sim(oq, keep_iterates=True, method="ef14", compressor="topk:k=5", lr=0.1, rounds=steps, eval_every=steps)
    gap0 = float((torch.stack(a.iterates) - torch.stack(b.iterates)).abs().max())
    gap1 = float((torch.stack(c.iterates) - torch.stack(d.iterates)).abs().max())
    res.check("R10: EControl(eta=0) == EF21", "max |dx| = 0", f"{gap0:.2e} over {steps} rounds", gap0 == 0.0)
    res.check("R10: EControl(eta=1, shift frozen at 0) == EF14 (model units)", "max |dx| < 1e-12",
              f"{gap1:.2e} over {steps} rounds", gap1 < 1e-12)
    if not quick:
        res.figures.append(str(plot_runs({k: v.history.rows for k, v in runs.items()}, out / "r9.png",
                                         metrics=("grad_norm_sq",), title="EF21 bells and whistles, n=20, Top-1")))
    res.notes.append("R9's PP runs use the same theory stepsize as full EF21 (as the spec's smoke test); the row "
                     "'PP rule lr' uses FL_PyTorch's EF21-PP stepsize, which is several times smaller")
    return res
