"""Executors: who runs the workers' side of a round. The driver (``simulator.engine``,
``simulator.coded``) owns everything else -- aggregation, server step, optimizer, downlink,
bits, clock, history, checkpoints -- so every backend runs the same round logic:

    plan     = RoundPlan(round, admit, load, results, clock)        # what the master knows
    arrivals = executor.method_round(t, x, workers, first, plan)     # one method round
    arrivals = executor.coded_round(r, tasks, params, plan)          # one coded round (T+1 models)

An executor applies the master rule (``plan``) itself -- the simulator on the clock's simulated
durations, Ray online on measured arrival times -- and returns only the messages the server
applies: stragglers' messages are dropped, and a worker whose message was dropped keeps its
last committed state (EF21's g_i must stay the server's mean, so a dropped round must not move
it). ``LocalExecutor`` decides the round first (the durations are known in advance) and computes
only the accepted workers; the Ray executor computes everyone and commits or discards on the
driver's word (two-phase).

``LocalExecutor(mode="vectorized")`` runs one batched call for all workers (workers stacked on a
leading axis) and donates their states to it; ``mode="loop"`` one oracle call and one step per
worker, as FL simulators do (the parity baseline of tests/test_methods.py and the speed
baseline of ``distopt bench simulator``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal, NamedTuple, Optional, Protocol, Sequence

import torch
from torch import Tensor

from distopt._tree import rows as tree_rows
from distopt._tree import scatter_rows, tree_map
from distopt.coding import Task, encode_many
from distopt.compressors.base import NonFiniteInput
from distopt.methods import Method, Sent
from distopt.noise import Noise

from .clock import Decision, StragglerClock

__all__ = ["NonFiniteError", "check_finite", "RoundPlan", "Arrivals", "CodedResult", "CodedArrivals", "Executor",
           "LocalExecutor", "local_rows", "set_local_rows"]


class NonFiniteError(ValueError):
    pass


def check_finite(g: Tensor, workers: Tensor, t: int, what: str) -> None:
    """Raise NonFiniteError naming the first worker whose row of ``g`` [k, d] is not finite."""
    if bool(torch.isfinite(g.sum())):
        return
    bad = (~torch.isfinite(g)).reshape(g.shape[0], -1).any(1) if g.dim() > 1 else ~torch.isfinite(g).any().reshape(1)
    if not bool(bad.any()):  # the sum overflowed, the entries are finite
        return
    first = int(workers[int(bad.nonzero()[0])]) if g.dim() > 1 else -1
    raise NonFiniteError(f"round {t}: worker {first} produced a non-finite {what} (NaN or Inf; {int(bad.sum())} "
                         "worker(s) affected): the run diverged; lower --lr or use an error-feedback method")


NO_DELAYS = Decision(frozenset(), math.nan, False)


class RoundPlan(NamedTuple):
    """What the master knows before round ``round`` starts."""

    round: int
    admit: Callable[[frozenset[int]], bool]  # may these workers' results be erased this round?
    load: float  # fraction of one job's data per worker (time model)
    results: int  # vectors each worker uploads (time model)
    clock: Optional[StragglerClock] = None  # None: no injected delays, wait for everyone
    tolerance: int = 0  # default k = n - tolerance of the fastest-k rule

    def decide(self) -> Decision:
        """The simulated decision (the Ray executor decides online instead)."""
        if self.clock is None:
            return NO_DELAYS
        return self.clock.decide(self.round, self.load, self.results, self.admit, self.tolerance)

    def delays(self):
        """Seconds each worker's task takes under the model ``[n]`` (None without delays)."""
        return None if self.clock is None else self.clock.durations(self.round, self.load, self.results)


class Arrivals(NamedTuple):
    """The messages of one method round that the server applies."""

    workers: Tensor  # [k] int64, ascending
    values: Tensor | Sent  # [k, d] decoded message values, or the stacked message (decoded on demand)
    bits: int  # uplink bits of these k messages (payloads + side bits)
    decision: Decision  # stragglers, round seconds, wait-out
    events: tuple[str, ...] = ()  # faults and recoveries (Ray)


