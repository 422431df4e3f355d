"""The vectorized simulator: n workers' states stacked on a leading axis, one batched call per
round for gradients, compression and state updates (no Python loop over workers).

A round t >= 1, for the participating workers P (all of them unless ``participation`` < 1):

    G      = oracle.grads(x^t, t, P)                       # [|P|, d]
    sent,W = method.worker_step(G, W[P], Noise(seed, t, P), lr, donate=True)  # W's memory reused
    agg    = (1/n) sum_{i in P} a_i sent_i.value            # absent workers contribute nothing
    dir,S  = method.server_step(agg, S, lr)                  # (EF21-PP: the server averages all n)
    x^{t+1} = x^t - lr dir  (or dir, model-units methods)    # dir through the downlink compressor if any

Round 0 runs ``init_worker``/``init_server`` on every worker at x^0 (EF21's uncompressed
initialisation, counted in bits). ``workers="loop"`` runs the same steps one worker at a
time, each with its own oracle call, the way FL_PyTorch, Flower or FedML simulate clients: the
parity baseline for tests and the speed baseline for ``distopt bench simulator``. The
vectorized executor owns the stacked states, so it donates them to the step (see
``Method.worker_step``): the same bits, less memory written.

Downlink compression (EF21-BC, specs/ef-family.md §3.8): the server keeps the workers' copy
d_hat of its direction and broadcasts C_M(dir - d_hat); everyone sets d_hat += C_M(...).
With EF21 this is exactly EF21-BC.

Who computes the workers' side is an *executor* (``simulator.executors``): ``LocalExecutor``
(vectorized or per-worker loop, in this process) or the Ray executor (``workers.executor``, one
actor per worker). The round logic above -- aggregation, server step, optimizer, downlink, bits,
history, checkpoints -- is this file's, whatever the executor.

Stragglers (``delays``, specs/sgc.md 6.2): every round's durations come from a straggler or
delay model (``simulator.clock``); the master rule erases the late workers' messages, which the
server never applies and whose senders keep their last committed state (absent workers
contribute nothing, as with partial participation). Round 0 initialises every worker, so the
master waits for all of them there. ``time_s`` in the history is the simulated (or, on Ray,
measured) wall-clock. ``code`` runs use ``simulator.coded.CodedSimulation`` instead.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import Tensor

from distopt import optim, stepsizes
from distopt._alloc import keep_freed_memory
from distopt._spec import parse
from distopt.compressors import make as make_compressor
from distopt.methods import Method, Sent, make as make_method, send
from distopt.methods.base import weighted_sum
from distopt.noise import STREAM_PARTICIPATION, Noise, uniform

from .clock import StragglerClock, make_clock
from .driver import Driver, load_checkpoint, progress
from .executors import Arrivals, LocalExecutor, NonFiniteError, RoundPlan, check_finite
from .history import History
from .oracles import Oracle

__all__ = ["DTYPES", "RunConfig", "NonFiniteError", "resolve_lr", "build_method", "Simulation", "simulate"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
_DOWN = 1 << 30  # worker id of the server's own draws (downlink compression)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One simulated run (configs are Python: studies build these)."""

    method: str = "ef21"
    compressor: str = "topk:ratio=0.01"
    lr: float | str = "theory"
    rounds: int = 100
    seed: int = 0
    eval_every: int = 1
    participation: float = 1.0
    down_compressor: Optional[str] = None
    optimizer: str = "sgd"  # applied to the method's direction at the server (distopt.optim)
    on_nonfinite: Literal["raise", "stop"] = "raise"
    target: Optional[float] = None  # stop once grad_norm_sq <= target
    workers: Literal["vectorized", "loop"] = "vectorized"
    progress: bool = True
    # stragglers (specs/sgc.md 6.2, 7): a straggler/delay model, the master rule, the time model
    delays: Optional[str] = None  # e.g. gilbert-elliott:p=0.1,q=0.5; None: nobody is late
    master: Optional[str] = None  # pattern | deadline:mu=1 | timeout:t=.. | fastest:k=..
    delay_scale: float = 1.0  # seconds per second of the model (all of d = base + c load + comm results)
    c: float = 2.2  # seconds per unit of normalized load (the Lambda fit, spec 6.2)
    comm: float = 0.0  # seconds per uploaded result vector
    code: Optional[str] = None  # gc:s=.. | sr-sgc:B=..,W=..,lam=.. | m-sgc:..: simulator.coded
    checkpoint_every: int = 0  # write DIR/checkpoint.pt every this many rounds (0: never)

    def __post_init__(self):
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if not 0.0 < self.participation <= 1.0:
            raise ValueError(f"participation must be in (0, 1], got {self.participation}")
        if isinstance(self.lr, (int, float)) and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"the stepsize must be a positive number or theory|theory-qm|theory-pl, got lr={self.lr}")
        if isinstance(self.lr, str) and self.lr not in stepsizes.LR_RULES:
            raise ValueError(f"unknown stepsize rule {self.lr!r}; valid: a positive number or {', '.join(stepsizes.LR_RULES)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: no checkpoints), got {self.checkpoint_every}")
        if self.master and not self.delays:
            raise ValueError("--master needs --delays MODEL (without delays nobody is late and the master waits for all)")

    def clock(self, n: int) -> Optional[StragglerClock]:
        """The run's straggler clock (None without ``delays``)."""
        if not self.delays:
            return None
        return make_clock(self.delays, self.master, n, self.rounds, self.seed, self.delay_scale, self.c, self.comm)

    def clock_config(self, clock: Optional[StragglerClock]) -> dict:
        return clock.spec if clock is not None else {"delays": None, "master": None}


