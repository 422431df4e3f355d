"""The (B, W, lambda)-bursty straggler model of sequential gradient coding.

Krishnan, Ebrahimi, Khisti, "Sequential Gradient Coding for Straggler Mitigation"
(arXiv 2211.13802); specs/sgc.md section 3. In every window of W consecutive rounds

  (i)  spatial:  at most ``lam`` distinct workers straggle;
  (ii) temporal: each worker's straggling rounds fit in one run of at most B consecutive
       rounds (1 <= B < W).

The check is incremental, exactly as the official simulators do it: a candidate straggler
set S for round r is admitted iff

  (i)  |S u {i : i straggled in rounds r-W+1 .. r-1}| <= lam, and
  (ii) no i in S straggled in rounds r-W+1 .. r-B.

Checking only the windows that end at the current round suffices (take the window ending at
the last straggle of any window). History before round 0 is empty.

SR-SGC's *relaxed* check (the official code's "exemption", spec section 4 and check C7):
past rounds that had <= s stragglers and no repetitions are left out of both window counts.
The caller says which past rounds are exempt.

Pure functions of explicit state; straggler sets are ``frozenset[int]`` of worker indices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

__all__ = ["Bursty", "Window", "window", "admits", "violation", "push", "first_violation"]


@dataclass(frozen=True)
class Bursty:
    """Parameters of the (B, W, lambda)-bursty model; fails at construction with the fix."""

    B: int
    W: int
    lam: int

    def __post_init__(self):
        if not (isinstance(self.B, int) and self.B >= 1):
            raise ValueError(f"B (the longest burst, in rounds) must be an integer >= 1, got B={self.B!r}")
        if not (isinstance(self.W, int) and self.W > self.B):
            raise ValueError(f"the (B, W, lam) model needs 1 <= B < W: got B={self.B}, W={self.W}; try W={self.B + 1}")
        if not (isinstance(self.lam, int) and self.lam >= 1):
            raise ValueError(f"lam (stragglers per window) must be an integer >= 1, got lam={self.lam!r}")


class Window(NamedTuple):
    """What the last W-1 rounds allow in the current round r."""

    seen: frozenset[int]  # workers counted in rounds r-W+1 .. r-1 (spatial condition)
    blocked: frozenset[int]  # workers that straggled in rounds r-W+1 .. r-B: may not straggle now
    first: int  # the round index of recent[0] (for messages)


def window(recent: Sequence[frozenset[int]], model: Bursty, round_: int,
           exempt: Sequence[bool] | None = None) -> Window:
    """The window before round ``round_``. ``recent``: the straggler sets of the last
    ``min(round_, W-1)`` rounds, oldest first; ``exempt[k]``: leave ``recent[k]`` out (relaxed)."""
    k = len(recent)
    if k > model.W - 1:
        raise ValueError(f"window: pass the last W-1={model.W - 1} rounds, got {k}")
    keep = [S for j, S in enumerate(recent) if not (exempt and exempt[j])]
    # rounds r-W+1 .. r-B are recent[: k-(B-1)]: the last B-1 rounds may continue a burst
    cut = k - (model.B - 1)
    old = [S for j, S in enumerate(recent[:max(cut, 0)]) if not (exempt and exempt[j])]
    return Window(frozenset().union(*keep), frozenset().union(*old), round_ - k)


def admits(w: Window, stragglers: frozenset[int], model: Bursty) -> bool:
    """Conditions (i) and (ii) for the candidate set ``stragglers`` of the current round."""
    return w.blocked.isdisjoint(stragglers) and len(w.seen | stragglers) <= model.lam


def violation(w: Window, stragglers: frozenset[int], model: Bursty, round_: int) -> str | None:
    """Why ``stragglers`` in round ``round_`` break the model (None when admitted)."""
    again = sorted(w.blocked & stragglers)
    if again:
        return (f"round {round_}: worker {again[0]} straggles again within W={model.W} rounds of an earlier "
                f"straggle that ended more than B={model.B} round(s) before (temporal condition)")
    total = w.seen | stragglers
    if len(total) > model.lam:
        return (f"round {round_}: {len(total)} distinct stragglers in rounds {max(w.first, round_ - model.W + 1)}.."
                f"{round_} exceed lam={model.lam} (spatial condition)")
    return None


def push(recent: tuple, item, W: int) -> tuple:
    """Append a round's entry (its applied straggler set, or its exemption flag), keeping the last W-1."""
    return (recent + (item,))[-(W - 1):] if W > 1 else ()


def first_violation(pattern: Iterable[Iterable[int]], model: Bursty) -> tuple[int, str] | None:
    """The first round (0-based) of a whole pattern that breaks the model, with the reason;
    None if every round conforms. ``pattern``: one iterable of straggler indices per round."""
    recent: tuple[frozenset[int], ...] = ()
    for r, row in enumerate(pattern):
        S = frozenset(row)
        why = violation(window(recent, model, r), S, model, r)
        if why:
            return r, why
        recent = push(recent, S, model.W)
    return None
