"""The master's waiting rules on real processes: ``simulator.stragglers``' rules applied online
to measured arrival times (specs/sgc.md 6.2), with ``ray.wait``.

For a round dispatched at ``t0`` (times in seconds since ``t0``):

* no rule (no injected delays): wait for everyone;
* ``pattern`` (a flagging model): the model's stragglers are the candidates; the round ends
  when the last of the others arrives;
* ``deadline:mu``: the candidates are whoever has not arrived by (1+mu) x the first arrival;
* ``timeout:t``: ... by t seconds;
* ``fastest:k``: everyone but the first k to arrive.

A worker whose actor died (an error instead of a reply) is a candidate too. If the driver
cannot admit the candidates (``admit``: a code's straggler model; round 0), the round is a
wait-out: the master waits for everyone still running, and the round ends at the last arrival.
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional

import ray

from simulator.stragglers import Deadline, Fastest, Given, Timeout

__all__ = ["Gathered", "gather", "wait_all", "finish"]


class Gathered(NamedTuple):
    got: dict  # worker -> reply (arrived)
    dead: dict  # worker -> the error its actor died with
    running: dict  # worker -> ObjectRef still in flight
    candidates: frozenset[int]  # proposed stragglers (not yet admitted)
    seconds: float  # since t0, when the rule decided


def _take(pending: dict, got: dict, dead: dict, ready) -> None:
    for ref in ready:
        w = pending.pop(ref)
        try:
            got[w] = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
            dead[w] = e


def _wait(pending: dict, got: dict, dead: dict, until: Optional[float], enough: Callable[[], bool]) -> None:
    """Collect arrivals until ``enough()`` or the absolute time ``until`` (perf_counter)."""
    while pending and not enough():
        timeout = None if until is None else until - time.perf_counter()
        if timeout is not None and timeout <= 0:
            return
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        _take(pending, got, dead, ready)


def wait_all(refs: dict, t0: float) -> Gathered:
    """Everyone's reply (the fast path without delays: one ``ray.wait`` for all)."""
    pending = {ref: w for w, ref in refs.items()}
    got: dict = {}
    dead: dict = {}
    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=None)
    _take(pending, got, dead, ready)
    return Gathered(got, dead, {}, frozenset(dead), time.perf_counter() - t0)


def gather(refs: dict, t0: float, rule=None, flagged: Optional[frozenset[int]] = None, tolerance: int = 0) -> Gathered:
    """Arrivals of one round under ``rule`` (a ``simulator.stragglers`` rule or None)."""
    if rule is None:
        return wait_all(refs, t0)
    pending = {ref: w for w, ref in refs.items()}
    got: dict = {}
    dead: dict = {}
    if isinstance(rule, Given):
        others = set(refs) - (flagged or frozenset())
        _wait(pending, got, dead, None, lambda: others <= set(got) | set(dead))
        cand = frozenset(flagged or ()) & set(refs)
    elif isinstance(rule, Deadline):
        _wait(pending, got, dead, None, lambda: bool(got))
        first = time.perf_counter() - t0
        _wait(pending, got, dead, t0 + (1.0 + rule.mu) * first, lambda: False)
        cand = frozenset(refs) - set(got)
    elif isinstance(rule, Timeout):
        _wait(pending, got, dead, t0 + rule.t, lambda: False)
        cand = frozenset(refs) - set(got)
    elif isinstance(rule, Fastest):
        k = rule.k if rule.k is not None else len(refs) - tolerance
        _wait(pending, got, dead, None, lambda: len(got) >= k)
        cand = frozenset(refs) - set(got)
    else:
        raise ValueError(f"no online version of master rule {type(rule).__name__}")
    seconds = time.perf_counter() - t0
    return Gathered(got, dead, {w: ref for ref, w in pending.items()}, cand | frozenset(dead), seconds)


def finish(g: Gathered, t0: float) -> Gathered:
    """A wait-out: wait for every worker still running."""
    pending = {ref: w for w, ref in g.running.items()}
    got, dead = dict(g.got), dict(g.dead)
    _wait(pending, got, dead, None, lambda: False)
    return Gathered(got, dead, {}, frozenset(dead), time.perf_counter() - t0)
