"""Pieces the sequence workloads share (pvrnn, dbpm, seld_synth, coral_rca): seeded generators,
the probabilistic-FSM sequence primitive and its transition statistics, a side-by-side trainer
(the simulator's round for M models at once), per-arm mean ± sd tables and bar figures, a linear
probe, random walk with restart and precision@k, angular distance.

Everything random takes an explicit key: ``gen(*keys)`` is a ``torch.Generator`` seeded by a
hash of the keys, so a draw depends only on what it is for (data seed, worker, step, purpose).
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

from distopt._threads import single_thread  # noqa: F401  (re-exported for the workloads)
from experiments.report import arm_rows, mean, mean_sd, pm  # noqa: F401

# -- randomness --------------------------------------------------------------------------------


def gen(*keys) -> torch.Generator:
    """A generator seeded by a hash of ``keys`` (ints and strings): independent streams per purpose."""
    h = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & ((1 << 63) - 1))


# -- sequence generators -----------------------------------------------------------------------


def fsm_states(trans: Tensor, n_seq: int, n_seg: int, g: torch.Generator, start: Tensor | None = None) -> Tensor:
    """Probabilistic finite-state machine: ``[n_seq, n_seg]`` state indices, s_0 ~ ``start``
    (uniform by default), s_{k+1} ~ trans[s_k] (rows of ``trans [S, S]`` sum to one)."""
    S = trans.shape[0]
    start = torch.full((S,), 1.0 / S) if start is None else start
    s = torch.multinomial(start.expand(n_seq, S), 1, generator=g)[:, 0]
    out = [s]
    for _ in range(n_seg - 1):
        s = torch.multinomial(trans[s], 1, generator=g)[:, 0]
        out.append(s)
    return torch.stack(out, 1)


def transition_counts(states: Tensor, n_states: int) -> Tensor:
    """``[n_states, n_states]`` counts of consecutive pairs along dim 1 (``states [B, K]``,
    entries outside ``0..n_states-1`` are ignored)."""
    a, b = states[:, :-1].reshape(-1), states[:, 1:].reshape(-1)
    ok = (a >= 0) & (a < n_states) & (b >= 0) & (b < n_states)
    idx = a[ok] * n_states + b[ok]
    return torch.bincount(idx, minlength=n_states * n_states).reshape(n_states, n_states).double()


def pair_kl(p_true: Tensor, counts: Tensor, pseudo: float = 0.5) -> float:
    """KL(true || observed) between distributions of consecutive state pairs (i, j): the true one
    pi_i P[i, j] (pi stationary), the observed one from ``counts`` (which may have more states
    than ``p_true``: "unrecognised" blocks take probability away from the true pairs), with
    ``pseudo`` counts per cell."""
    S = p_true.shape[0]
    p_true = p_true.double()
    evals, evecs = torch.linalg.eig(p_true.T)
    pi = evecs[:, int(torch.argmin((evals - 1).abs()))].real
    joint = (pi / pi.sum()).unsqueeze(1) * p_true  # [S, S]
    obs = (counts + pseudo) / (counts + pseudo).sum()
    return float((joint * (torch.log(joint.clamp_min(1e-300)) - torch.log(obs[:S, :S]))).sum())


# -- training many models side by side ------------------------------------------------------------


def train_many(workload, params: list[dict] | dict[str, Tensor], batch: Callable[[int], object], rounds: int, lr: float,
               extra: Tensor | None = None, loss: Callable | None = None, start: int = 0, opt_state: dict | None = None,
               return_state: bool = False):
    """Train M models of one workload side by side, their parameters stacked ``[M, ...]``: what
    a sweep over hyper-parameters and seeds needs in seconds, where M simulator runs take
    minutes (the models are tiny, so one op on M of them costs what one op on one does).

    ``loss(P, batch, extra) -> [M]`` is the workload's loss written for leading model dims
    (``extra [M, ...]``: a per-model tensor, e.g. the swept hyper-parameter). Each round is the
    simulator's ``gd`` + ``identity`` round: the workload's server optimizer on the
    communicated parameters, a plain ``local_lr`` step on its ``local_params`` -- exactly the
    simulator's iterates when ``batch(step)`` is the workers' batches side by side and the loss
    is their mean (tests/test_sequence_mechanisms.py checks it). Returns the stacked params
    (and the optimizer state, ``return_state``); ``params`` stacked, ``start`` (the first
    round's index) and ``opt_state`` resume an earlier call exactly."""
    from distopt import optim

    loss = loss or (lambda p, b, e: workload.loss(p, b))
    local = set(getattr(workload, "local_params", ()) or ())
    local_lr = float(getattr(workload, "local_lr", None) or workload.default_lr)
    opt = optim.make(getattr(workload, "default_optimizer", "sgd"))
    P = dict(params) if isinstance(params, dict) else {k: torch.stack([p[k] for p in params]) for k in params[0]}
    e = extra if extra is not None else torch.zeros(len(next(iter(P.values()))))
    state = dict(opt_state) if opt_state is not None else {k: opt.init(v) for k, v in P.items() if k not in local}
    for t in range(start, start + rounds):
        leaves = {k: v.detach().requires_grad_(True) for k, v in P.items()}
        G = dict(zip(leaves, torch.autograd.grad(loss(leaves, batch(t), e).sum(), list(leaves.values()))))
        for k in P:
            if k in local:
                P[k] = P[k] - local_lr * G[k]
            else:
                step, state[k] = opt.step(G[k], state[k], lr)
                P[k] = P[k] - step
    return (P, state) if return_state else P


# -- tables ------------------------------------------------------------------------------------


def bars(vals: dict[str, dict[str, list[float]]], metrics: Sequence[str], path, title: str = "") -> str:
    """A PNG of per-arm bars (mean, sd error bars) per metric, written atomically; returns the path."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from distopt._io import atomic_write_bytes

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.2), squeeze=False)
    names = list(vals)
    for ax, m in zip(axes[0], metrics):
        stats = [mean_sd(vals[a][m]) for a in names]
        ax.bar(range(len(names)), [u for u, _ in stats], yerr=[s for _, s in stats], color="C0", alpha=0.8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(m, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


# -- metrics -----------------------------------------------------------------------------------


def linear_probe(f_tr: Tensor, y_tr: Tensor, f_te: Tensor, y_te: Tensor, classes: int, l2: float = 1e-3,
                 iters: int = 100) -> float:
    """Test accuracy of a multinomial logistic regression on frozen (standardised) features,
    fitted by L-BFGS (the SimCLR-family linear evaluation protocol)."""
    f_tr, f_te = f_tr.detach().double(), f_te.detach().double()
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    f_tr, f_te = (f_tr - mu) / sd, (f_te - mu) / sd
    W = torch.zeros(f_tr.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(f_tr @ W + b, y_tr) + l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((f_te @ W + b).argmax(1) == y_te).double().mean())


def random_walk_with_restart(adj: Tensor, start: int, restart: float = 0.15, iters: int = 200) -> Tensor:
    """Visit probabilities of a random walk on ``adj [d, d]`` (adj[i, j] >= 0: weight of the step
    i -> j) that returns to ``start`` with probability ``restart`` each step (and from nodes
    with no way out): the stationary vector of p <- (1-c) p P + c e_start."""
    d = adj.shape[0]
    adj = adj.double().clamp_min(0)
    out = adj.sum(1, keepdim=True)
    e = torch.zeros(d, dtype=torch.float64)
    e[start] = 1.0
    P = torch.where(out > 0, adj / out.clamp_min(1e-300), e.expand(d, d))  # dead ends jump back to start
    p = e.clone()
    for _ in range(iters):
        p = (1 - restart) * (p @ P) + restart * e
    return p


def precision_at_k(scores: Tensor, truth: Sequence[int], k: int) -> float:
    """PR@k of a root-cause ranking: |top-k ∩ truth| / min(k, |truth|)."""
    top = set(torch.argsort(scores, descending=True)[:k].tolist())
    return len(top & set(truth)) / min(k, len(truth))


def angular_distance_deg(u: Tensor, v: Tensor) -> Tensor:
    """Great-circle angle in degrees between direction vectors along the last dim."""
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.rad2deg(torch.acos((u * v).sum(-1).clamp(-1.0, 1.0)))


__all__ = ["gen", "single_thread", "fsm_states", "transition_counts", "pair_kl", "train_many", "pm", "arm_rows", "mean", "bars",
           "linear_probe", "random_walk_with_restart", "precision_at_k", "angular_distance_deg"]
