"""One Ray actor per worker: a ``WorkerRuntime`` (its shard or code parts, its method state)
plus injected straggler delays.

Created with the worker spec (workload, n, method, lr, seed, dtype, code) and its worker id;
it builds only its own data. Every call carries the driver's word on the previous round's
message (``settle``: commit or discard, the two-phase step of ``workers.runtime``), so a
dropped message costs no extra round trip.

Injected delays (``--delays MODEL``): a task given ``delay`` seconds returns when ``delay``
seconds have passed since it started -- computation included -- so the wall-clock follows the
straggler model (unless the computation alone takes longer). The driver ``abort``s the tasks of
the stragglers it erased: the sleep ends at once (the message is discarded anyway), as a
cancelled Lambda invocation would, and the worker is ready for the next round. ``abort`` runs
in its own concurrency group, beside the busy task; tasks themselves run one at a time.

Restarts: created with ``max_restarts``; a restarted actor rebuilds its data in ``__init__``
and the driver restores its state (``restore``: snapshot + replay).
"""
from __future__ import annotations

import threading
import time
from typing import Optional, Sequence

import ray

from .runtime import Reply, WorkerRuntime, WorkerSpec

__all__ = ["WorkerActor", "make_actor"]


@ray.remote(concurrency_groups={"control": 1})
class WorkerActor:
    def __init__(self, spec: WorkerSpec, worker: int):
        import torch

        torch.set_num_threads(1)  # many small actors share the machine's cores (oversubscribed OpenMP is slow)
        self.rt = WorkerRuntime(spec, worker)
        self._cond = threading.Condition()
        self._aborted = -1  # the latest round the driver aborted

    def ready(self) -> int:
        return self.rt.worker

    def _hold(self, r: int, start: float, delay: Optional[float]) -> bool:
        """Sleep until ``delay`` seconds after ``start``, unless round r is aborted; True if aborted."""
        if delay is None:
            return False
        with self._cond:
            return self._cond.wait_for(lambda: self._aborted >= r, timeout=max(0.0, start + delay - time.perf_counter()))

    def step(self, t: int, x, first: bool, settle: Optional[tuple[int, bool]], delay: Optional[float]) -> Reply:
        start = time.perf_counter()
        if settle is not None:
            self.rt.settle(*settle)
        reply = self.rt.step(t, x, first)
        return reply._replace(aborted=self._hold(t, start, delay))

    def coded(self, r: int, tasks, jobs: Sequence[int], delay: Optional[float], *params) -> Reply:
        start = time.perf_counter()
        reply = self.rt.coded(r, tasks, dict(zip(jobs, params)))
        return reply._replace(aborted=self._hold(r, start, delay))

    def snapshot(self, settle: Optional[tuple[int, bool]]) -> dict:
        if settle is not None:
            self.rt.settle(*settle)
        return self.rt.snapshot()

    def restore(self, snap, replay) -> int:
        """``replay``: (round, x ObjectRef, first, accepted) since the snapshot."""
        self.rt.restore(snap, [(t, ray.get(ref), first, ok) for t, ref, first, ok in replay])
        return self.rt.worker

    @ray.method(concurrency_group="control")
    def abort(self, r: int) -> None:
        with self._cond:
            self._aborted = max(self._aborted, r)
            self._cond.notify_all()


def make_actor(spec: WorkerSpec, worker: int, cpus: float = 1.0, gpus: float = 0.0, max_restarts: int = -1):
    """An actor for ``worker`` with its resources; restarted by Ray when it dies (``max_restarts``,
    -1: always); a task in flight when it dies is not retried (the driver decides)."""
    opts = {"num_cpus": cpus, "max_restarts": max_restarts, "max_task_retries": 0, "name": None}
    if gpus:
        opts["num_gpus"] = gpus
    return WorkerActor.options(**{k: v for k, v in opts.items() if v is not None}).remote(spec, worker)
