"""SR-SGC: gradient coding with selective repetition (Krishnan, Ebrahimi, Khisti,
"Sequential Gradient Coding for Straggler Mitigation", arXiv 2211.13802; specs/sgc.md section 4;
official ``SelectiveRepeatSGC``).

Parameters (B, W, lam) with B | (W-1). An (n, s)-GC with s = ceil(B lam / (W-1+B)); T = B;
load (s+1)/n. Round r:

1. every worker computes its GC row of job r, except:
2. let M = workers whose job-(r-B) result is still missing (stragglers of round r-B, or busy
   repeating then). If v = |M| > s, the v-s lowest-indexed of them compute their job-(r-B) row
   instead of job r's.
3. job r-B is decoded at the end of round r from its >= n-s distinct results of rounds r-B
   and r. (A job with <= s missing after its own round is decodable right then.)

Under the strict (B, W, lam) model every job decodes by round t+B (check C5).
``relaxed=true`` admits the official code's extra patterns ("exemption", check C7): past rounds
with <= s stragglers and no repetitions are left out of the window counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Literal, NamedTuple, Optional

from . import model as bwl
from .base import Decoding, Done, Outcome, Task, check_workers
from .gc import GradientCode, decode_blocks

__all__ = ["SRSGC", "SRState", "check_bwl"]


class SRState(NamedTuple):
    round: int
    recent: tuple[frozenset[int], ...]  # applied straggler sets of the last W-1 rounds
    exempt: tuple[bool, ...]  # per recent round: <= s stragglers and no repetitions
    missing: tuple[tuple[int, frozenset[int]], ...]  # in-flight job -> workers without its result


def check_bwl(name: str, n: int, B, W, lam) -> bwl.Bursty:
    """Validate (B, W, lam) for n workers, naming the fix."""
    for k, v in (("B", B), ("W", W), ("lam", lam)):
        if v is None:
            raise ValueError(f"{name} needs B, W and lam: e.g. '{name}:B=1,W=2,lam=2' (missing {k})")
    if B >= W:
        raise ValueError(f"{name} needs 1 <= B < W: got B={B}, W={W}; try W={B + 1}")
    if not (isinstance(lam, int) and 1 <= lam < n):
        raise ValueError(f"{name} needs 1 <= lam < n: got lam={lam} with n={n} workers; try lam={max(1, min(lam, n - 1))}")
    return bwl.Bursty(B, W, lam)


@dataclass(frozen=True)
class SRSGC:
    """Options: ``sr-sgc:B=1,W=2,lam=2[,kind=auto|frc|crc,seed=0,relaxed=false]``."""

    n: Optional[int] = None
    B: Optional[int] = None
    W: Optional[int] = None
    lam: Optional[int] = None
    kind: Literal["auto", "frc", "crc"] = "auto"
    seed: int = 0
    relaxed: bool = False

    name: ClassVar[str] = "sr-sgc"
    results_per_round: ClassVar[int] = 1

    def __post_init__(self):
        check_workers(self.name, self.n)
        check_bwl(self.name, self.n, self.B, self.W, self.lam)
        if (self.W - 1) % self.B:
            w = self.B * math.ceil((self.W - 1) / self.B) + 1
            raise ValueError(f"{self.name} needs B | (W-1): W-1={self.W - 1} is not a multiple of B={self.B}; try W={w}")
        GradientCode(self.n, self.s, self.kind, self.seed)

    @property
    def model(self) -> bwl.Bursty:
        return bwl.Bursty(self.B, self.W, self.lam)

    @property
    def s(self) -> int:
        return math.ceil(self.B * self.lam / (self.W - 1 + self.B))

    @property
    def T(self) -> int:
        return self.B

    @property
    def load(self) -> float:
        return (self.s + 1) / self.n

    @property
    def tolerance(self) -> int:
        return self.lam

    @property
    def part_sizes(self) -> tuple[float, ...]:
        return (1.0 / self.n,) * self.n

    @cached_property
    def code(self) -> GradientCode:
        return GradientCode(self.n, self.s, self.kind, self.seed)

    def init(self) -> SRState:
        return SRState(0, (), (), ())

    def _window(self, state: SRState) -> bwl.Window:
        return bwl.window(state.recent, self.model, state.round, state.exempt if self.relaxed else None)

    def admits(self, state: SRState, stragglers: frozenset[int]) -> bool:
        return bwl.admits(self._window(state), stragglers, self.model)

    def violation(self, state: SRState, stragglers: frozenset[int]) -> str | None:
        return bwl.violation(self._window(state), stragglers, self.model, state.round)

    def repeaters(self, state: SRState) -> frozenset[int]:
        """Workers that compute job r-B instead of job r in round r (rule 2)."""
        t = state.round - self.B
        m = next((m for j, m in state.missing if j == t), None)
        if m is None or len(m) <= self.s:
            return frozenset()
        return frozenset(sorted(m)[: len(m) - self.s])

    def assign(self, state: SRState) -> tuple[tuple[Task, ...], ...]:
        r, rep, rows = state.round, self.repeaters(state), self.code.rows
        return tuple((Task(r - self.B if i in rep else r, ("row", i), *rows[i]),) for i in range(self.n))

    def step(self, state: SRState, stragglers: frozenset[int]) -> tuple[SRState, Outcome]:
        r, S = state.round, frozenset(stragglers)
        rep = self.repeaters(state)
        decoded, failed, missing = [], [], []
        for j, m in state.missing:
            if j == r - self.B:  # its last chance: rounds r-B and r
                m = m - (rep - S)
                if len(m) <= self.s:
                    decoded.append(Done(j, (m,)))
                else:
                    failed.append(j)
            else:
                missing.append((j, m))
        mine = S | rep  # workers without a job-r result
        if len(mine) <= self.s:
            decoded.append(Done(r, (mine,)))
        else:
            missing.append((r, mine))
        exempt = len(S) <= self.s and not rep
        return (SRState(r + 1, bwl.push(state.recent, S, self.W), bwl.push(state.exempt, exempt, self.W), tuple(missing)),
                Outcome(tuple(decoded), tuple(failed)))

    def decoding(self, done: Done) -> Decoding:
        return decode_blocks(done.job, [("row",)], [self.code], done.erased)
