"""The clock of a training run under a straggler or delay model (specs/sgc.md sections 6.2 and 7).

One sample of the model for the whole run, drawn from the run's seed: ``base [R, n]`` seconds
(and, for flagging models, the model's stragglers ``flags [R, n]``). A worker's round takes

    d[r, i] = scale * (base[r, i] + c * load + comm * results)          (TimeModel, spec 7.1)

seconds, ``load`` the fraction of one job's data it processes (1/n without a code) and
``results`` the vectors it uploads. In the simulator these are the round's durations; on Ray
each actor sleeps until d[r, i] has passed since its task started (compute included), so a study
measures real wall-clock under a known model and the simulator predicts it from the same sample.

The master rule turns a round's durations into candidate stragglers (``simulator.stragglers``:
relative deadline, timeout, fastest-k, or the model's flags); a candidate set the run cannot
admit (a code's straggler model; round 0, where every worker must initialise) is *waited out*:
nobody is erased and the round lasts until the slowest worker. ``decide`` is that rule for one
simulated round; the Ray executor applies the same rule online, on measured arrival times.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional

import numpy as np

from distopt._spec import spec_of

from .stragglers import Given, TimeModel, make_model, make_rule

__all__ = ["Decision", "StragglerClock", "make_clock"]

FLAGGING = ("bernoulli", "gilbert-elliott", "bursty")  # models that say who straggles


class Decision(NamedTuple):
    """What the master decided for one round."""

    stragglers: frozenset[int]  # erased workers (empty in a wait-out)
    seconds: float  # the round's duration
    waited_out: bool  # the candidates broke the admissible set: the master waited for everyone
    candidates: frozenset[int] = frozenset()  # what the rule proposed (== stragglers unless waited out)


@dataclasses.dataclass
class StragglerClock:
    """A straggler/delay model sampled for ``rounds`` rounds of ``n`` workers, a master rule and
    the time model. Build with :func:`make_clock` (it validates the specs)."""

    model: object
    rule: object
    time: TimeModel
    scale: float
    n: int
    rounds: int
    seed: int

    def __post_init__(self):
        if not (self.scale > 0 and np.isfinite(self.scale)):
            raise ValueError(f"--delay-scale must be a positive number of seconds per model second, got {self.scale}")
        sample = self.model.sample(self.n, self.rounds, self.seed)
        self.base = sample.base  # [R, n] seconds at zero load (model units)
        self.flags = sample.flags  # [R, n] bool or None

    @property
    def spec(self) -> dict:
        return {"delays": spec_of(self.model), "master": spec_of(self.rule), "delay_scale": self.scale,
                "c": self.time.c, "comm": self.time.comm, "delay_seed": self.seed}

    def _row(self, r: int) -> int:
        if not 0 <= r < self.rounds:
            raise ValueError(f"round {r} is beyond the {self.rounds} rounds the delay model was sampled for")
        return r

    def durations(self, r: int, load: float, results: int) -> np.ndarray:
        """Seconds each worker's round-r task takes, ``[n]``."""
        return self.scale * self.time.durations(self.base[self._row(r)], load, results)

    def flagged(self, r: int) -> Optional[frozenset[int]]:
        """The model's stragglers of round r (flagging models under the ``pattern`` rule), else None."""
        if not isinstance(self.rule, Given) or self.flags is None:
            return None
        return frozenset(np.flatnonzero(self.flags[self._row(r)]).tolist())

    def decide(self, r: int, load: float, results: int, admit: Callable[[frozenset[int]], bool],
               tolerance: int = 0) -> Decision:
        """The master's decision for simulated round r (spec 6.2): the rule's candidates if
        ``admit`` accepts them (round time t_accept), else a wait-out (t_wait, nobody erased)."""
        d = self.durations(r, load, results)[None, :]
        flags = self.flags[r][None, :] if self.flags is not None else None
        rounds = self.rule.decide(d, flags, tolerance)
        cand = frozenset(np.flatnonzero(rounds.flags[0]).tolist())
        if cand and not admit(cand):
            return Decision(frozenset(), float(rounds.t_wait[0]), True, cand)
        return Decision(cand, float(rounds.t_accept[0]), False, cand)


def make_clock(delays: str, master: Optional[str], n: int, rounds: int, seed: int, scale: float = 1.0,
               c: float = 2.2, comm: float = 0.0) -> StragglerClock:
    """``delays``: a straggler or delay model spec (``gilbert-elliott:p=0.1,q=0.5``,
    ``lambda-like``, ...); ``master``: a rule spec, default ``pattern`` for flagging models
    (bernoulli, gilbert-elliott, bursty) and ``deadline:mu=1`` for delay models."""
    model = make_model(delays)
    flagging = getattr(model, "name", "") in FLAGGING
    rule = make_rule(master or ("pattern" if flagging else "deadline:mu=1"))
    if isinstance(rule, Given) and not flagging:
        raise ValueError(f"master rule 'pattern' needs a flagging model ({', '.join(FLAGGING)}); "
                         f"{spec_of(model)} only gives durations: use --master deadline:mu=1 (or timeout:t=.., fastest:k=..)")
    if c < 0 or comm < 0:
        raise ValueError(f"the time model needs c >= 0 and comm >= 0 seconds, got c={c}, comm={comm}")
    return StragglerClock(model, rule, TimeModel(c=c, comm=comm), float(scale), n, rounds, seed)
