"""The Ray executor: the workers' side of every round on one actor per worker; the driver
(``simulator.engine.Simulation``, ``simulator.coded.CodedSimulation``) runs unchanged on top.

A round, as the driver sees it (``simulator.executors``):

1. parameters go out once: ``ray.put(x)`` (coded rounds: one object per model, put when the
   model changes); each dispatched actor gets the reference, its injected delay, and the word
   on its previous message (commit/discard);
2. replies come back with ``ray.wait`` under the master rule (``workers.master``: relative
   deadline, timeout, fastest-k, the model's flags); candidates the driver cannot admit are
   waited out;
3. erased stragglers are aborted (their sleep ends, their message and state are discarded);
   the accepted payloads are decoded here with the senders' Noise.

Faults: an actor that dies (killed, OOM) is a straggler for that round; Ray restarts it
(``max_restarts``) and the executor restores its committed state from the last state snapshot
plus a replay of the rounds since (``WorkerRuntime.restore``). Snapshots are pulled every
``snapshot_every`` rounds and at every driver checkpoint. In a wait-out the restored worker
reruns its task. Every fault and recovery is returned as an event for the history.
``faults``: (round, worker) pairs whose actor is killed right after dispatch (tests, drills).
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import ray
import torch
from torch import Tensor

from distopt.coding import Task
from simulator.clock import Decision
from simulator.executors import Arrivals, CodedArrivals, CodedResult, RoundPlan, check_finite

from .actor import make_actor
from .master import Gathered, finish, gather
from .runtime import WorkerSpec, decode

__all__ = ["RayExecutor"]

_ACTOR_DOWN = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class RayExecutor:
    """One actor per worker (``cpus``/``gpus`` each). Connect first (``workers.cluster.connect``)."""

    name = "ray"

    def __init__(self, spec: WorkerSpec, d: int, cpus: float = 1.0, gpus: float = 0.0, snapshot_every: int = 10,
                 faults: Sequence[tuple[int, int]] = (), max_restarts: int = -1):
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every}")
        self.spec, self.n, self.d = spec, spec.n, d
        self.snapshot_every = snapshot_every
        self.faults = {tuple(f) for f in faults}
        self.actors = [make_actor(spec, i, cpus, gpus, max_restarts) for i in range(self.n)]
        try:  # data loading errors surface here, once, with the worker's message
            for w in range(self.n):
                self._call(w, "ready")
        except (ValueError, RuntimeError):
            self.close()
            raise
        self.settle: list[Optional[tuple[int, bool]]] = [None] * self.n  # word on each worker's last message
        self.snap: list[Any] = [None] * self.n  # committed states at round snap_round (None: before round 0)
        self.snap_round = 0
        self.log: list[tuple[int, Any, bool, frozenset, frozenset]] = []  # (t, x ref, first, dispatched, accepted)
        self._models: dict[int, Any] = {}  # job -> ObjectRef of its model's parameters (coded rounds)

    # -- method rounds ------------------------------------------------------------------------
    def method_round(self, t: int, x: Tensor, workers: Tensor, first: bool, plan: RoundPlan) -> Arrivals:
        if t - self.snap_round >= self.snapshot_every and not first:
            self._pull_snapshot(t)
        events: list[str] = []
        t0 = time.perf_counter()  # the round's measured time starts before the parameters go out
        x_ref = ray.put(x)
        delays = plan.delays()
        who = workers.tolist()

        def dispatch(w):
            return self.actors[w].step.remote(t, x_ref, first, self.settle[w], _delay(delays, w))

        g, waited = self._run_round(t, t0, who, dispatch, plan, events)
        accepted = frozenset(g.got) - g.candidates if not waited else frozenset(g.got)
        for w in who:
            self.settle[w] = (t, w in accepted)
        self.log.append((t, x_ref, first, frozenset(who), accepted))
        keep = sorted(accepted)
        values = [decode(g.got[w].messages[0], w, self.spec.seed, self.n, self.d, x.dtype) for w in keep]
        bits = sum(g.got[w].messages[0].bits for w in keep)
        idx = torch.tensor(keep, dtype=torch.int64)
        V = torch.stack(values) if values else x.new_zeros(0, self.d)
        check_finite(V, idx, t, "message")
        return Arrivals(idx, V, bits, self._decision(g, waited, t0), tuple(events))

    # -- coded rounds -----------------------------------------------------------------------
    def coded_round(self, r: int, tasks: Sequence[Sequence[Task]], params: dict[int, Tensor],
                    plan: RoundPlan) -> CodedArrivals:
        events: list[str] = []
        t0 = time.perf_counter()
        refs = {j: self._model_ref(j, x, r) for j, x in params.items()}
        delays = plan.delays()
        who = [i for i in range(self.n) if tasks[i]]

        def dispatch(w):
            jobs = [t.job for t in tasks[w]]
            mine = sorted(set(jobs))
            return self.actors[w].coded.remote(r, tuple(tasks[w]), mine, _delay(delays, w), *[refs[j] for j in mine])

        g, waited = self._run_round(r, t0, who, dispatch, plan, events)
        accepted = frozenset(g.got) - g.candidates if not waited else frozenset(g.got)
        results, bits = [], 0
        dtype = next(iter(params.values())).dtype if params else torch.float64
        for w in sorted(accepted):
            for msg in g.got[w].messages:
                task = next(t for t in tasks[w] if t.key == msg.key and t.job == msg.job)
                results.append(CodedResult(w, task, decode(msg, w, self.spec.seed, self.n, self.d, dtype)))
                bits += msg.bits
        return CodedArrivals(results, bits, self._decision(g, waited, t0), tuple(events))

    def _model_ref(self, job: int, x: Tensor, r: int):
        """One object per job: a job's model does not move while the job runs, so its parameters
        go out once (one ``ray.put``), whatever the number of workers and rounds."""
        if job not in self._models:
            self._models[job] = ray.put(x)
        for j in [j for j in self._models if j < r - 64]:  # long finished (jobs live T+1 rounds)
            del self._models[j]
        return self._models[job]

    # -- the round under the master rule, faults included -----------------------------------------
    def _run_round(self, t: int, t0: float, who: list[int], dispatch, plan: RoundPlan,
                   events: list[str]) -> tuple[Gathered, bool]:
        refs = {w: dispatch(w) for w in who}
        for w in who:
            if (t, w) in self.faults:
                ray.kill(self.actors[w], no_restart=False)
                events.append(f"worker {w} killed (fault injection)")
        clock = plan.clock
        g = gather(refs, t0, clock.rule if clock else None, clock.flagged(t) if clock else None, plan.tolerance)
        waited = False
        if g.candidates and not plan.admit(g.candidates):
            waited = True
            g = finish(g, t0)
        for w, err in g.dead.items():
            events.append(f"worker {w} died ({type(err).__name__}), counted as a straggler; restarted and restored "
                          f"(snapshot of round {self.snap_round}, {sum(1 for e in self.log if w in e[3])} round(s) replayed)")
            self._recover(w)
        if waited and g.dead:  # everyone is needed: the restored workers rerun their tasks
            again = {w: dispatch(w) for w in g.dead}
            events.append(f"wait-out: reran round {t} on worker(s) {sorted(g.dead)}")
            g2 = finish(Gathered({}, {}, again, frozenset(), 0.0), t0)
            if g2.dead:
                raise RuntimeError(f"round {t}: worker(s) {sorted(g2.dead)} died again after a restart; the run cannot "
                                   "wait them out -- check the actors' logs (OOM?)")
            g = Gathered({**g.got, **g2.got}, {}, {}, frozenset(), g2.seconds)
        if not waited:
            for w in g.running:  # erased stragglers: stop their sleep, their message is discarded
                self.actors[w].abort.remote(t)
        return g, waited

    @staticmethod
    def _decision(g: Gathered, waited: bool, t0: float) -> Decision:
        """Measured seconds: from before the parameters went out to the decoded messages."""
        seconds = time.perf_counter() - t0
        if waited:
            return Decision(frozenset(), seconds, True, g.candidates)
        return Decision(g.candidates, seconds, False, g.candidates)

    def _call(self, w: int, method: str, *args, patience: float = 120.0):
        """``ray.get(actor.method(*args))``, waiting out a restart of the actor (Ray restarts a dead
        actor, ``max_restarts``); an error in the actor's construction is a ValueError."""
        deadline = time.perf_counter() + patience
        while True:
            try:
                return ray.get(getattr(self.actors[w], method).remote(*args))
            except _ACTOR_DOWN as e:
                if "creation task" in str(e):  # __init__ raised: restarting would not help
                    lines = [ln.strip() for ln in str(e).splitlines() if "Error" in ln and ":" in ln]
                    raise ValueError(f"worker {w}'s actor failed to start: {lines[-1] if lines else e}") from None
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"worker {w}'s actor did not come back within {patience:g} s after dying "
                                       "(see the Ray logs: OOM? max_restarts?)") from None
                time.sleep(0.05)

    def _recover(self, w: int) -> None:
        """Restore worker w's committed state on its restarted actor: snapshot + replay."""
        replay = [(t, ref, first, w in acc) for t, ref, first, disp, acc in self.log if w in disp]
        self._call(w, "restore", self.snap[w], replay)
        self.settle[w] = None  # the restored state is the committed one

    # -- snapshots ------------------------------------------------------------------------------
    def _pull_snapshot(self, t: int) -> None:
        refs = [a.snapshot.remote(self.settle[w]) for w, a in enumerate(self.actors)]
        snaps = []
        for w, ref in enumerate(refs):
            try:
                snaps.append(ray.get(ref))
            except _ACTOR_DOWN:
                self._recover(w)
                snaps.append(self._call(w, "snapshot", None))
        self.snap, self.snap_round, self.log = snaps, t, []
        self.settle = [None] * self.n

    def snapshot(self) -> Any:
        """Every worker's committed state now (for the driver's checkpoint)."""
        t = self.log[-1][0] + 1 if self.log else self.snap_round
        self._pull_snapshot(t)
        return {"round": t, "states": list(self.snap)}

    def reset(self) -> None:
        """A fresh run: every worker back before round 0."""
        self.restore({"round": 0, "states": [None] * self.n})
        self._models = {}

    def restore(self, snap: Any) -> None:
        self.snap, self.snap_round, self.log = list(snap["states"]), snap["round"], []
        refs = [a.restore.remote(s, []) for a, s in zip(self.actors, self.snap)]
        for w, ref in enumerate(refs):
            try:
                ray.get(ref)
            except _ACTOR_DOWN:
                self._call(w, "restore", self.snap[w], [])
        self.settle = [None] * self.n

    def close(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors = []


def _delay(delays, w: int) -> Optional[float]:
    return None if delays is None else float(delays[w])