def resolve_lr(cfg: RunConfig, method: Method, oracle: Oracle) -> float:
    """A number for ``cfg.lr``: as given, or the theory rule of specs/ef-family.md (§3.3-3.7)."""
    if not isinstance(cfg.lr, str):
        return float(cfg.lr)
    if oracle.L is None or oracle.smoothness is None:
        raise ValueError(f"--lr {cfg.lr} needs smoothness constants, which this workload does not provide; give a numeric --lr")
    name = method.name
    if name in ("gd", "dcgd"):
        return 1.0 / oracle.L
    if name in ("econtrol", "ef21-sgdm"):
        why = method.theory.removesuffix(": give a numeric --lr")  # the methods table's wording, said once here
        raise ValueError(f"{name} has no verified theory stepsize ({why}); give a numeric --lr")
    if not method.compressor.contractive:
        raise ValueError(f"compressor {method.compressor.spec} has no alpha, so no theory stepsize; give a numeric --lr")
    alpha = method.compressor.alpha(oracle.d)
    ls = oracle.smoothness
    if cfg.lr == "theory-pl":
        if oracle.mu is None:
            raise ValueError("--lr theory-pl needs the PL constant mu, which this workload does not provide")
        return stepsizes.ef21_pl(oracle.L, stepsizes.l_qm(ls), alpha, oracle.mu)
    if cfg.participation < 1.0:
        return stepsizes.ef21_pp(oracle.L, ls, alpha, cfg.participation, weighted=name == "ef21-w")
    tilde = stepsizes.l_am(ls) if cfg.lr == "theory" else stepsizes.l_qm(ls)
    return stepsizes.ef21(oracle.L, tilde, alpha)


def build_method(cfg: RunConfig, oracle: Oracle) -> Method:
    name, _ = parse(cfg.method)
    ctx: dict[str, Any] = {"n": oracle.n}
    if name == "ef21-w":
        if oracle.smoothness is None:
            raise ValueError("ef21-w needs each worker's smoothness constant L_i, which this workload does not provide")
        ctx["smoothness"] = oracle.smoothness
    method = make_method(cfg.method, cfg.compressor, **ctx)
    method.compressor.validate(oracle.d)
    return method


