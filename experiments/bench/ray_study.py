"""``distopt bench ray-study``: a straggler study on real processes. 8 actors on a local Ray,
injected Gilbert-Elliott delays (real sleeps), gradient descent on logreg with no code, GC and
M-SGC side by side; for each, the measured wall-clock and the simulator's prediction for the
same delay sample (``--backend sim``: same straggler decisions under the pattern rule, the
time model's durations). Target: the prediction within 15% of each measured runtime.

Time model (specs/sgc.md 7.1), in seconds of the model, all scaled by ``scale``:
d[r, i] = base[r, i] + c * load + comm * results, base = 1 s (x ``slowdown`` when the GE chain
is bad, lognormal jitter ``sigma``), c = 2.2 s per unit load (the Lambda fit). An actor's task
returns when d[r, i] has passed since it started; the master (pattern rule) erases the model's
stragglers if the code admits them, else waits for everyone. Measured time per round runs from
the parameters' ``ray.put`` to the models' update (evaluation excluded): what the simulator
leaves out -- dispatch, transfers, ``ray.wait``, decoding -- is the prediction error.
"""
from __future__ import annotations

from pathlib import Path

import torch

from experiments.report import atomic_write_json, atomic_write_text, format_table, markdown_table

SCHEMES = ("uncoded", "gc:s=1", "m-sgc:B=1,W=2,lam=2")
DELAYS = "gilbert-elliott:p=0.05,q=0.5,slowdown=3,sigma=0.1"


def _run(workload, oracle, cfg, executor=None):
    from distopt.coding import make as make_code
    from simulator.coded import CodedSimulation
    from simulator.parts import parts_for

    parts = None if executor is not None else parts_for(workload, oracle.n, make_code(cfg.code, n=oracle.n))
    sim = CodedSimulation(oracle, cfg, parts=parts, executor=executor)
    hist = sim.run()
    return sim, hist.last


def main(d: int | None = None, repeat: int | None = None, out: str | None = None, n: int = 8, scale: float = 0.2,
         delays: str = DELAYS, schemes=SCHEMES, master: str | None = None, cpus: float = 0.25) -> int:
    import ray

    from experiments.workloads import make
    from simulator.engine import RunConfig
    from workers.cluster import connect
    from workers.executor import RayExecutor
    from workers.runtime import WorkerSpec

    rounds = repeat or 40
    torch.set_num_threads(1)
    started = not ray.is_initialized()
    connect(None, need_cpus=n * cpus)
    w = make("logreg")  # 2000 rows, 30 features (the EF21 papers' generated problem)
    o = w.oracle(n)
    print(f"straggler study on Ray: {n} actors, logreg d={o.d}, gd + identity, {rounds} rounds, delays {delays}, "
          f"scale {scale} s per model second, master {master or 'pattern'}")
    rows = []
    for code in schemes:
        cfg = RunConfig(method="gd", compressor="identity", lr="theory", rounds=rounds, code=code, delays=delays,
                        master=master, delay_scale=scale, progress=False, eval_every=rounds)
        predicted, p_last = _run(w, o, cfg)

        def factory(method, lr, code=code):
            return RayExecutor(WorkerSpec(w, n, method, lr, code=code), o.d, cpus=cpus)

        measured, m_last = _run(w, o, cfg, executor=factory)
        measured.executor.close()
        err = (p_last["time_s"] - m_last["time_s"]) / m_last["time_s"]
        rows.append({"scheme": code, "load": measured.scheme.load, "T": measured.T,
                     "measured_s": m_last["time_s"], "simulated_s": p_last["time_s"], "error_%": 100 * err,
                     "wait_outs (ray/sim)": f"{m_last['wait_outs']}/{p_last['wait_outs']}",
                     "jobs decoded": f"{m_last['jobs_decoded']}/{measured.jobs}", "loss": m_last["loss"]})
        print(format_table(rows[-1:]))
    if started:
        ray.shutdown()
    print()
    print(format_table(rows))
    worst = max(abs(r["error_%"]) for r in rows)
    print(f"\nworst |simulated - measured| / measured: {worst:.1f}% (target <= 15%)")
    if out:
        atomic_write_text(Path(out) / "ray_study.md", markdown_table(rows))
        atomic_write_json(Path(out) / "ray_study.json", {"rows": rows, "n": n, "rounds": rounds, "delays": delays,
                                                         "scale": scale, "master": master or "pattern"})
    return 0
