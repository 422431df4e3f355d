"""The vectorized simulator: n workers' states stacked on a leading axis, one batched call per
round for gradients, compression and state updates (no Python loop over workers).

A round t >= 1, for the participating workers P (all of them unless ``participation`` < 1):

    G      = oracle.grads(x^t, t, P)                       # [|P|, d]
    sent,W = method.worker_step(G, W[P], Noise(seed, t, P), lr)
    agg    = (1/n) sum_{i in P} a_i sent_i.value            # absent workers contribute nothing
    dir,S  = method.server_step(agg, S, lr)                  # (EF21-PP: the server averages all n)
    x^{t+1} = x^t - lr dir  (or dir, model-units methods)    # dir through the downlink compressor if any

Round 0 runs ``init_worker``/``init_server`` on every worker at x^0 (EF21's uncompressed
initialisation, counted in bits). ``workers="loop"`` runs the same steps one worker at a
time, the way FL_PyTorch, Flower or FedML simulate clients: the parity baseline for tests and
the speed baseline for ``distopt bench simulator``.

Downlink compression (EF21-BC, specs/ef-family.md §3.8): the server keeps the workers' copy
d_hat of its direction and broadcasts C_M(dir - d_hat); everyone sets d_hat += C_M(...).
With EF21 this is exactly EF21-BC.
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
from distopt._spec import parse
from distopt._tree import rows as tree_rows
from distopt._tree import scatter_rows
from distopt.compressors import make as make_compressor
from distopt.methods import Method, make as make_method, send
from distopt.noise import STREAM_PARTICIPATION, Noise, uniform

from .history import History, write_json
from .oracles import Oracle

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


class NonFiniteError(ValueError):
    pass


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
        raise ValueError(f"{name} has no verified theory stepsize ({method.theory}); give a numeric --lr")
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


def _check_finite(g: Tensor, workers: Tensor, t: int, what: str) -> None:
    if bool(torch.isfinite(g.sum())):
        return
    bad = (~torch.isfinite(g)).reshape(g.shape[0], -1).any(1) if g.dim() > 1 else ~torch.isfinite(g).any().reshape(1)
    if not bool(bad.any()):  # the sum overflowed, the entries are finite
        return
    first = int(workers[int(bad.nonzero()[0])]) if g.dim() > 1 else -1
    raise NonFiniteError(f"round {t}: worker {first} produced a non-finite {what} (NaN or Inf; {int(bad.sum())} "
                         "worker(s) affected): the run diverged; lower --lr or use an error-feedback method")


class Simulation:
    """Holds a run's state; ``run()`` drives it. Use :func:`simulate` for the one-call form."""

    def __init__(self, oracle: Oracle, cfg: RunConfig, out: Optional[str | Path] = None, extra_config: dict | None = None,
                 keep_iterates: bool = False):
        self.oracle, self.cfg = oracle, cfg
        self.iterates: Optional[list[Tensor]] = [] if keep_iterates else None
        self.method = build_method(cfg, oracle)
        self.lr = resolve_lr(cfg, self.method, oracle)
        self.optimizer = optim.make(cfg.optimizer)
        if self.method.model_units and self.optimizer.name != "sgd":
            raise ValueError(f"{self.method.name} works in model units (its direction already includes lr); "
                             f"use --optimizer sgd, not {cfg.optimizer}")
        self.down = make_compressor(cfg.down_compressor) if cfg.down_compressor else None
        if self.down is not None:
            self.down.validate(oracle.d)
        self.n, self.d = oracle.n, oracle.d
        self.all = torch.arange(self.n)
        self.dtype_bits = torch.finfo(oracle.dtype).bits
        self.out = Path(out) if out is not None else None
        self.history = History(self.out)
        self.config = {
            **dataclasses.asdict(cfg), "lr": self.lr, "lr_rule": cfg.lr if isinstance(cfg.lr, str) else "given",
            "method_resolved": self.method.spec, "compressor_resolved": self.method.compressor.spec,
            "alpha": self._alpha(), "n_workers": self.n, "d": self.d, "dtype": str(oracle.dtype).replace("torch.", ""),
            "L": oracle.L, "L_AM": stepsizes.l_am(oracle.smoothness) if oracle.smoothness else None,
            "L_QM": stepsizes.l_qm(oracle.smoothness) if oracle.smoothness else None,
            **(extra_config or {}),
        }

    def _alpha(self):
        try:
            return self.method.compressor.alpha(self.oracle.d)
        except (ValueError, NotImplementedError):
            return None

    # -- one round, vectorized or per worker --------------------------------------------------
    def _noise(self, t: int, workers: Tensor) -> Noise:
        return Noise(self.cfg.seed, t, workers, self.n)

    def _aggregate(self, value: Tensor, workers: Tensor) -> Tensor:
        a = self.method.weights(workers)
        if a is not None:
            value = value * a.to(value.dtype).unsqueeze(1)
        return value.sum(0) / self.n

    def _workers_step(self, t: int, x: Tensor, workers: Tensor, W: Any, first: bool):
        """(aggregate, bits sent, new states of ``workers``)."""
        G = self.oracle.grads(x, t, workers)
        _check_finite(G, workers, t, "gradient")
        if self.cfg.workers == "vectorized":
            noise = self._noise(t, workers)
            if first:
                sent, W_new = self.method.init_worker(G, noise, self.lr)
            else:
                sent, W_new = self.method.worker_step(G, W, noise, self.lr)
            return self._aggregate(sent.value, workers), sent.bits, W_new
        agg = torch.zeros(self.d, dtype=x.dtype)
        bits, states = 0, []
        for j, w in enumerate(workers.tolist()):  # the per-worker loop FL simulators use
            noise = Noise(self.cfg.seed, t, w, self.n)
            if first:
                sent, s = self.method.init_worker(G[j], noise, self.lr)
            else:
                sent, s = self.method.worker_step(G[j], W[j], noise, self.lr)
            a = self.method.weights(torch.tensor([w]))
            agg += sent.value if a is None else float(a[0]) * sent.value
            bits += sent.bits
            states.append(s)
        return agg / self.n, bits, states

    def _participants(self, t: int) -> Tensor:
        if self.cfg.participation >= 1.0 or t == 0:
            return self.all
        u = uniform(Noise(self.cfg.seed, t, self.all), 1, STREAM_PARTICIPATION, torch.float64)[:, 0]
        return (u < self.cfg.participation).nonzero().squeeze(1)

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
        if self.out is not None:
            write_json(self.out / "config.json", {**self.config, "status": "running"})
        x = oracle.x0()
        if self.iterates is not None:
            self.iterates.append(x.clone())
        bits_up = bits_down = 0.0
        W: Any = None
        S: Any = None
        d_hat: Optional[Tensor] = None
        down_state: tuple = ()
        opt_state = self.optimizer.init(x)
        status = "finished"
        t0 = time.perf_counter()
        self._log(0, x, bits_up, bits_down, t0)
        bar = _progress(cfg.rounds, cfg.progress)
        try:
            for t in range(cfg.rounds):
                workers = self._participants(t)
                if t == 0:
                    agg, bits, W = self._workers_step(t, x, workers, None, first=True)
                    direction, S = self.method.init_server(agg, self.lr)
                elif len(workers) > 0:
                    sub = W if len(workers) == self.n else self._rows(W, workers)
                    agg, bits, sub_new = self._workers_step(t, x, workers, sub, first=False)
                    W = sub_new if len(workers) == self.n else self._scatter(W, workers, sub_new)
                    direction, S = self.method.server_step(agg, S, self.lr)
                else:  # nobody participates: the server's state does not change
                    bits = 0
                    direction, S = self.method.server_step(torch.zeros_like(x), S, self.lr)
                direction, bits_d, d_hat, down_state = self._downlink(t, direction, d_hat, down_state)
                if self.method.model_units:
                    x = x - direction
                else:
                    step, opt_state = self.optimizer.step(direction, opt_state, self.lr)
                    x = x - step
                _check_finite(x.unsqueeze(0), torch.tensor([-1]), t, "iterate")
                if self.iterates is not None:
                    self.iterates.append(x.clone())
                bits_up += bits / self.n
                bits_down += bits_d
                bar.update(1)
                if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.rounds:
                    row = self._log(t + 1, x, bits_up, bits_down, t0)
                    bar.set_postfix(grad_norm_sq=f"{row['grad_norm_sq']:.3e}", refresh=False)
                    if cfg.target is not None and row["grad_norm_sq"] <= cfg.target:
                        status = "target reached"
                        break
        except NonFiniteError as e:
            status = f"diverged: {e}"
            if cfg.on_nonfinite == "raise":
                self._finish(status, x)
                raise
        finally:
            bar.close()
        self._finish(status, x)
        return self.history

    def _rows(self, W, idx):
        return [W[i] for i in idx.tolist()] if self.cfg.workers == "loop" else tree_rows(W, idx)

    def _scatter(self, W, idx, sub):
        if self.cfg.workers == "loop":
            W = list(W)
            for j, i in enumerate(idx.tolist()):
                W[i] = sub[j]
            return W
        return scatter_rows(W, idx, sub)

    def _log(self, t: int, x: Tensor, bits_up: float, bits_down: float, t0: float) -> dict:
        ev = self.oracle.evaluate(x)
        row = {"round": t, "loss": ev.get("loss", math.nan), "grad_norm_sq": ev.get("grad_norm_sq", math.nan),
               "bits_up": bits_up, "bits_down": bits_down, **{k: v for k, v in ev.items() if k not in ("loss", "grad_norm_sq")},
               "wall_s": time.perf_counter() - t0}
        self.history.log(row)
        return row

    def _finish(self, status: str, x: Tensor) -> None:
        self.final_x = x
        self.status = status
        if self.out is None:
            return
        self.history.flush()
        last = self.history.last
        write_json(self.out / "config.json", {**self.config, "status": status, "final": last})
        try:
            self.history.plot(title=f"{self.method.spec} + {self.method.compressor.spec}, n={self.n}")
        except Exception as e:  # a plot must never lose a finished run
            write_json(self.out / "plot_error.json", {"error": repr(e)})


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="round", dynamic_ncols=True, mininterval=0.5)


def simulate(oracle: Oracle, cfg: RunConfig, out: Optional[str | Path] = None, extra_config: dict | None = None) -> History:
    """Run ``cfg`` on ``oracle``; write ``history.csv``, ``config.json``, ``history.png`` to ``out``."""
    return Simulation(oracle, cfg, out, extra_config).run()
