"""The vocabulary every coding scheme speaks (specs/sgc.md sections 1 and 7).

A *job* t is one full gradient g(t) = sum_p g_p(t) over the job's data, split into parts p
whose sizes (fractions of the job) the scheme fixes. Job t starts in round t and must be
decodable by the end of round t+T. Each round every worker runs a few *tasks*; a task's
result is a linear combination of the job's partial gradients, named by a *key* that is
unique within the job (so a re-attempted task has the same key wherever it ran). A straggler's
whole output for the round is erased.

A scheme is a pure state machine; a training loop (or the straggler study) asks per round

  tasks = scheme.assign(state)                    # [n][slots] Task, from rounds < r only
  ok = scheme.admits(state, stragglers)           # the scheme's straggler model
  state, outcome = scheme.step(state, stragglers)  # record round r's erasures
  for done in outcome.decoded: scheme.decoding(done) -> coefficients on result keys

and combines the received results with ``combine``. ``step`` is token-level (sets of erased
workers, no vectors), so long runtime studies never touch tensors.
"""
from __future__ import annotations

from typing import Hashable, Mapping, NamedTuple, Protocol, Sequence

import torch
from torch import Tensor

from .._threads import single_thread

__all__ = ["Task", "Done", "Outcome", "Decoding", "Scheme", "encode", "encode_many", "combine", "check_workers",
           "single_thread"]


class Task(NamedTuple):
    """One task of one worker in one round: result = sum_k coeffs[k] * g[parts[k]] of job ``job``."""

    job: int
    key: tuple  # e.g. ("row", i) for GC rows, ("d1", i, c) / ("d2", g, i) for M-SGC
    parts: tuple[int, ...]  # indices into the job's parts
    coeffs: tuple[float, ...]


class Done(NamedTuple):
    """Job ``job`` became decodable at the end of this round. ``erased[b]``: the workers whose
    coded result of block b is absent (one block for GC and SR-SGC, B groups for M-SGC)."""

    job: int
    erased: tuple[frozenset[int], ...]


class Outcome(NamedTuple):
    decoded: tuple[Done, ...]  # jobs decodable now, first time
    failed: tuple[int, ...]  # jobs whose last chance (round t+T) passed undecodable


class Decoding(NamedTuple):
    """sum over terms of coef * result[key] = g(job), up to ``residual`` = max|a^T B - 1| of the
    worst GC block; ``max_coef`` = max |coef| (how much decoding amplifies payload rounding)."""

    job: int
    terms: tuple[tuple[tuple, float], ...]
    max_coef: float
    residual: float


class Scheme(Protocol):
    name: str
    n: int

    @property
    def T(self) -> int: ...  # decoding delay in rounds

    @property
    def load(self) -> float: ...  # fraction of one job's data a worker processes per round

    @property
    def results_per_round(self) -> int: ...  # result vectors a worker uploads per round

    @property
    def part_sizes(self) -> tuple[float, ...]: ...  # fractions of a job, sum to 1

    def init(self): ...

    def admits(self, state, stragglers: frozenset[int]) -> bool: ...

    def violation(self, state, stragglers: frozenset[int]) -> str | None: ...

    def assign(self, state) -> tuple[tuple[Task, ...], ...]: ...

    def step(self, state, stragglers: frozenset[int]) -> tuple[object, Outcome]: ...

    def decoding(self, done: Done) -> Decoding: ...


def check_workers(name: str, n) -> int:
    if n is None:
        raise ValueError(f"{name} needs the number of workers: add n=<workers> to the spec or pass --workers")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}: n (workers) must be an integer >= 1, got n={n!r}")
    return n


def encode(task: Task, partials: Tensor) -> Tensor:
    """A task's result from the job's partial gradients ``partials`` [P, d] -> [d]."""
    idx = torch.tensor(task.parts, dtype=torch.long)
    c = torch.tensor(task.coeffs, dtype=partials.dtype)
    return c @ partials.index_select(0, idx)


def encode_many(tasks: Sequence[Task], partials: Tensor) -> Tensor:
    """The results of several tasks of one job at once: C [k, P] @ partials [P, d] -> [k, d],
    C holding each task's coefficients on its parts (one matmul instead of k small ones)."""
    rows = [k for k, t in enumerate(tasks) for _ in t.parts]
    cols = [p for t in tasks for p in t.parts]
    vals = torch.tensor([c for t in tasks for c in t.coeffs], dtype=partials.dtype)
    with single_thread():
        C = torch.zeros(len(tasks), partials.shape[0], dtype=partials.dtype)
        C.index_put_((torch.tensor(rows), torch.tensor(cols)), vals, accumulate=True)
        return C @ partials


def combine(decoding: Decoding, results: Mapping[Hashable, Tensor]) -> Tensor:
    """The decoded job gradient: sum_k a_k * results[key_k], accumulated in place in the payload
    dtype (no [K, d] stack: at d = 10^6 and K ~ 500 that would be a 2 GB copy)."""
    (k0, a0), *rest = decoding.terms
    out = results[k0] * a0
    for key, a in rest:
        out.add_(results[key], alpha=a)
    return out