class CodedResult(NamedTuple):
    worker: int
    task: Task
    value: Tensor  # [d] the decoded (decompressed) task result


class CodedArrivals(NamedTuple):
    results: list[CodedResult]  # from the workers that were not erased
    bits: int
    decision: Decision
    events: tuple[str, ...] = ()


class Executor(Protocol):
    name: str

    def method_round(self, t: int, x: Tensor, workers: Tensor, first: bool, plan: RoundPlan) -> Arrivals: ...

    def coded_round(self, r: int, tasks: Sequence[Sequence[Task]], params: dict[int, Tensor],
                    plan: RoundPlan) -> CodedArrivals: ...

    def reset(self) -> None: ...  # a fresh run: every worker before round 0

    def snapshot(self) -> Any: ...  # the workers' committed states (checkpoints)

    def restore(self, snap: Any) -> None: ...

    def close(self) -> None: ...


# -- workers' local (never communicated) parameters: part of their state -----------------------
def local_rows(oracle, idx: Tensor) -> dict[str, Tensor]:
    """Copies of rows ``idx`` of an oracle's per-worker local parameters (VmapOracle.local)."""
    return {k: v[idx].clone() for k, v in (getattr(oracle, "local", None) or {}).items()}


def set_local_rows(oracle, idx: Tensor, saved: dict[str, Tensor]) -> None:
    for k, v in saved.items():
        oracle.local[k][idx] = v


def _copy_states(W: Any) -> Any:
    """A copy of the committed states: a stacked state, or the loop's list of per-worker ones."""
    return [tree_map(torch.clone, s) for s in W] if isinstance(W, list) else tree_map(torch.clone, W)


