"""What every training loop shares, whatever runs the workers: the history and its clock
columns, the progress bar, driver checkpoints and the final write.

History rows (``history.csv``) carry, beside ``round, loss, grad_norm_sq, bits_up, bits_down``
and the process's ``wall_s``, when the run has a clock (injected delays, or Ray, which measures):

* ``time_s``: cumulative round time: simulated from the delay model (sim) or measured (Ray;
  dispatch to the server's update, evaluation excluded);
* ``stragglers``: the workers erased in this round (``;``-separated);
* ``erased``: cumulative erased results (straggling worker-rounds); ``wait_outs``: cumulative
  rounds the master waited for everyone;
* ``events``: what happened since the previous row (a worker died, was restored, ...).

Checkpoints (``DIR/checkpoint.pt``, written atomically every ``checkpoint_every`` rounds) hold the
driver's whole state and the workers' committed states; randomness is counter-based, so the
round counter is all the random state and a resumed run continues bit-exactly.
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch

from distopt._io import atomic_write_bytes

from .clock import Decision
from .history import History, write_json

__all__ = ["Driver", "load_checkpoint", "CHECKPOINT", "FINGERPRINT"]

CHECKPOINT = "checkpoint.pt"
# config keys a resumed run must share with its checkpoint (the rest -- rounds, eval_every,
# progress -- may change)
FINGERPRINT = ("method_resolved", "compressor_resolved", "n_workers", "d", "dtype", "seed", "lr", "participation",
               "down_compressor", "optimizer", "code", "delays", "master", "delay_scale", "c", "comm", "workload", "data",
               "batch")


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by a driver (``DIR`` or ``DIR/checkpoint.pt``)."""
    p = Path(path)
    p = p / CHECKPOINT if p.is_dir() else p
    if not p.is_file():
        raise ValueError(f"no checkpoint at {str(p)!r}; a run writes DIR/{CHECKPOINT} with --checkpoint-every K")
    return torch.load(p, weights_only=False)  # our own file: tensors, NamedTuples, dicts


class Driver:
    """Base of ``Simulation`` (method rounds) and ``CodedSimulation`` (coded rounds)."""

    def __init__(self, oracle, cfg, out, executor, clock, timed: bool):
        self.oracle, self.cfg, self.executor, self.clock = oracle, cfg, executor, clock
        self.n, self.d = oracle.n, oracle.d
        self.out = Path(out) if out is not None else None
        self.history = History(self.out)
        self.timed = timed  # rows carry the clock columns
        self.time_s = 0.0
        self.erased = 0
        self.wait_outs = 0
        self._stragglers: frozenset[int] = frozenset()
        self._events: list[str] = []
        self.events: list[tuple[int, str]] = []  # every (round, event) of the run
        self.config: dict[str, Any] = {}

    # -- the clock ----------------------------------------------------------------------------
    def _account(self, t: int, decision: Decision, events=()) -> None:
        if math.isfinite(decision.seconds):
            self.time_s += decision.seconds
        self.erased += len(decision.stragglers)
        self.wait_outs += bool(decision.waited_out)
        self._stragglers = decision.stragglers
        for e in events:
            self._event(t, e)

    def _event(self, t: int, text: str) -> None:
        self._events.append(text)
        self.events.append((t, text))

    def _clock_columns(self) -> dict:
        if not self.timed:
            return {}
        cols = {"time_s": self.time_s, "stragglers": ";".join(map(str, sorted(self._stragglers))),
                "erased": self.erased, "wait_outs": self.wait_outs, "events": "; ".join(self._events)}
        self._events = []
        return cols

    def _postfix(self, bar, extra: dict) -> None:
        post = dict(extra)
        if self.timed:
            post["stragglers"] = ",".join(map(str, sorted(self._stragglers))) or "-"
        bar.set_postfix(post, refresh=False)

    # -- history --------------------------------------------------------------------------------
    def _log_row(self, t: int, x, bits_up: float, bits_down: float, t0: float, extra: Optional[dict] = None) -> dict:
        ev = self.oracle.evaluate(x)
        row = {"round": t, "loss": ev.get("loss", math.nan), "grad_norm_sq": ev.get("grad_norm_sq", math.nan),
               "bits_up": bits_up, "bits_down": bits_down, **(extra or {}),
               **{k: v for k, v in ev.items() if k not in ("loss", "grad_norm_sq")},
               "wall_s": time.perf_counter() - t0, **self._clock_columns()}
        self.history.log(row)
        return row

    def _write_running(self) -> None:
        if self.out is not None:
            write_json(self.out / "config.json", {**self.config, "status": "running"})

    def _finish(self, status: str, x, title: str) -> None:
        self.final_x = x
        self.status = status
        if self.out is None:
            return
        self.history.flush()
        summary = {"status": status, "final": self.history.last}
        if self.timed:
            summary |= {"time_s": self.time_s, "erased": self.erased, "wait_outs": self.wait_outs,
                        "events": [f"round {t}: {e}" for t, e in self.events]}
        write_json(self.out / "config.json", {**self.config, **summary})
        try:
            self.history.plot(title=title)
        except Exception as e:  # a plot must never lose a finished run
            write_json(self.out / "plot_error.json", {"error": repr(e)})

    # -- checkpoints ------------------------------------------------------------------------------
    def _common_state(self) -> dict:
        return {"rows": list(self.history.rows), "columns": list(self.history.columns), "time_s": self.time_s,
                "erased": self.erased, "wait_outs": self.wait_outs, "events": list(self.events),
                "fingerprint": {k: self.config.get(k) for k in FINGERPRINT}, "executor": self.executor.snapshot(),
                "backend": self.executor.name}

    def _save_checkpoint(self, state: dict) -> None:
        if self.out is None:
            raise ValueError("--checkpoint-every needs an output folder (--out DIR)")
        buf = io.BytesIO()
        torch.save({**self._common_state(), **state}, buf)
        atomic_write_bytes(self.out / CHECKPOINT, buf.getvalue())
        self.history.flush()

    def _restore_common(self, ck: dict) -> None:
        mine = {k: self.config.get(k) for k in FINGERPRINT}
        theirs = ck.get("fingerprint", {})
        diff = [k for k in FINGERPRINT if str(mine.get(k)) != str(theirs.get(k))]
        if diff:
            k = diff[0]
            raise ValueError(f"cannot resume: the checkpoint was written with {k}={theirs.get(k)!r}, this run has "
                             f"{k}={mine.get(k)!r}; resume with the same settings (only --rounds may grow)")
        if ck.get("backend") != self.executor.name:
            raise ValueError(f"cannot resume: the checkpoint holds {ck.get('backend')} worker states; resume it with "
                             f"--backend {ck.get('backend')}")
        self.history.rows = list(ck["rows"])
        self.history.columns = list(ck["columns"])
        self.time_s, self.erased, self.wait_outs = ck["time_s"], ck["erased"], ck["wait_outs"]
        self.events = list(ck["events"])
        self.executor.restore(ck["executor"])
        self._events = ["resumed from checkpoint"]


def progress(total: int, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="round", dynamic_ncols=True, mininterval=0.5)
