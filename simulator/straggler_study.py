"""Replaying a straggler pattern or delay trace through a coding scheme (specs/sgc.md 6.2, 7).

The master's loop, exactly as the official replay does it, for rounds r = 0 .. J+T-1:

1. the master rule proposes the round's stragglers (pattern flags, or a deadline on durations);
2. if they keep the history inside the scheme's straggler model, their results are erased and
   the round ends at ``t_accept``; otherwise the master waits for everyone (a *wait-out*:
   nobody is erased, the round ends at ``t_wait``);
3. the scheme records the round; jobs that became decodable are decoded (numerically, on
   random partial gradients, when ``numeric``), jobs whose round t+T passed undecodable are
   *failures* (0 whenever the scheme's guarantee holds).

Runtime = the sum of round times. Departures: (spec 7.4) the loop stops as soon as every job
is resolved, so SR-SGC skips tail rounds when its last jobs decoded early (the official
"exemption" version did the same); GC and M-SGC always run J+T rounds. An admitted round
costs min(deadline, slowest) for every scheme (spec 6.2; the official GC replay does this,
its M-SGC and SR-SGC replays charge the full deadline even when everyone finished earlier).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import NamedTuple, Optional

import numpy as np
import torch

from distopt._spec import spec_of
from distopt.coding import combine, encode_many

from .stragglers import Deadline, Rounds, Sample, TimeModel

__all__ = ["JobRecord", "StudyResult", "replay", "simulate", "exhaustive", "Exhaustive", "force", "grid", "search"]


class JobRecord(NamedTuple):
    job: int
    decoded_round: Optional[int]  # None: failed
    correct: Optional[bool]  # decoded sum == true sum (None when not checked numerically)
    max_coef: float
    residual: float


@dataclasses.dataclass
class StudyResult:
    scheme: str
    n: int
    load: float
    T: int
    jobs: int
    rounds: int  # rounds actually run
    wait_outs: int
    failures: int
    runtime: float
    round_times: np.ndarray  # [rounds]
    records: list[JobRecord]

    def summary(self) -> dict:
        done = [r for r in self.records if r.decoded_round is not None]
        checked = [r for r in self.records if r.correct is not None]
        return {
            "scheme": self.scheme, "n": self.n, "load": self.load, "T": self.T, "jobs": self.jobs,
            "rounds": self.rounds, "wait_outs": self.wait_outs, "failures": self.failures, "runtime": self.runtime,
            "decoded": len(done), "checked": len(checked), "correct": sum(bool(r.correct) for r in checked),
            "max_delay": max((r.decoded_round - r.job for r in done), default=None),
            "max_coef": max((r.max_coef for r in checked), default=None),
            "max_residual": max((r.residual for r in checked), default=None),
        }


def _jobs_for(scheme, available: int, jobs: Optional[int]) -> int:
    most = available - scheme.T
    if jobs is None:
        jobs = most
    if most < 1 or not 1 <= jobs <= most:
        raise ValueError(f"{spec_of(scheme)} (T={scheme.T}) needs J+T rounds for J jobs: {available} rounds give at "
                         f"most {max(most, 0)} jobs, asked {jobs}; give more rounds or fewer jobs")
    return jobs


def replay(scheme, rounds: Rounds, jobs: Optional[int] = None, *, numeric: bool = False, d: int = 4,
           seed: int = 0, progress: bool = False) -> StudyResult:
    """Run the master loop over ``rounds`` (flags, round times) for ``jobs`` jobs (default R-T)."""
    n_rounds, n = rounds.flags.shape
    if n != scheme.n:
        raise ValueError(f"the pattern has {n} workers but {spec_of(scheme)} has n={scheme.n}")
    J = _jobs_for(scheme, n_rounds, jobs)
    sets = [frozenset(np.flatnonzero(row).tolist()) for row in rounds.flags[: J + scheme.T]]
    n_parts = len(scheme.part_sizes) if numeric else 0
    partials: dict[int, torch.Tensor] = {}  # job -> [P, d] random partial gradients
    results: dict[int, dict] = {}  # job -> {result key: [d]}
    records: dict[int, JobRecord] = {}
    times, wait_outs, failures = [], 0, 0
    state = scheme.init()
    it = range(J + scheme.T)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=spec_of(scheme), leave=False)
    for r in it:
        S = sets[r]
        if S and not scheme.admits(state, S):
            S, wait_outs = frozenset(), wait_outs + 1
            times.append(rounds.t_wait[r])
        else:
            times.append(rounds.t_accept[r])
        if numeric:  # the received results, computed per job in one matmul
            by_job: dict[int, list] = {}
            for i, tasks in enumerate(scheme.assign(state)):
                if i not in S:  # a straggler's whole output is erased
                    for task in tasks:
                        if task.job < J:
                            by_job.setdefault(task.job, []).append(task)
            for job, tasks in by_job.items():
                if job not in partials:
                    partials[job] = torch.from_numpy(np.random.default_rng([seed, job]).standard_normal((n_parts, d)))
                got = results.setdefault(job, {})
                got.update(zip((t.key for t in tasks), encode_many(tasks, partials[job])))
        state, out = scheme.step(state, S)
        for job in out.failed:
            if job < J:
                failures += 1
                records[job] = JobRecord(job, None, False if numeric else None, 0.0, 0.0)
        for done in out.decoded:
            if done.job < J:  # token-level runs skip the coefficients (a least squares per job)
                records[done.job] = (_decode(scheme, done, r, partials, results) if numeric
                                     else JobRecord(done.job, r, None, float("nan"), float("nan")))
        for job in [j for j in partials if j in records]:
            partials.pop(job), results.pop(job, None)
        if len(records) == J:
            break
    return StudyResult(spec_of(scheme), scheme.n, scheme.load, scheme.T, J, len(times), wait_outs, failures,
                       float(np.sum(times)), np.asarray(times), [records[j] for j in sorted(records)])


def _decode(scheme, done, r, partials, results) -> JobRecord:
    try:
        dec = scheme.decoding(done)
    except ValueError:  # token-level decodable but numerically not (an ill-conditioned code)
        return JobRecord(done.job, r, False, float("inf"), float("inf"))
    truth = partials[done.job].sum(0)
    got = combine(dec, results.get(done.job, {})) if all(k in results.get(done.job, {}) for k, _ in dec.terms) else None
    ok = got is not None and float((got - truth).abs().max()) <= 1e-6 * max(1.0, float(truth.abs().max()))
    return JobRecord(done.job, r, ok, dec.max_coef, dec.residual)


def simulate(scheme, sample: Sample, *, time: TimeModel = TimeModel(), rule=Deadline(), jobs: Optional[int] = None,
             **kwargs) -> StudyResult:
    """Durations under the time model at the scheme's load -> the master rule -> ``replay``."""
    d = time.durations(sample.base, scheme.load, scheme.results_per_round)
    return replay(scheme, rule.decide(d, sample.flags, scheme.tolerance), jobs, **kwargs)


