"""Straggler models, traces, the time model and the master's waiting rules (specs/sgc.md
sections 3, 6.2 and 7).

Everything is an array over (round, worker): ``[R, n]``, row r = round r.

* **Straggler patterns** (bool, True = straggles): Bernoulli, Gilbert-Elliott (per worker
  a 2-state chain, P(G->B) = p, P(B->G) = q; stationary start), and GE proposals thinned
  greedily to the (B, W, lam) model (random visiting order, spec section 3). A flagged
  worker's base duration is multiplied by ``slowdown``; every base duration has lognormal
  jitter ``sigma`` (median 1 s).
* **Delay models** (seconds, no flags; the master rule decides): shifted exponential,
  lognormal, a synthetic Lambda-like trace, or a replayed trace (CSV).
* **Time model**: d[r, i] = base[r, i] + c * load (+ comm * results per round): M-SGC uploads
  W-1+B results per round, GC and SR-SGC one; the official traces billed neither.
* **Master rules** (``[R, n]`` durations -> candidate stragglers, round time if admitted, round
  time if waited out): relative deadline (1+mu) x fastest (the paper's), fixed timeout,
  fastest-k, or ``pattern`` (the flags given are the stragglers: pattern files).

Every draw comes from ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, NamedTuple, Optional

import numpy as np

from distopt._spec import build
from distopt.coding.model import Bursty, admits, push, window

__all__ = ["Sample", "Rounds", "TimeModel", "read_pattern", "read_trace", "to_csv", "gilbert_elliott", "thin",
           "STRAGGLER_MODELS", "MASTER_RULES", "make_model", "make_rule", "straggler_stats"]


class Sample(NamedTuple):
    base: np.ndarray  # [R, n] seconds at zero load
    flags: Optional[np.ndarray]  # [R, n] bool, the model's stragglers (None: the rule decides)


class Rounds(NamedTuple):
    """What the master sees per round."""

    flags: np.ndarray  # [R, n] bool: candidate stragglers
    t_accept: np.ndarray  # [R] round time if the candidates are admitted (their results erased)
    t_wait: np.ndarray  # [R] round time if the master waits for everyone (a wait-out)


# ---------------------------------------------------------------- files ---------------------


def _read_rows(path, n: Optional[int], what: str, parse) -> np.ndarray:
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read {what} file {str(path)!r}: {e.strerror}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{path}: the {what} file is empty; write one row per round, one comma-separated value "
                         f"per worker, no header")
    rows = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"{path} line {no}: empty line; every round needs one value per worker")
        cells = [c.strip() for c in line.split(",")]
        width = n if n is not None else len(rows[0]) if rows else None
        if width is not None and len(cells) != width:
            src = "--workers" if n is not None else "line 1"
            raise ValueError(f"{path} line {no}: {len(cells)} values, expected {width} (one per worker, as {src} says)")
        rows.append([parse(c, no, path) for c in cells])
    return np.array(rows)


def _bit(cell: str, no: int, path) -> bool:
    if cell not in ("0", "1"):
        raise ValueError(f"{path} line {no}: {cell!r} is not 0 or 1 (1 = the worker straggles that round)")
    return cell == "1"


def _seconds(cell: str, no: int, path) -> float:
    try:
        v = float(cell)
    except ValueError:
        raise ValueError(f"{path} line {no}: {cell!r} is not a duration in seconds") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{path} line {no}: duration {cell!r} must be finite and >= 0")
    return v


def read_pattern(path, n: Optional[int] = None) -> np.ndarray:
    """A pattern CSV: no header, one row per round, one 0/1 column per worker -> bool [R, n]."""
    return _read_rows(path, n, "pattern", _bit).astype(bool)


def read_trace(path, n: Optional[int] = None) -> np.ndarray:
    """A trace CSV: no header, one row per round, one duration (s) per worker -> float [R, n]."""
    return _read_rows(path, n, "trace", _seconds).astype(np.float64)


def to_csv(a: np.ndarray) -> str:
    """The text of a pattern (bool [R, n]) or trace (float [R, n]) CSV."""
    fmt = (lambda v: "1" if v else "0") if a.dtype == bool else (lambda v: f"{v:.6g}")
    return "\n".join(",".join(fmt(v) for v in row) for row in a) + "\n"


# ---------------------------------------------------------------- patterns ------------------


def gilbert_elliott(n: int, rounds: int, p: float, q: float, rng: np.random.Generator) -> np.ndarray:
    """Per-worker 2-state Markov chains, bool [R, n] (True = bad). Start: stationary, p/(p+q)."""
    if not (0 <= p <= 1 and 0 < q <= 1):
        raise ValueError(f"gilbert-elliott needs 0 <= p <= 1 and 0 < q <= 1 (P(G->B)=p, P(B->G)=q), got p={p}, q={q}")
    u = rng.random((rounds, n))
    bad = np.empty((rounds, n), dtype=bool)
    state = u[0] < p / (p + q)
    bad[0] = state
    for r in range(1, rounds):
        state = np.where(state, u[r] >= q, u[r] < p)
        bad[r] = state
    return bad


def thin(flags: np.ndarray, model: Bursty, rng: np.random.Generator) -> np.ndarray:
    """Greedy thinning to the (B, W, lam) model: visit each round's proposed stragglers in random
    order and keep one only if conditions (i) and (ii) still hold (spec section 3)."""
    out = np.zeros_like(flags, dtype=bool)
    recent: tuple = ()
    for r in range(flags.shape[0]):
        w = window(recent, model, r)
        kept: frozenset[int] = frozenset()
        for i in rng.permutation(np.flatnonzero(flags[r])):
            cand = kept | {int(i)}
            if admits(w, cand, model):
                kept = cand
        out[r, list(kept)] = True
        recent = push(recent, kept, model.W)
    return out


def _jittered(flags: np.ndarray, slowdown: float, sigma: float, rng) -> np.ndarray:
    base = np.exp(sigma * rng.standard_normal(flags.shape)) if sigma > 0 else np.ones(flags.shape)
    return np.where(flags, slowdown * base, base)


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    """Each worker straggles each round independently with probability p."""

    p: float
    slowdown: float = 3.0
    sigma: float = 0.0
    name: ClassVar[str] = "bernoulli"

    def sample(self, n: int, rounds: int, seed: int) -> Sample:
        if not 0 <= self.p <= 1:
            raise ValueError(f"bernoulli needs 0 <= p <= 1, got p={self.p}")
        rng = np.random.default_rng(seed)
        flags = rng.random((rounds, n)) < self.p
        return Sample(_jittered(flags, self.slowdown, self.sigma, rng), flags)


@dataclasses.dataclass(frozen=True)
class GilbertElliott:
    """Gilbert-Elliott: P(good->bad) = p, P(bad->good) = q; mean burst 1/q, bad fraction p/(p+q)."""

    p: float
    q: float
    slowdown: float = 3.0
    sigma: float = 0.0
    name: ClassVar[str] = "gilbert-elliott"

    def sample(self, n: int, rounds: int, seed: int) -> Sample:
        rng = np.random.default_rng(seed)
        flags = gilbert_elliott(n, rounds, self.p, self.q, rng)
        return Sample(_jittered(flags, self.slowdown, self.sigma, rng), flags)


@dataclasses.dataclass(frozen=True)
class BurstyGE:
    """Gilbert-Elliott proposals thinned to conform to the (B, W, lam) model."""

    B: int
    W: int
    lam: int
    p: float
    q: float
    slowdown: float = 3.0
    sigma: float = 0.0
    name: ClassVar[str] = "bursty"

    def sample(self, n: int, rounds: int, seed: int) -> Sample:
        rng = np.random.default_rng(seed)
        flags = thin(gilbert_elliott(n, rounds, self.p, self.q, rng), Bursty(self.B, self.W, self.lam), rng)
        return Sample(_jittered(flags, self.slowdown, self.sigma, rng), flags)


@dataclasses.dataclass(frozen=True)
class ShiftedExp:
    """d = shift + Exp(mean): the classic straggler delay (no flags; the master rule decides)."""

    shift: float = 1.0
    mean: float = 0.5
    name: ClassVar[str] = "shifted-exp"

    def sample(self, n: int, rounds: int, seed: int) -> Sample:
        return Sample(self.shift + np.random.default_rng(seed).exponential(self.mean, (rounds, n)), None)


@dataclasses.dataclass(frozen=True)
class LogNormal:
    """d = median * exp(sigma * N(0, 1)) (no flags)."""

    median: float = 1.0
    sigma: float = 0.3
    name: ClassVar[str] = "lognormal"

    def sample(self, n: int, rounds: int, seed: int) -> Sample:
        return Sample(self.median * np.exp(self.sigma * np.random.default_rng(seed).standard_normal((rounds, n))), None)


@dataclasses.dataclass(frozen=True)
class LambdaLike:
    """A synthetic stand-in for the paper's AWS Lambda traces (which were never published,
    spec 6.4), calibrated to the statistics of the small public probe (spec C10): median base
    ``a`` = 0.71 s with lognormal body ``sigma``, so that at zero load a (1+mu) x fastest
    deadline flags ~10 workers of 256 per round, mostly isolated; plus Gilbert-Elliott slow
    episodes (cold hosts: P(G->B) = p, P(B->G) = q) that multiply the time by 1 + Exp(mean
    ``slowdown`` - 1). No flags: the master rule decides."""

    a: float = 0.71
    sigma: float = 0.15
    p: float = 0.004
    q: float = 0.6
    slowdown: float = 3.0
    name: ClassVar[str] = "lambda-like"

    def sample(self, n: int, rounds: int, seed: int) -> Sample:
        rng = np.random.default_rng(seed)
        body = self.a * np.exp(self.sigma * rng.standard_normal((rounds, n)))
        slow = gilbert_elliott(n, rounds, self.p, self.q, rng)
        factor = 1.0 + rng.exponential(self.slowdown - 1.0, (rounds, n))
        return Sample(np.where(slow, body * factor, body), None)


STRAGGLER_MODELS: dict[str, type] = {
    "bernoulli": Bernoulli,
    "gilbert-elliott": GilbertElliott,
    "bursty": BurstyGE,
    "shifted-exp": ShiftedExp,
    "lognormal": LogNormal,
    "lambda-like": LambdaLike,
}


def make_model(spec):
    """E.g. ``gilbert-elliott:p=0.02,q=0.5``, ``bursty:B=1,W=2,lam=2,p=0.1,q=0.8``, ``lambda-like``."""
    return build(STRAGGLER_MODELS, spec, "straggler model")


# ---------------------------------------------------------------- time model ----------------


@dataclasses.dataclass(frozen=True)
class TimeModel:
    """d = base + c * load + comm * results_per_round (seconds). c: seconds per unit of
    normalized load (2.2 s fitted on Lambda at batch 4096, spec 6.2); comm: seconds per result
    vector uploaded (0 = the paper's accounting, which billed none)."""

    c: float = 2.2
    comm: float = 0.0

    def durations(self, base: np.ndarray, load: float, results: int) -> np.ndarray:
        return base + (self.c * load + self.comm * results)


# ---------------------------------------------------------------- master rules --------------


def _max_unflagged(d: np.ndarray, flags: np.ndarray) -> np.ndarray:
    m = np.where(flags, -np.inf, d).max(1)
    return np.where(np.isfinite(m), m, d.max(1))


@dataclasses.dataclass(frozen=True)
class Deadline:
    """The paper's rule: stragglers = slower than (1+mu) x the fastest; an admitted round ends at
    min(deadline, slowest)."""

    mu: float = 1.0
    name: ClassVar[str] = "deadline"

    def decide(self, d: np.ndarray, flags=None, k_default: int = 0) -> Rounds:
        dl = (1.0 + self.mu) * d.min(1)
        return Rounds(d > dl[:, None], np.minimum(dl, d.max(1)), d.max(1))


@dataclasses.dataclass(frozen=True)
class Timeout:
    """A fixed timeout t (seconds): stragglers = slower than t."""

    t: float
    name: ClassVar[str] = "timeout"

    def decide(self, d: np.ndarray, flags=None, k_default: int = 0) -> Rounds:
        return Rounds(d > self.t, np.minimum(self.t, d.max(1)), d.max(1))


@dataclasses.dataclass(frozen=True)
class Fastest:
    """Wait for the fastest k workers (default n - the scheme's per-round tolerance)."""

    k: Optional[int] = None
    name: ClassVar[str] = "fastest"

    def decide(self, d: np.ndarray, flags=None, k_default: int = 0) -> Rounds:
        n = d.shape[1]
        k = self.k if self.k is not None else n - k_default
        if not 1 <= k <= n:
            raise ValueError(f"fastest:k={k} must be in 1..n={n}")
        order = np.argsort(d, axis=1, kind="stable")
        flags = np.zeros_like(d, dtype=bool)
        np.put_along_axis(flags, order[:, k:], True, axis=1)
        return Rounds(flags, np.take_along_axis(d, order[:, k - 1:k], 1)[:, 0], d.max(1))


@dataclasses.dataclass(frozen=True)
class Given:
    """The stragglers are the model's (or pattern file's) flags; an admitted round ends when the
    last non-straggler finishes."""

    name: ClassVar[str] = "pattern"

    def decide(self, d: np.ndarray, flags=None, k_default: int = 0) -> Rounds:
        if flags is None:
            raise ValueError("master rule 'pattern' needs a straggler pattern or a flagging model "
                             "(bernoulli, gilbert-elliott, bursty); use deadline:mu=1 for delay models and traces")
        return Rounds(flags, _max_unflagged(d, flags), d.max(1))


MASTER_RULES: dict[str, type] = {"deadline": Deadline, "timeout": Timeout, "fastest": Fastest, "pattern": Given}


def make_rule(spec):
    """E.g. ``deadline:mu=1`` (the paper's), ``timeout:t=2.5``, ``fastest:k=200``, ``pattern``."""
    return build(MASTER_RULES, spec, "master rule")


def straggler_stats(flags: np.ndarray) -> dict:
    """Stragglers per round (median, min, max) and the histogram of burst lengths."""
    per_round = flags.sum(1)
    bursts: dict[int, int] = {}
    for col in flags.T.astype(np.int8):
        edges = np.diff(np.concatenate([[0], col, [0]]))
        for length in np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1):
            bursts[int(length)] = bursts.get(int(length), 0) + 1
    return {"median": float(np.median(per_round)), "min": int(per_round.min()), "max": int(per_round.max()),
            "bursts": dict(sorted(bursts.items()))}