class Simulation(Driver):
    """Holds a run's state; ``run()`` drives it. Use :func:`simulate` for the one-call form.

    ``executor``: who runs the workers (default: this process, ``cfg.workers`` mode; Ray:
    ``workers.executor.RayExecutor``), or a factory ``(method, lr) -> executor``.
    ``resume``: a checkpoint (``DIR`` or ``DIR/checkpoint.pt``) to continue from, bit-exactly
    (same settings; ``rounds`` may grow).
    """

    def __init__(self, oracle: Oracle, cfg: RunConfig, out: Optional[str | Path] = None, extra_config: dict | None = None,
                 keep_iterates: bool = False, executor=None, resume: Optional[str | Path] = None):
        if cfg.code:
            raise ValueError("a coded run trains T+1 models: use simulator.coded.CodedSimulation "
                             "(`distopt simulate --code ...` picks it)")
        keep_freed_memory()  # [n, d] temporaries every round: reuse freed memory (distopt/_alloc.py)
        self.method = build_method(cfg, oracle)
        self.lr = resolve_lr(cfg, self.method, oracle)
        self.optimizer = optim.make(cfg.optimizer)
        if self.method.model_units and self.optimizer.name != "sgd":
            raise ValueError(f"{self.method.name} works in model units (its direction already includes lr); "
                             f"use --optimizer sgd, not {cfg.optimizer}")
        self.down = make_compressor(cfg.down_compressor) if cfg.down_compressor else None
        if self.down is not None:
            self.down.validate(oracle.d)
        clock = cfg.clock(oracle.n)
        if executor is None:
            executor = LocalExecutor(oracle, self.method, self.lr, cfg.seed, cfg.workers)
        elif not hasattr(executor, "method_round"):
            executor = executor(self.method, self.lr)
        super().__init__(oracle, cfg, out, executor, clock, timed=clock is not None or executor.name != "sim")
        self.iterates: Optional[list[Tensor]] = [] if keep_iterates else None
        self.all = torch.arange(self.n)
        self.dtype_bits = torch.finfo(oracle.dtype).bits
        self.resume = resume
        self.config = {
            **dataclasses.asdict(cfg), "lr": self.lr, "lr_rule": cfg.lr if isinstance(cfg.lr, str) else "given",
            "method_resolved": self.method.spec, "compressor_resolved": self.method.compressor.spec,
            "alpha": self._alpha(), "n_workers": self.n, "d": self.d, "dtype": str(oracle.dtype).replace("torch.", ""),
            "L": oracle.L, "L_AM": stepsizes.l_am(oracle.smoothness) if oracle.smoothness else None,
            "L_QM": stepsizes.l_qm(oracle.smoothness) if oracle.smoothness else None,
            **cfg.clock_config(clock), "backend": executor.name, **(extra_config or {}),
        }

    def _alpha(self):
        try:
            return self.method.compressor.alpha(self.oracle.d)
        except (ValueError, NotImplementedError):
            return None

    # -- one round ------------------------------------------------------------------------
    def _aggregate(self, arr: Arrivals, like: Tensor) -> Tensor:
        """(1/n) sum_{i arrived} a_i value_i: absent and erased workers contribute nothing."""
        if len(arr.workers) == 0:
            return torch.zeros_like(like)
        value = arr.values
        a = self.method.weights(arr.workers)
        if isinstance(value, Sent):
            return value.total(a) / self.n  # Top-K: n k entries, not n d
        return weighted_sum(value, a) / self.n

    def _participants(self, t: int) -> Tensor:
        if self.cfg.participation >= 1.0 or t == 0:
            return self.all
        u = uniform(Noise(self.cfg.seed, t, self.all), 1, STREAM_PARTICIPATION, torch.float64)[:, 0]
        return (u < self.cfg.participation).nonzero().squeeze(1)

    def _plan(self, t: int) -> RoundPlan:
        # round 0 initialises every worker: any straggler there is waited out
        admit = (lambda S: not S) if t == 0 else (lambda S: True)
        return RoundPlan(t, admit, 1.0 / self.n, 1, self.clock)

    def _downlink(self, t: int, direction: Tensor, d_hat: Optional[Tensor], down_state: tuple):
        """(direction the workers apply, bits per worker, new d_hat, compressor state)."""
        if self.down is None or d_hat is None:
            return direction, self.d * self.dtype_bits, direction.clone() if self.down is not None else None, down_state
        sent, down_state = send(self.down, direction - d_hat, Noise(self.cfg.seed, t, _DOWN), down_state)
        d_hat = d_hat + sent.value
        return d_hat, sent.bits, d_hat, down_state

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> History:
        cfg, oracle = self.cfg, self.oracle
        self._write_running()
        t0 = time.perf_counter()
        measured = self.executor.name != "sim"  # Ray: the server's update is part of the round's time
        if self.resume is not None:
            ck = load_checkpoint(self.resume)
            self._restore_common(ck)
            start, x, S, opt_state = ck["round"], ck["x"], ck["S"], ck["opt_state"]
            d_hat, down_state, bits_up, bits_down = ck["d_hat"], ck["down_state"], ck["bits_up"], ck["bits_down"]
        else:
            self.executor.reset()
            start, x, S, d_hat, down_state, bits_up, bits_down = 0, oracle.x0(), None, None, (), 0.0, 0.0
            opt_state = self.optimizer.init(x)
            self._log(0, x, bits_up, bits_down, t0)
        if self.iterates is not None:
            self.iterates.append(x.clone())
        self.stopped_at = None  # a diverged run: the round it stopped at and what it had sent by then
        status = "finished"
        bar = progress(cfg.rounds, cfg.progress, initial=start)
        try:
            for t in range(start, cfg.rounds):
                workers = self._participants(t)
                arr = self.executor.method_round(t, x, workers, t == 0, self._plan(t))
                t_srv = time.perf_counter()
                self._account(t, arr.decision, arr.events)
                agg = self._aggregate(arr, x)
                if t == 0:
                    direction, S = self.method.init_server(agg, self.lr)
                else:  # nobody arrived: agg = 0 and the server's state follows its rule
                    direction, S = self.method.server_step(agg, S, self.lr)
                direction, bits_d, d_hat, down_state = self._downlink(t, direction, d_hat, down_state)
                if self.method.model_units:
                    x = x - direction
                else:
                    step, opt_state = self.optimizer.step(direction, opt_state, self.lr)
                    x = x - step
                check_finite(x.unsqueeze(0), torch.tensor([-1]), t, "iterate")
                if measured:
                    self.time_s += time.perf_counter() - t_srv
                if self.iterates is not None:
                    self.iterates.append(x.clone())
                bits_up += arr.bits / self.n
                bits_down += bits_d
                bar.update(1)
                if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.rounds:
                    row = self._log(t + 1, x, bits_up, bits_down, t0)
                    self._postfix(bar, {"grad_norm_sq": f"{row['grad_norm_sq']:.3e}"})
                    if cfg.target is not None and row["grad_norm_sq"] <= cfg.target:
                        status = "target reached"
                        break
                if cfg.checkpoint_every and (t + 1) % cfg.checkpoint_every == 0 and t + 1 < cfg.rounds:
                    self._save_checkpoint({"round": t + 1, "x": x, "S": S, "opt_state": opt_state, "d_hat": d_hat,
                                           "down_state": down_state, "bits_up": bits_up, "bits_down": bits_down})
        except NonFiniteError as e:
            status = f"diverged: {e}"
            # the last logged row may be round 0, so keep where it stopped and what it had sent
            self.stopped_at = {"round": t, "bits_up": bits_up, "bits_down": bits_down}
            if cfg.on_nonfinite == "raise":
                self._finish(status, x)
                raise
        finally:
            bar.close()
            self.server_state = S
        self._finish(status, x)
        return self.history

    def _log(self, t: int, x: Tensor, bits_up: float, bits_down: float, t0: float) -> dict:
        return self._log_row(t, x, bits_up, bits_down, t0)

    def _finish(self, status: str, x: Tensor) -> None:
        super()._finish(status, x, f"{self.method.spec} + {self.method.compressor.spec}, n={self.n}")


def simulate(oracle: Oracle, cfg: RunConfig, out: Optional[str | Path] = None, extra_config: dict | None = None) -> History:
    """Run ``cfg`` on ``oracle``; write ``history.csv``, ``config.json``, ``history.png`` to ``out``."""
    return Simulation(oracle, cfg, out, extra_config).run()