class LocalExecutor:
    """All n workers in this process on one oracle; state stacked ``[n, ...]`` (vectorized) or a
    list of per-worker states (loop). Coded rounds take partial gradients from ``parts``
    (``simulator.parts``), computed once per job: a job's model does not change while it runs."""

    name = "sim"

    def __init__(self, oracle, method: Method, lr: float, seed: int, mode: Literal["vectorized", "loop"] = "vectorized",
                 parts=None):
        if mode not in ("vectorized", "loop"):
            raise ValueError(f"workers must be 'vectorized' or 'loop', got {mode!r}")
        self.oracle, self.method, self.lr, self.seed, self.mode = oracle, method, lr, seed, mode
        self.n = oracle.n
        self.W: Any = None  # committed worker states
        self.parts = parts
        self._partials: dict[int, Tensor] = {}  # job -> [P, d] partial gradients

    # -- method rounds --------------------------------------------------------------------
    def method_round(self, t: int, x: Tensor, workers: Tensor, first: bool, plan: RoundPlan) -> Arrivals:
        dec = plan.decide()
        if dec.stragglers:  # the simulator knows the durations in advance: compute only the accepted
            keep = torch.tensor([w not in dec.stragglers for w in workers.tolist()], dtype=torch.bool)
            workers = workers[keep]
        if len(workers) == 0:
            return Arrivals(workers, x.new_zeros(0, x.numel()), 0, dec)
        if self.mode == "vectorized":
            values, bits = self._vectorized(t, self.oracle.grads(x, t, workers), workers, first)  # G [k, d]
        else:
            values, bits = self._loop(t, x, workers, first)
        return Arrivals(workers, values, bits, dec)

    def _vectorized(self, t: int, G: Tensor, workers: Tensor, first: bool):
        noise = Noise(self.seed, t, workers, self.n)
        if first:
            if len(workers) != self.n:
                raise ValueError("round 0 initialises every worker: the master must wait for all of them")
            check_finite(G, workers, t, "gradient")
            sent, W = self.method.init_worker(G, noise, self.lr)
            self.W = tree_map(torch.clone, W)  # owned: no leaf shares memory with G or another leaf
            return sent, sent.bits
        every = len(workers) == self.n
        try:  # donated: the executor owns self.W (and the rows it gathers) and drops the old state
            sent, sub = self.method.worker_step(G, self.W if every else tree_rows(self.W, workers), noise, self.lr,
                                                donate=True)
        except NonFiniteInput:
            check_finite(G, workers, t, "gradient")  # a NaN gradient: name its worker and round
            raise
        if not sent.finite_checked:  # (a fused kernel has already seen every entry: no second pass)
            check_finite(G, workers, t, "gradient")
        # committed once finite (a NaN raised above; a donated state is given up then: the run stops)
        self.W = sub if every else scatter_rows(self.W, workers, sub, in_place=True)
        return sent, sent.bits  # the server sums the messages from their payloads where it can

    def _loop(self, t: int, x: Tensor, workers: Tensor, first: bool):
        """One worker at a time, as FL simulators run clients: its gradient (one oracle call on
        its own data; the draws are keyed by (seed, round, worker), so they equal the stack's
        rows), then its step. NaN: a compressor raises on its input (the worker is named
        here); an uncompressed message is its gradient, checked on the stack of messages."""
        if self.W is None:
            self.W = [None] * self.n
        values, bits, new = [], 0, {}
        for w in workers.tolist():  # the per-worker loop FL simulators use
            who = torch.tensor([w])
            g = self.oracle.grads(x, t, who)[0]  # [d]
            noise = Noise(self.seed, t, w, self.n)
            try:
                if first:
                    sent, s = self.method.init_worker(g, noise, self.lr)
                else:
                    sent, s = self.method.worker_step(g, self.W[w], noise, self.lr)
            except NonFiniteInput:
                check_finite(g.unsqueeze(0), who, t, "gradient")
                raise
            values.append(sent.value)
            bits += sent.bits
            new[w] = s
        stacked = torch.stack(values)  # [k, d]
        check_finite(stacked, workers, t, "gradient")
        for w, s in new.items():  # committed once every worker's message was finite
            self.W[w] = s
        return stacked, bits

    # -- coded rounds ---------------------------------------------------------------------
    def coded_round(self, r: int, tasks: Sequence[Sequence[Task]], params: dict[int, Tensor],
                    plan: RoundPlan) -> CodedArrivals:
        if self.parts is None:
            raise ValueError("coded rounds need the data split into the scheme's parts (LocalExecutor(parts=...))")
        dec = plan.decide()
        by_job: dict[int, list[tuple[int, Task]]] = {}
        for i, mine in enumerate(tasks):
            if i not in dec.stragglers:  # a straggler's whole output is erased
                for task in mine:
                    by_job.setdefault(task.job, []).append((i, task))
        self._partials = {j: p for j, p in self._partials.items() if j in params}  # finished jobs
        results, bits = [], 0
        for job, pairs in sorted(by_job.items()):
            if job not in self._partials:  # all P partial gradients of the job at its model, once
                P = len(self.parts.ranges)
                self._partials[job] = self.parts.grads(params[job], torch.arange(P))
                check_finite(self._partials[job], torch.arange(P), r, "partial gradient")
            E = encode_many([t for _, t in pairs], self._partials[job])  # [k, d] task results
            who = torch.tensor([i for i, _ in pairs])
            sent, _ = self.method.worker_step(E, (), Noise(self.seed, job, who, self.n), self.lr)
            results += [CodedResult(i, t, v) for (i, t), v in zip(pairs, sent.value)]
            bits += sent.bits
        return CodedArrivals(results, bits, dec)

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.W = None
        self._partials = {}

    def snapshot(self) -> Any:  # copies: the vectorized rounds update self.W in place (donation)
        local = getattr(self.oracle, "local", None) or {}
        return {"mode": self.mode, "W": _copy_states(self.W), "local": {k: v.clone() for k, v in local.items()}}

    def restore(self, snap: Any) -> None:
        if snap.get("mode") != self.mode:
            raise ValueError(f"the checkpoint holds {snap.get('mode')} worker states; resume with workers={snap.get('mode')}")
        self.W = _copy_states(snap["W"])  # the snapshot stays as it was
        for k, v in snap["local"].items():
            self.oracle.local[k] = v.clone()

    def close(self) -> None:
        pass

