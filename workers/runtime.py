"""One worker of a real deployment, without Ray: its data, its method state, its tasks.

A Ray actor (``workers.actor``) wraps one ``WorkerRuntime``; tests drive it directly. The
worker builds only its own data -- its shard (method rounds) or the code's parts it may be
assigned (coded rounds, ``simulator.parts.worker_parts``) -- and computes exactly what the
simulator computes for its row, with ``Noise(seed, step, worker, n)``:

* ``step(t, x, first)``: gradient at x, then ``method.init_worker`` (round 0) or
  ``worker_step``. Two-phase: the new state is *pending* until the driver's word, ``settle(t,
  accepted)``; a dropped (straggling) message is discarded with its state, so error feedback
  never drifts from the server (EF21: the server's g stays the mean of the committed g_i).
  Local (never communicated) parameters are state too and follow the same rule.
* ``coded(r, tasks, params)``: per task, the coded combination of partial gradients at the
  job's model, sent through the (linear, stateless) method with ``Noise(seed, job, worker, n)``.
* ``snapshot()`` / ``restore(snap, replay)``: the committed state, and after a restart the
  state rebuilt from a snapshot by replaying the rounds since (gradients are deterministic
  given x and the round: the replay gives the state the worker had).

Replies carry payloads, not dense values: the driver decodes them with the same Noise.
Departure: EF21+'s server must mirror every g_i to apply "choice a" (specs/ef-family.md 3.4);
our driver does not, so EF21+ replies also carry the change g_i^new - g_i (bits still count
the payload and the choice bit, what a mirroring server would receive).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from distopt.coding import Task, encode_many
from distopt.coding import make as make_code
from distopt.compressors import Compressor, Payload
from distopt.methods import EF21Plus, Method
from distopt.noise import Noise
from simulator.executors import local_rows, set_local_rows
from simulator.oracles import LogisticOracle, VmapOracle, _minibatch
from simulator.parts import parts_for, worker_parts

__all__ = ["WorkerSpec", "Message", "Reply", "WorkerRuntime", "worker_oracle", "decode"]


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What every worker is created with (picklable: the workload and method objects travel)."""

    workload: Any  # a workload object (experiments.workloads); built on the driver, data loaded here
    n: int
    method: Method
    lr: float
    seed: int = 0
    dtype: torch.dtype = torch.float64
    batch: Optional[int] = None
    code: Optional[str] = None  # coded runs: the scheme spec (the worker holds its parts' data)


class Message(NamedTuple):
    job: int  # the round (method rounds) or the coded job
    key: Optional[tuple]  # the coded task's result key (None in method rounds)
    payload: Payload
    codec: Compressor
    extra_bits: int
    value: Optional[Tensor] = None  # only where the payload alone does not determine it (EF21+)

    @property
    def bits(self) -> int:
        return self.codec.bits(self.payload) + self.extra_bits


class Reply(NamedTuple):
    worker: int
    round: int
    messages: tuple[Message, ...]
    compute_s: float  # seconds of real computation (the rest of a delayed task is injected sleep)
    aborted: bool = False


def decode(msg: Message, worker: int, seed: int, n: int, d: int, dtype: torch.dtype) -> Tensor:
    """The dense value of a message, on the driver: ``codec.decompress`` with the sender's Noise."""
    if msg.value is not None:
        return msg.value
    return msg.codec.decompress(msg.payload, d, Noise(seed, msg.job, worker, n), dtype)


class ShardLogistic(LogisticOracle):
    """Worker i's logistic loss on its own shard only: the simulator's row i, minibatches drawn
    from Noise(seed, step, i) over the same keys (so the same samples)."""

    def __init__(self, shard, worker: int, n: int, reg: float, batch: Optional[int], seed: int, dtype: torch.dtype):
        super().__init__([shard], reg=reg, batch=batch, seed=seed, dtype=dtype)
        self.worker = worker
        self._sizes = torch.zeros(n, dtype=self.sizes.dtype)
        self._sizes[worker] = self.sizes[0]

    def grads(self, x: Tensor, step: int, workers: Tensor) -> Tensor:
        if workers.tolist() != [self.worker]:
            raise ValueError(f"worker {self.worker} holds only its own shard, asked for workers {workers.tolist()}")
        if self.batch is None:
            return super().grads(x, step, torch.zeros(1, dtype=torch.int64))
        idx = _minibatch(self.seed, step, workers, self._sizes, self.batch, self.A.shape[1])  # [1, batch]
        A, b = self.A[0, idx[0]].unsqueeze(0), self.b[0, idx[0]].unsqueeze(0)
        w = torch.full(b.shape, 1.0 / self.batch, dtype=self.dtype)
        z = A @ x
        coef = -b * self._sigmoid(-b * z) * w
        return torch.bmm(coef.unsqueeze(1), A).squeeze(1) + self._reg_grad(x)


