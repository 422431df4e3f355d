"""Training with coded gradients: T+1 models round-robin under GC, SR-SGC or M-SGC (issue 5
part 4; specs/sgc.md sections 1 and 7.5; Krishnan, Ebrahimi, Khisti, arXiv 2211.13802).

Job t starts in round t and belongs to model m(t) = t mod (T+1); it must decode by the end of
round t+T, before model m's next job starts at t+T+1, so each job's gradient is taken at a
model that does not move while the job runs (staleness 0, checked). A round r:

    tasks   = scheme.assign(state)                     # [n][slots], jobs r-T .. r
    results = executor.coded_round(r, tasks, {job: x_m(job)}, plan)   # erased: stragglers
    state, outcome = scheme.step(state, erased)        # the master's admission: plan.admit
    for each decoded job t:  g(t) = sum_k a_k result_k   (the exact sum of its partial gradients)
                             dir, S_m = method.server_step(g(t), S_m);  x_m -= optimizer(dir)

Workers compute partial gradients on the data parts the scheme assigns (``simulator.parts``:
the training set split into the scheme's ``part_sizes``), encode them (task coefficients) and
send each task's result through the method -- which must be linear, because decoding takes a
linear combination of results: ``gd`` (identity) or ``dcgd`` with identity, ``randk:...,
shared=true`` or an unscaled 16-bit cast. Error-feedback methods keep per-worker state that
coding would mix across workers; they fail at construction.

Runs R rounds for J = R - T jobs (tasks of jobs >= J idle). History rows evaluate the model
updated last (``model``), with ``jobs_decoded``, ``failures`` and the clock columns
(``simulator.driver``); uplink bits count every accepted result (M-SGC uploads W-1+B per
round), downlink bits one parameter vector per model whose parameters changed since they were
last sent. Without a straggler model nobody is late, so every job decodes in its own round.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from distopt import optim
from distopt._spec import spec_of
from distopt.coding import combine
from distopt.coding import make as make_code

from .driver import Driver, load_checkpoint, progress
from .engine import RunConfig, build_method, resolve_lr
from .executors import LocalExecutor, RoundPlan, check_finite
from .history import History

__all__ = ["CodedSimulation", "check_linear", "LINEAR_COMPRESSORS"]

LINEAR_COMPRESSORS = "identity, randk:...,shared=true, fp16:scaled=false, bf16:scaled=false"


def _linear(c) -> bool:
    """Decoding commutes with the compressor: C(sum_i a_i f_i) = sum_i a_i C(f_i) (up to rounding
    for the 16-bit casts, which decoding amplifies by max |a|)."""
    if c.name == "identity":
        return True
    if c.name == "randk":
        return bool(c.shared)  # the same coordinates for every worker and task of a job
    if c.name in ("fp16", "bf16"):
        return not c.scaled  # a per-vector scale would not commute with the sum
    return False


def check_linear(method) -> None:
    """Coded runs need a method without worker state and a linear compressor; fail with the fix."""
    if method.name not in ("gd", "dcgd"):
        raise ValueError(f"coded gradients decode a linear combination of the workers' results; {method.name} keeps "
                         "per-worker error-feedback state that coding would mix across workers: use --method gd "
                         f"(uncompressed) or --method dcgd with a linear compressor ({LINEAR_COMPRESSORS})")
    if not _linear(method.compressor):
        raise ValueError(f"compressor {method.compressor.spec} is not linear, so decoding would not give the compressed "
                         f"sum of the partial gradients; with --code use one of: {LINEAR_COMPRESSORS}")


class CodedSimulation(Driver):
    """T+1 models trained with a gradient code; ``run()`` drives it.

    ``parts``: the partial-gradient oracle over the scheme's parts (``simulator.parts.parts_for``),
    needed by the in-process executor; ``executor``: another backend (Ray), or a factory
    ``(method, lr) -> executor``. ``oracle``
    evaluates the models (and gives x^0, the smoothness for theory stepsizes)."""

    def __init__(self, oracle, cfg: RunConfig, out: Optional[str | Path] = None, extra_config: Optional[dict] = None,
                 parts=None, executor=None, resume: Optional[str | Path] = None, keep_iterates: bool = False):
        if not cfg.code:
            raise ValueError("CodedSimulation needs cfg.code (e.g. 'gc:s=1', 'm-sgc:B=1,W=2,lam=2')")
        if cfg.participation < 1.0 or cfg.down_compressor:
            raise ValueError("--participation and --down-compressor do not combine with --code (the code decides who "
                             "computes what; the models go out uncompressed)")
        self.scheme = make_code(cfg.code, n=oracle.n)
        self.method = build_method(cfg, oracle)
        check_linear(self.method)
        self.lr = resolve_lr(cfg, self.method, oracle)
        self.optimizer = optim.make(cfg.optimizer)
        self.T = self.scheme.T
        self.M = self.T + 1  # models trained round-robin
        self.jobs = cfg.rounds - self.T
        if self.jobs < 1:
            raise ValueError(f"{spec_of(self.scheme)} decodes job t by round t+T (T={self.T}): --rounds {cfg.rounds} "
                             f"leaves no job; use --rounds >= {self.T + 1}")
        clock = cfg.clock(oracle.n)
        if executor is None:
            if parts is None:
                raise ValueError("the in-process coded executor needs parts=simulator.parts.parts_for(workload, n, scheme)")
            executor = LocalExecutor(oracle, self.method, self.lr, cfg.seed, "vectorized", parts=parts)
        elif not hasattr(executor, "coded_round"):
            executor = executor(self.method, self.lr)
        super().__init__(oracle, cfg, out, executor, clock, timed=clock is not None or executor.name != "sim")
        self.dtype_bits = torch.finfo(oracle.dtype).bits
        self.iterates: Optional[list[Tensor]] = [] if keep_iterates else None
        self.resume = resume
        self.config = {
            **dataclasses.asdict(cfg), "lr": self.lr, "lr_rule": cfg.lr if isinstance(cfg.lr, str) else "given",
            "method_resolved": self.method.spec, "compressor_resolved": self.method.compressor.spec,
            "code": spec_of(self.scheme), "T": self.T, "models": self.M, "jobs": self.jobs, "load": self.scheme.load,
            "results_per_round": self.scheme.results_per_round, "n_workers": self.n, "d": self.d,
            "dtype": str(oracle.dtype).replace("torch.", ""), "L": oracle.L,
            **cfg.clock_config(clock), "backend": executor.name, **(extra_config or {}),
        }

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> History:
        cfg, scheme, method = self.cfg, self.scheme, self.method
        self._write_running()
        t0 = time.perf_counter()
        measured = self.executor.name != "sim"
        if self.resume is not None:
            ck = load_checkpoint(self.resume)
            self._restore_common(ck)
            st = ck["coded"]
        else:
            self.executor.reset()
            x0 = self.oracle.x0()
            st = {"round": 0, "xs": [x0.clone() for _ in range(self.M)], "S": [None] * self.M,
                  "opt": [self.optimizer.init(x0) for _ in range(self.M)], "updates": [0] * self.M,
                  "scheme": scheme.init(), "results": {}, "started": {}, "sent": [-1] * self.M, "last": 0,
                  "decoded": 0, "failures": 0, "bits_up": 0.0, "bits_down": 0.0}
            self._log_coded(0, st, t0)
        if self.iterates is not None:
            self.iterates.append(st["xs"][st["last"]].clone())
        bar = progress(cfg.rounds, cfg.progress, initial=st["round"])
        try:
            for r in range(st["round"], cfg.rounds):
                self._round(r, st, measured)
                st["round"] = r + 1
                bar.update(1)
                if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
                    row = self._log_coded(r + 1, st, t0)
                    self._postfix(bar, {"decoded": st["decoded"], "grad_norm_sq": f"{row['grad_norm_sq']:.3e}"})
                if cfg.checkpoint_every and (r + 1) % cfg.checkpoint_every == 0 and r + 1 < cfg.rounds:
                    self._save_checkpoint({"coded": st})
        finally:
            bar.close()
        self.failures, self.decoded = st["failures"], st["decoded"]
        status = "finished" if st["failures"] == 0 else f"finished with {st['failures']} undecodable job(s)"
        self.models = st["xs"]
        self._finish(status, st["xs"][st["last"]], f"{spec_of(scheme)}: {method.spec} + {method.compressor.spec}, "
                     f"n={self.n}, {self.M} model(s)")
        return self.history

    def _round(self, r: int, st: dict, measured: bool) -> None:
        scheme, M = self.scheme, self.M
        tasks = tuple(tuple(t for t in mine if t.job < self.jobs) for mine in scheme.assign(st["scheme"]))
        jobs = sorted({t.job for mine in tasks for t in mine})
        for j in jobs:  # a job's model must not move while the job runs
            st["started"].setdefault(j, st["updates"][j % M])
        fresh = {j % M for j in jobs if st["sent"][j % M] != st["updates"][j % M]}
        for m in fresh:
            st["sent"][m] = st["updates"][m]
        state = st["scheme"]
        plan = RoundPlan(r, lambda S: scheme.admits(state, S), scheme.load, scheme.results_per_round, self.clock,
                         scheme.tolerance)
        arr = self.executor.coded_round(r, tasks, {j: st["xs"][j % M] for j in jobs}, plan)
        t_srv = time.perf_counter()
        self._account(r, arr.decision, arr.events)
        for res in arr.results:
            st["results"].setdefault(res.task.job, {})[res.task.key] = res.value
        st["scheme"], outcome = scheme.step(state, arr.decision.stragglers)
        for done in outcome.decoded:
            if done.job < self.jobs:
                self._apply(done, st)
        for job in outcome.failed:
            if job < self.jobs:  # only when the scheme's guarantee broke (the master admits conforming sets)
                st["failures"] += 1
                st["results"].pop(job, None)
                st["started"].pop(job, None)
                self._event(r, f"job {job} failed to decode")
        st["bits_up"] += arr.bits / self.n
        st["bits_down"] += len(fresh) * self.d * self.dtype_bits
        if measured:
            self.time_s += time.perf_counter() - t_srv

    def _apply(self, done, st: dict) -> None:
        """Decode job ``done.job`` and step its model."""
        job, m = done.job, done.job % self.M
        dec = self.scheme.decoding(done)
        got = st["results"].pop(job, {})
        missing = [k for k, _ in dec.terms if k not in got]
        if missing:
            raise RuntimeError(f"job {job} decodes from result {missing[0]}, which never arrived: the scheme and the "
                               "executor disagree on who was erased -- report it")
        if st["started"].pop(job) != st["updates"][m]:
            raise RuntimeError(f"job {job}: model {m} moved while the job ran (staleness > 0) -- report it")
        g = combine(dec, got)  # [d] the decoded job gradient (compressed sum for dcgd)
        check_finite(g.unsqueeze(0), torch.tensor([-1]), job, "decoded gradient")
        if st["S"][m] is None:
            direction, st["S"][m] = self.method.init_server(g, self.lr)
        else:
            direction, st["S"][m] = self.method.server_step(g, st["S"][m], self.lr)
        step, st["opt"][m] = self.optimizer.step(direction, st["opt"][m], self.lr)
        st["xs"][m] = st["xs"][m] - step
        check_finite(st["xs"][m].unsqueeze(0), torch.tensor([-1]), job, "iterate")
        st["updates"][m] += 1
        st["last"] = m
        st["decoded"] += 1
        if self.iterates is not None:
            self.iterates.append(st["xs"][m].clone())

    def _log_coded(self, r: int, st: dict, t0: float) -> dict:
        m = st["last"]
        extra: dict[str, Any] = {"model": m, "model_updates": st["updates"][m], "jobs_decoded": st["decoded"],
                                 "failures": st["failures"]}
        return self._log_row(r, st["xs"][m], st["bits_up"], st["bits_down"], t0, extra)
