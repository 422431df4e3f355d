"""Gradient coding (Tandon, Lei, Dimakis, Karampatziakis, ICML 2017), specs/sgc.md section 2.

An (n, s) gradient code splits a job into n parts g_1..g_n; worker i sends
f_i = sum_j B[i, j] g_j. Any n-s survivors I decode: find a with a_I^T B_I = 1^T, then
sum_{i in I} a_i f_i = sum_j g_j. Load (s+1)/n, the lower bound.

* FRC (fractional repetition), needs (s+1) | n: n/(s+1) groups of s+1 workers; group j sends
  the plain sum of parts j(s+1)..j(s+1)+s. Decode: one survivor per group, coefficient 1.
* CRC (cyclic repetition, Tandon's Algorithm 2): H [s, n] Gaussian with H 1 = 0;
  supp(B[i]) = {i..i+s} mod n, B[i, i] = 1 and the other s entries solve
  H[:, supp - i] x = -H[:, i], so every row lies in null(H) (dimension n-s, contains 1).
  Decode by least squares in float64 (QR on n-s survivors, SVD fallback), reporting max|a|
  and the residual max|a^T B_I - 1|: at n=256, s=27 a random H gives residual ~1e-10 and
  |a| from ~1e3 up to ~1e6 depending on the erased set.

``kind="auto"`` (default) takes FRC where (s+1) | n (exact, coefficients 1) and CRC otherwise;
a CRC whose probe decodes (8 erasure sets) are ill-conditioned (max|a| > 1e6 or residual > 1e-9)
is redrawn from the next seeds (up to 4) and the best kept; ``conditioning`` reports max|a|,
the residual, and the nearest s whose s+1 divides n (where FRC, coefficients 1, would work).

Departure: the official simulator's GC admits only ``< s`` stragglers per round while charging
load (s+1)/n (spec 6.4). We admit ``<= s``; ``official_rule=true`` reproduces theirs (check C9).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Literal, NamedTuple, Optional

import torch
from torch import Tensor

from .base import Decoding, Done, Outcome, Task, check_workers, single_thread

__all__ = ["frc_matrix", "crc_matrix", "random_h", "decode_coefficients", "GradientCode", "GC", "Uncoded",
           "DECODE_TOL", "ILL_COEF"]

DECODE_TOL = 1e-8  # a decode whose residual max|a^T B_I - 1| exceeds this counts as failed
ILL_COEF = 1e6  # probe max|a| above this: ill-conditioned (float32 payload errors reach ~6%)


def frc_matrix(n: int, s: int) -> Tensor:
    """Fractional repetition B [n, n] (float64); needs (s+1) | n."""
    if n % (s + 1):
        raise ValueError(f"FRC needs (s+1) | n: s+1={s + 1} does not divide n={n}; use kind=crc or s+1 in "
                         f"{[d - 1 for d in range(2, n + 1) if n % d == 0][:6]}")
    g = torch.arange(n) // (s + 1)
    return (g[:, None] == g[None, :]).to(torch.float64)


def random_h(n: int, s: int, seed: int) -> Tensor:
    """Tandon's H [s, n]: Gaussian first n-1 columns, last = minus the row sums (H 1 = 0)."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(s, n - 1, generator=gen, dtype=torch.float64)
    return torch.cat([h, -h.sum(1, keepdim=True)], 1)


def crc_matrix(H: Tensor) -> Tensor:
    """Cyclic repetition B [n, n] from H [s, n] with H 1 = 0 (Tandon Alg. 2)."""
    H = H.to(torch.float64)
    s, n = H.shape
    i = torch.arange(n)
    others = (i[:, None] + torch.arange(1, s + 1)[None, :]) % n  # [n, s]: supp(B[i]) minus i
    B = torch.zeros(n, n, dtype=torch.float64)
    B[i, i] = 1.0
    if s:
        A = H[:, others].permute(1, 0, 2)  # [n, s, s]: H[:, supp - i] per row
        with single_thread():
            x = torch.linalg.solve(A, -H[:, i].T.unsqueeze(-1)).squeeze(-1)  # [n, s]
        B[i[:, None], others] = x
    return B


class Solution(NamedTuple):
    coef: tuple[float, ...]  # [n]; 0 for erased workers
    max_coef: float
    residual: float


def decode_coefficients(B: Tensor, erased: frozenset[int], s: Optional[int] = None) -> Solution:
    """a with a^T B_I = 1^T over survivors I, in float64.

    With ``s`` (the erasures the code survives), as the official ``find_coef``: the first n-s
    survivors, whose rows are generically independent, solved by QR (``gels``). Without it, or
    when those rows are rank-deficient (FRC, or an undecodable set): min-norm SVD least squares
    (``gelsd``) over all survivors. (Not ``gelsy``: in this torch build it misjudges the rank of
    some repeated-row matrices.) The residual max|a^T B_I - 1| says whether 1 was reached."""
    with single_thread():
        return _decode_coefficients(B, erased, s)


