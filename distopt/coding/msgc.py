"""M-SGC: multiplexed sequential gradient coding (Krishnan, Ebrahimi, Khisti, "Sequential
Gradient Coding for Straggler Mitigation", arXiv 2211.13802; specs/sgc.md section 5; official
``MultiplexedSGC`` and the 2021 prototype's data split).

Parameters (B, W, lam), 1 <= B < W, lam < n; T = W-2+B. Each job's data:

* D1 (repetition part), fraction (lam+1)(W-1)/(B+(lam+1)(W-1)): n(W-1) uncoded chunks,
  worker i owns chunks (i, 0..W-2);
* D2 (coded part), fraction B/(B+(lam+1)(W-1)): B groups of n parts, each group under an
  (n, lam) gradient code.

Every mini-task (a D1 chunk, or a coded D2 row covering lam+1 parts) is (lam+1)u of a job,
u = 1/(n(B+(lam+1)(W-1))). Round r, worker i runs W-1+B mini-tasks; slot m serves job r-m:

* m <= W-2: D1 chunk (i, m) of job r-m;
* m = W-1+g: if worker i still has a lost D1 chunk of job r-m it re-attempts the earliest one,
  otherwise it computes its coded row of group g of job r-m.

Job t decodes at the end of round t+T: all n(W-1) chunks in hand and, per group, >= n-lam
coded results. Load L = (lam+1)(W-1+B) / (n(B+(W-1)(lam+1))) (equation of spec section 5).
Departure: the official code also allows lam = n (load (W-1+B)/(n(W-1))); we need lam < n.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Literal, NamedTuple, Optional

from . import model as bwl
from .base import Decoding, Done, Outcome, Task, check_workers
from .gc import GradientCode, decode_blocks
from .srsgc import check_bwl

__all__ = ["MSGC", "MState"]


class MState(NamedTuple):
    """Dicts are never mutated: ``step`` copies what it changes."""

    round: int
    recent: tuple[frozenset[int], ...]  # applied straggler sets of the last W-1 rounds
    lost: dict  # job -> {worker: lost D1 chunk indices, ascending} (only workers with losses)
    erased: dict  # job -> per D2 group done so far, the workers without its coded result


@dataclass(frozen=True)
class MSGC:
    """Options: ``m-sgc:B=1,W=2,lam=2[,kind=auto|frc|crc,seed=0]``."""

    n: Optional[int] = None
    B: Optional[int] = None
    W: Optional[int] = None
    lam: Optional[int] = None
    kind: Literal["auto", "frc", "crc"] = "auto"
    seed: int = 0

    name: ClassVar[str] = "m-sgc"

    def __post_init__(self):
        check_workers(self.name, self.n)
        check_bwl(self.name, self.n, self.B, self.W, self.lam)
        GradientCode(self.n, self.lam, self.kind, self.seed)

    @property
    def model(self) -> bwl.Bursty:
        return bwl.Bursty(self.B, self.W, self.lam)

    @property
    def T(self) -> int:
        return self.W - 2 + self.B

    @property
    def results_per_round(self) -> int:
        return self.W - 1 + self.B

    @property
    def tolerance(self) -> int:
        return self.lam

    @property
    def load(self) -> float:
        B, W, lam, n = self.B, self.W, self.lam, self.n
        return (lam + 1) * (W - 1 + B) / (n * (B + (W - 1) * (lam + 1)))

    @property
    def part_sizes(self) -> tuple[float, ...]:
        """n(W-1) D1 chunks of (lam+1)u, then B*n D2 parts of u."""
        u = 1.0 / (self.n * (self.B + (self.lam + 1) * (self.W - 1)))
        return ((self.lam + 1) * u,) * (self.n * (self.W - 1)) + (u,) * (self.n * self.B)

    @cached_property
    def code(self) -> GradientCode:
        return GradientCode(self.n, self.lam, self.kind, self.seed)

    @cached_property
    def _coded(self) -> tuple[tuple[tuple[tuple[int, ...], tuple[float, ...]], ...], ...]:
        """[group][worker] (parts, coefficients) of the coded D2 row; D2 parts start at n(W-1)."""
        base = self.n * (self.W - 1)
        return tuple(tuple((tuple(base + g * self.n + p for p in parts), coeffs) for parts, coeffs in self.code.rows)
                     for g in range(self.B))

    def init(self) -> MState:
        return MState(0, (), {}, {})

    def admits(self, state: MState, stragglers: frozenset[int]) -> bool:
        return bwl.admits(bwl.window(state.recent, self.model, state.round), stragglers, self.model)

    def violation(self, state: MState, stragglers: frozenset[int]) -> str | None:
        return bwl.violation(bwl.window(state.recent, self.model, state.round), stragglers, self.model, state.round)

    def _d1(self, job: int, i: int, c: int) -> Task:
        return Task(job, ("d1", i, c), (i * (self.W - 1) + c,), (1.0,))

    def assign(self, state: MState) -> tuple[tuple[Task, ...], ...]:
        r, W = state.round, self.W
        out = []
        for i in range(self.n):
            tasks = []
            for m in range(W - 1 + self.B):
                t = r - m
                if t < 0:
                    break  # slots of jobs before job 0 idle
                if m <= W - 2:
                    tasks.append(self._d1(t, i, m))
                    continue
                g, lost = m - (W - 1), state.lost.get(t, {}).get(i)
                if lost:
                    tasks.append(self._d1(t, i, lost[0]))  # re-attempt the earliest lost chunk
                else:
                    tasks.append(Task(t, ("d2", g, i), *self._coded[g][i]))
            out.append(tuple(tasks))
        return tuple(out)

    def step(self, state: MState, stragglers: frozenset[int]) -> tuple[MState, Outcome]:
        r, W, S = state.round, self.W, frozenset(stragglers)
        lost, erased = dict(state.lost), dict(state.erased)
        if S:  # D1 slots: stragglers lose chunk m of job r-m
            for m in range(min(W - 1, r + 1)):
                t = r - m
                ledger = dict(lost.get(t, {}))
                for i in S:
                    ledger[i] = ledger.get(i, ()) + (m,)
                lost[t] = ledger
        for g in range(self.B):  # D2 slots: re-attempts, else coded rows of group g
            t = r - (W - 1) - g
            if t < 0:
                break
            ledger = lost.get(t, {})
            retry = frozenset(ledger)  # workers with a lost chunk of job t re-attempt it
            erased[t] = erased.get(t, ()) + (retry | S,)
            if retry - S:
                ledger = dict(ledger)
                for i in retry - S:
                    rest = ledger.pop(i)[1:]
                    if rest:
                        ledger[i] = rest
                lost[t] = ledger
        decoded, failed = (), ()
        t = r - self.T
        if t >= 0:
            chunks_missing = bool(lost.pop(t, None))
            groups = erased.pop(t)
            if not chunks_missing and all(len(e) <= self.lam for e in groups):
                decoded = (Done(t, groups),)
            else:
                failed = (t,)
        return MState(r + 1, bwl.push(state.recent, S, W), lost, erased), Outcome(decoded, failed)

    def decoding(self, done: Done) -> Decoding:
        chunks = tuple((("d1", i, c), 1.0) for i in range(self.n) for c in range(self.W - 1))
        return decode_blocks(done.job, [("d2", g) for g in range(self.B)], [self.code] * self.B, done.erased, chunks)