def worker_oracle(spec: WorkerSpec, worker: int):
    """An oracle answering ``grads(x, step, [worker])``: logreg from the worker's shard alone;
    other workloads through their own oracle (quadratics: centers from the seed; the rest:
    per-worker batches of the generic vmap oracle, which only builds the asked worker's)."""
    w = spec.workload
    if getattr(w, "name", None) == "logreg":
        return ShardLogistic(w.shards(spec.n)[worker], worker, spec.n, w.reg, spec.batch, spec.seed, spec.dtype)
    if hasattr(w, "oracle"):
        return w.oracle(spec.n, dtype=spec.dtype, batch=spec.batch, seed=spec.seed)
    if spec.batch is not None:
        raise ValueError(f"workload {w.name!r} defines its own batches; drop --batch")
    return VmapOracle(w, spec.n, seed=spec.seed, dtype=spec.dtype)


class Pending(NamedTuple):
    round: int
    state: Any
    local: dict


class WorkerRuntime:
    def __init__(self, spec: WorkerSpec, worker: int):
        if not 0 <= worker < spec.n:
            raise ValueError(f"worker id {worker} is not in 0..{spec.n - 1}")
        self.spec, self.worker = spec, worker
        self.idx = torch.tensor([worker])
        self.method = spec.method
        self.scheme = make_code(spec.code, n=spec.n) if spec.code else None
        if self.scheme is not None:
            self.parts = parts_for(spec.workload, spec.n, self.scheme, keep=worker_parts(self.scheme, worker), dtype=spec.dtype)
            self.oracle = None
        else:
            self.parts = None
            self.oracle = worker_oracle(spec, worker)
        self.state: Any = None  # committed method state (None before round 0)
        self.pending: Optional[Pending] = None
        self.done = -1  # the last round whose result was committed or discarded

    def _noise(self, step: int) -> Noise:
        return Noise(self.spec.seed, step, self.worker, self.spec.n)

    # -- method rounds (two-phase) ------------------------------------------------------------
    def step(self, t: int, x: Tensor, first: bool) -> Reply:
        c0 = time.perf_counter()
        if self.pending is not None:  # the driver never settled it: the message was not used
            self.settle(self.pending.round, False)
        before = local_rows(self.oracle, self.idx)
        g = self.oracle.grads(x, t, self.idx)[0]  # [d]
        after = local_rows(self.oracle, self.idx)
        set_local_rows(self.oracle, self.idx, before)  # local steps wait for the commit too
        if first:
            sent, new = self.method.init_worker(g, self._noise(t), self.spec.lr)
        else:
            if self.state is None:
                raise RuntimeError(f"worker {self.worker}: round {t} before its round-0 initialisation")
            sent, new = self.method.worker_step(g, self.state, self._noise(t), self.spec.lr)
        self.pending = Pending(t, new, after)
        value = sent.value if isinstance(self.method, EF21Plus) and not first else None
        msg = Message(t, None, sent.payload, sent.codec, sent.extra_bits, value)
        return Reply(self.worker, t, (msg,), time.perf_counter() - c0)

    def settle(self, t: int, accepted: bool) -> None:
        """The driver's word on round t's message: commit its state or discard it."""
        p = self.pending
        if p is None or p.round != t:
            return
        if accepted:
            self.state = p.state
            set_local_rows(self.oracle, self.idx, p.local)
        self.pending = None
        self.done = t

    # -- coded rounds -------------------------------------------------------------------------
    def coded(self, r: int, tasks: Sequence[Task], params: dict[int, Tensor]) -> Reply:
        c0 = time.perf_counter()
        msgs = []
        for task in tasks:
            parts = torch.tensor(task.parts, dtype=torch.int64)
            partials = self.parts.grads(params[task.job], parts)  # [len(parts), d]
            local = task._replace(parts=tuple(range(len(task.parts))))  # coefficients on the rows just computed
            v = encode_many([local], partials)[0]
            sent, _ = self.method.worker_step(v, (), Noise(self.spec.seed, task.job, self.worker, self.spec.n), self.spec.lr)
            msgs.append(Message(task.job, task.key, sent.payload, sent.codec, sent.extra_bits))
        return Reply(self.worker, r, tuple(msgs), time.perf_counter() - c0)

    # -- checkpoints and recovery -----------------------------------------------------------------
    def snapshot(self) -> dict:
        """The committed state (an unsettled message is discarded first: the driver settles
        every accepted message before it snapshots)."""
        if self.pending is not None:
            self.settle(self.pending.round, False)
        return {"state": self.state, "local": local_rows(self.oracle, self.idx) if self.oracle is not None else {}}

    def restore(self, snap: Optional[dict], replay: Sequence[tuple[int, Tensor, bool, bool]] = ()) -> None:
        """Committed state from ``snap`` (None: before round 0), then ``replay`` = (round, x,
        first, accepted) of every round since that this worker took part in."""
        self.pending = None
        self.state = snap["state"] if snap else None
        if snap and self.oracle is not None:
            set_local_rows(self.oracle, self.idx, snap["local"])
        for t, x, first, accepted in replay:
            self.step(t, x, first)
            self.settle(t, accepted)