def _decode_coefficients(B: Tensor, erased: frozenset[int], s: Optional[int]) -> Solution:
    n = B.shape[0]
    surv = [i for i in range(n) if i not in erased]
    if not surv:
        return Solution((0.0,) * n, 0.0, 1.0)
    ones = torch.ones(n, 1, dtype=torch.float64)
    use = surv[: n - s] if s is not None else surv
    A = B[use].T  # [n parts, k survivors]
    a = None
    if s is not None:
        try:
            a = torch.linalg.lstsq(A, ones, driver="gels").solution[:, 0]  # [k]
        except torch.linalg.LinAlgError:  # rank-deficient rows
            a = None
        if a is not None and not (torch.isfinite(a).all() and float((A @ a - 1.0).abs().max()) <= DECODE_TOL):
            a = None
    if a is None:
        use = surv
        A = B[use].T
        a = torch.linalg.lstsq(A, ones, driver="gelsd").solution[:, 0]
    residual = float((A @ a - 1.0).abs().max())
    coef = [0.0] * n
    for i, v in zip(use, a.tolist()):
        coef[i] = v
    return Solution(tuple(coef), float(a.abs().max()), residual)


@dataclass(frozen=True)
class GradientCode:
    """The (n, s) code itself: supports, matrix, decoder (cached per erased set)."""

    n: int
    s: int
    kind: Literal["auto", "frc", "crc"] = "auto"
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.s < self.n:
            raise ValueError(f"an (n, s) gradient code needs 0 <= s < n: got n={self.n}, s={self.s}; try s={self.n - 1}")
        if self.kind == "frc" and self.n % (self.s + 1):
            frc_matrix(self.n, self.s)  # raises, naming the s that would work

    @property
    def resolved(self) -> str:
        if self.kind == "auto":
            return "frc" if self.n % (self.s + 1) == 0 else "crc"
        return self.kind

    def support(self, i: int) -> tuple[int, ...]:
        """The parts worker i touches (load (s+1)/n); needs no matrix."""
        if self.resolved == "frc":
            g = i // (self.s + 1)
            return tuple(range(g * (self.s + 1), (g + 1) * (self.s + 1)))
        return tuple((i + k) % self.n for k in range(self.s + 1))

    @cached_property
    def _built(self) -> tuple[Tensor, dict]:
        if self.resolved == "frc":
            return frc_matrix(self.n, self.s), {"kind": "frc", "seed": None, "probe_max_coef": 1.0,
                                                "probe_residual": 0.0, "ill_conditioned": False}
        best = None
        for seed in range(self.seed, self.seed + 4):  # a better-conditioned draw of H, if needed
            B = crc_matrix(random_h(self.n, self.s, seed))
            coef, res = self._probe(B)
            if best is None or (res > DECODE_TOL, coef) < (best[2] > DECODE_TOL, best[1]):
                best = (B, coef, res, seed)
            if res <= 1e-9 and coef <= ILL_COEF:
                break
        B, coef, res, seed = best
        frc_s = [d - 1 for d in range(self.s + 1, self.n + 1) if self.n % d == 0][:1]
        return B, {"kind": "crc", "seed": seed, "probe_max_coef": coef, "probe_residual": res,
                   "ill_conditioned": res > 1e-9 or coef > ILL_COEF,
                   "frc_alternative": f"s={frc_s[0]} (load {(frc_s[0] + 1) / self.n:.4g})" if frc_s else None}

    def _probe(self, B: Tensor) -> tuple[float, float]:
        """Worst max|a| and residual over s-sized erasure sets: contiguous blocks at 4 offsets
        (where cyclic supports overlap most) and 4 spread ones."""
        n, s = self.n, self.s
        sets = [frozenset((o + k) % n for k in range(s)) for o in range(0, n, max(1, n // 4))][:4]
        sets += [frozenset((o + k * (n // max(s, 1))) % n for k in range(s)) for o in range(4)]
        sols = [decode_coefficients(B, e, s) for e in sets]
        return max(x.max_coef for x in sols), max(x.residual for x in sols)

    @property
    def matrix(self) -> Tensor:
        return self._built[0]

    @property
    def conditioning(self) -> dict:
        return dict(self._built[1])

    @cached_property
    def rows(self) -> tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]:
        """Per worker (parts, coefficients) of its coded task."""
        if self.resolved == "frc":
            return tuple((self.support(i), (1.0,) * (self.s + 1)) for i in range(self.n))
        B = self.matrix
        return tuple((sup, tuple(B[i, list(sup)].tolist())) for i, sup in ((i, self.support(i)) for i in range(self.n)))

    @cached_property
    def _cache(self) -> dict:
        return {}

    def decode(self, erased: frozenset[int]) -> Optional[Solution]:
        """Decoding coefficients when the workers ``erased`` are missing; None if undecodable."""
        erased = frozenset(erased)
        if erased in self._cache:
            return self._cache[erased]
        if self.resolved == "frc":
            coef = [0.0] * self.n
            for g in range(0, self.n, self.s + 1):
                alive = next((i for i in range(g, g + self.s + 1) if i not in erased), None)
                if alive is None:
                    sol = None
                    break
                coef[alive] = 1.0
            else:
                sol = Solution(tuple(coef), 1.0, 0.0)
        else:
            sol = decode_coefficients(self.matrix, erased, self.s)
            sol = sol if sol.residual <= DECODE_TOL else None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[erased] = sol
        return sol

    def all_erasures(self, size: int | None = None):
        """Every erased set of ``size`` (default s) workers (for exhaustive checks)."""
        return (frozenset(c) for c in itertools.combinations(range(self.n), self.s if size is None else size))


class RoundState(NamedTuple):
    round: int


@dataclass(frozen=True)
class GC:
    """Plain gradient coding used round by round: job t is computed and decoded in round t
    (T = 0), any <= s stragglers per round. Options: ``gc:s=2[,kind=frc|crc|auto,seed=0]``."""

    n: Optional[int] = None
    s: Optional[int] = None
    kind: Literal["auto", "frc", "crc"] = "auto"
    seed: int = 0
    official_rule: bool = False  # admit only < s stragglers, as the official simulator (C9)

    name: ClassVar[str] = "gc"

    def __post_init__(self):
        check_workers(self.name, self.n)
        if self.s is None:
            raise ValueError(f"{self.name} needs s, the stragglers tolerated per round: e.g. 'gc:s=2' or --s 2")
        if not (isinstance(self.s, int) and 0 <= self.s < self.n):
            raise ValueError(f"{self.name} needs 0 <= s < n: got s={self.s} with n={self.n} workers; "
                             f"try s={max(0, min(self.n - 1, self.s if isinstance(self.s, int) else 1))}")
        if self.official_rule and self.s < 1:
            raise ValueError("official_rule admits < s stragglers: it needs s >= 1")
        GradientCode(self.n, self.s, self.kind, self.seed)  # validates kind against (n, s)

    @cached_property
    def code(self) -> GradientCode:
        return GradientCode(self.n, self.s, self.kind, self.seed)

    T: ClassVar[int] = 0
    results_per_round: ClassVar[int] = 1

    @property
    def load(self) -> float:
        return (self.s + 1) / self.n

    @property
    def tolerance(self) -> int:
        """Stragglers admitted in one round."""
        return self.s - 1 if self.official_rule else self.s

    @property
    def part_sizes(self) -> tuple[float, ...]:
        return (1.0 / self.n,) * self.n

    def init(self) -> RoundState:
        return RoundState(0)

    def admits(self, state: RoundState, stragglers: frozenset[int]) -> bool:
        return len(stragglers) <= self.tolerance

    def violation(self, state: RoundState, stragglers: frozenset[int]) -> str | None:
        if self.admits(state, stragglers):
            return None
        rule = "< s" if self.official_rule else "<= s"
        return f"round {state.round}: {len(stragglers)} stragglers, {self.name} admits {rule}={self.s}"

    def assign(self, state: RoundState) -> tuple[tuple[Task, ...], ...]:
        r = state.round
        return tuple((Task(r, ("row", i), *self.code.rows[i]),) for i in range(self.n))

    def step(self, state: RoundState, stragglers: frozenset[int]) -> tuple[RoundState, Outcome]:
        r = state.round
        if len(stragglers) <= self.s:  # the code decodes any s erasures, whatever the master admits
            return RoundState(r + 1), Outcome((Done(r, (frozenset(stragglers),)),), ())
        return RoundState(r + 1), Outcome((), (r,))

    def decoding(self, done: Done) -> Decoding:
        return decode_blocks(done.job, [("row",)], [self.code], done.erased)


@dataclass(frozen=True)
class Uncoded(GC):
    """No coding: worker i computes part i of job t; any straggler forces a wait (T = 0, load 1/n)."""

    s: int = field(default=0, init=False)
    kind: str = field(default="frc", init=False)
    seed: int = field(default=0, init=False)
    official_rule: bool = field(default=False, init=False)

    name: ClassVar[str] = "uncoded"


def decode_blocks(job: int, prefixes: list[tuple], codes: list[GradientCode],
                  erased: tuple[frozenset[int], ...], extra: tuple = ()) -> Decoding:
    """A Decoding from one GC decode per block: block b's coded results are keyed
    ``prefixes[b] + (worker,)``; ``extra`` terms (e.g. uncoded chunks) come first."""
    terms = list(extra)
    max_coef, residual = max((abs(c) for _, c in extra), default=0.0), 0.0
    for prefix, code, e in zip(prefixes, codes, erased):
        sol = code.decode(e)
        if sol is None:
            raise ValueError(f"job {job}: a block with erased workers {sorted(e)} is not decodable by the "
                             f"({code.n}, {code.s}) code; step() should not have reported it as done")
        terms += [(prefix + (i,), a) for i, a in enumerate(sol.coef) if a != 0.0]
        max_coef, residual = max(max_coef, sol.max_coef), max(residual, sol.residual)
    return Decoding(job, tuple(terms), max_coef, residual)