class Exhaustive(NamedTuple):
    patterns: int  # straggler patterns of `rounds` rounds the scheme's model admits
    failing: int  # of those, patterns in which some job failed to decode by t+T


def exhaustive(scheme, rounds: int) -> Exhaustive:
    """Every admitted pattern of ``rounds`` rounds (history empty before round 0), by depth-first
    search sharing prefixes; the scheme state is advanced once per prefix (check C5/C7)."""
    subsets = [frozenset(c) for k in range(scheme.n + 1) for c in itertools.combinations(range(scheme.n), k)]
    count = failing = 0
    stack = [(scheme.init(), 0, False)]
    while stack:
        state, depth, failed = stack.pop()
        if depth == rounds:
            count, failing = count + 1, failing + failed
            continue
        for S in subsets:
            if scheme.admits(state, S):
                nxt, out = scheme.step(state, S)
                stack.append((nxt, depth + 1, failed or bool(out.failed)))
    return Exhaustive(count, failing)


def force(scheme, pattern) -> tuple[list[int], list[int]]:
    """Apply a pattern without the master's check (negative controls): (decoded jobs, failed jobs)."""
    state, decoded, failed = scheme.init(), [], []
    for row in pattern:
        state, out = scheme.step(state, frozenset(row))
        decoded += [d.job for d in out.decoded]
        failed += list(out.failed)
    return decoded, failed


def grid(family: str, n: int, max_T: int = 4, max_lam: int = 64, max_x: int = 4, lam_step: int = 1) -> list[str]:
    """Parameter grid of a family as spec strings (spec 6.2: T <= max_T; lam, s < n).

    gc: s = 1..max_lam; m-sgc: W-2+B <= max_T; sr-sgc: B <= max_T, W = xB+1 with x <= max_x."""
    lams = range(1, min(max_lam, n - 1) + 1, lam_step)
    if family == "uncoded":
        return ["uncoded"]
    if family == "gc":
        return [f"gc:s={s}" for s in lams]
    if family == "m-sgc":
        return [f"m-sgc:B={B},W={W},lam={lam}" for lam in lams for B in range(1, max_T + 1)
                for W in range(B + 1, max_T + 3 - B)]
    if family == "sr-sgc":
        return [f"sr-sgc:B={B},W={x * B + 1},lam={lam}" for lam in lams for B in range(1, max_T + 1)
                for x in range(1, max_x + 1)]
    raise ValueError(f"unknown family {family!r}; valid: uncoded, gc, sr-sgc, m-sgc")


def search(specs: list[str], n: int, sample: Sample, *, jobs: int, time: TimeModel = TimeModel(),
           rule=Deadline(), progress: bool = False) -> list[dict]:
    """Token-level runtime of every spec on one sample, fastest first (the official argmin)."""
    from distopt.coding import make

    rows = []
    it = specs
    if progress:
        from tqdm import tqdm
        it = tqdm(specs, desc="search", leave=False)
    for spec in it:
        res = simulate(make(spec, n=n), sample, time=time, rule=rule, jobs=jobs)
        rows.append({"spec": spec, "runtime": res.runtime, "wait_outs": res.wait_outs, "failures": res.failures,
                     "load": res.load, "T": res.T})
    return sorted(rows, key=lambda r: (r["runtime"], r["spec"]))
