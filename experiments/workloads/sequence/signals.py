"""Synthetic signals, forecast metrics and the small harness the mechanism checks of
``s5_ptd``, ``hiss_hier_ssm``, ``tpgn`` and ``lnn_linkload`` share.

Generators (deterministic from their seed, float32, no downloads):

* ``seasonal_series``  -- TPGN's benchmark stand-in: sinusoids of two periods, a trend, AR(1)
  noise and a day-to-day amplitude that follows a nonlinear map (see its docstring);
* ``sensor_sequences`` -- HiSS's tactile/IMU stand-in: a latent force drives sensors through a
  nonlinear response plus drift and vibration, sampled ``ratio`` times faster than the target;
* ``mesh_link_loads``  -- the link-load stream of the LNN paper: sinusoidal OD demands on a
  mesh, shortest-path routed, with a link failure (and rerouting) at a change point.

Metrics: ``mse``, ``mae``, ``rmse``, ``mape``, ``time_to_convergence``. Harness: ``draw``
(per-(seed, step, worker) index draws), ``train`` (one simulator run, returning the final
parameters), ``mean_sd``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from experiments import report

__all__ = ["seasonal_series", "sensor_sequences", "mesh", "route", "mesh_link_loads", "draw", "train", "mean_sd", "mse", "mae", "rmse", "mape", "time_to_convergence"]


# -- generators -----------------------------------------------------------------------------
def seasonal_series(length: int, channels: int, seed: int, periods: tuple[int, int] = (24, 96),
                    ar: float = 0.8, noise: float = 0.3, trend: float = 1.0) -> Tensor:
    """[length, channels]: per channel a1 sin(2 pi t / p1 + phi1) + a2 sin(2 pi t / p2 + phi2)
    + a local linear trend + AR(1) noise e_t = ar e_{t-1} + noise sqrt(1 - ar^2) xi_t (stationary
    sd ``noise``). The trend's slope is piecewise constant: segments of 300-900 steps, slopes
    N(0, (trend / 200)^2) per step (a level change of ~``trend`` over 200 steps), so
    forecasting means extrapolating the current slope. Amplitudes a ~ U(0.5, 1.5), phases
    uniform, all drawn from ``seed``."""
    g = _gen(seed, 24)
    t = torch.arange(length, dtype=torch.float64)[:, None]  # [T, 1]
    a = 0.5 + torch.rand(2, channels, generator=g, dtype=torch.float64)
    ph = 2 * math.pi * torch.rand(2, channels, generator=g, dtype=torch.float64)
    x = a[0] * torch.sin(2 * math.pi * t / periods[0] + ph[0]) + a[1] * torch.sin(2 * math.pi * t / periods[1] + ph[1])
    slope = torch.empty(length, channels, dtype=torch.float64)
    for c in range(channels):
        k = 0
        while k < length:
            n = int(torch.randint(300, 901, (1,), generator=g))
            slope[k:k + n, c] = float(torch.randn(1, generator=g, dtype=torch.float64)) * trend / 200
            k += n
    xi = torch.randn(length, channels, generator=g, dtype=torch.float64) * noise * math.sqrt(1 - ar * ar)
    e = torch.zeros(channels, dtype=torch.float64)
    out = torch.empty(length, channels, dtype=torch.float64)
    for k in range(length):  # AR(1): sequential by definition (a few thousand steps, once)
        e = ar * e + xi[k]
        out[k] = e
    return (x + torch.cumsum(slope, 0) + out).float()


def _ema(x: Tensor, a: float) -> Tensor:
    """Exponential moving average along the last axis, y_t = a y_{t-1} + (1 - a) x_t, y_{-1} = 0."""
    y = torch.empty_like(x)
    acc = torch.zeros_like(x[..., 0])
    for t in range(x.shape[-1]):
        acc = a * acc + (1 - a) * x[..., t]
        y[..., t] = acc
    return y


def sensor_sequences(n: int, chunks: int, ratio: int, sensors: int, seed: int, vibration: float = 0.6,
                     drift: float = 1.5, creep_chunks: float = 30.0, noise: float = 0.05) -> tuple[Tensor, Tensor]:
    """HiSS-style continuous sequence-to-sequence data: (sensors [n, chunks * ratio, sensors],
    force targets [n, chunks]) -- a latent force f(t) (smooth presses of random height, width and
    time) read by sensors at ``ratio`` times the target rate through

        s_j(t) = tanh(g_j f(t) + o_j) + k_j creep(t) + b_j temp(t) + v_j vib(t) + noise xi,

    a saturating response of per-sensor gain g_j; a data-dependent drift creep = slow EMA of f
    (the sensor creeps under sustained load, time constant ``creep_chunks`` targets); a slow temperature random walk and vibration bursts
    (2.5-4 samples per cycle), both independent per sensor (so no linear combination of the
    sensors cancels them); white noise. Target y_k = f at the last
    sample of chunk k. The sensor constants (g, o, k, b, v) are fixed by ``seed`` // 1000 so that
    train and test sets (different ``seed``) share one sensor."""
    dev = _gen(seed // 1000, 53)
    g = 1.0 + 2.0 * torch.rand(sensors, generator=dev, dtype=torch.float64)
    o = torch.randn(sensors, generator=dev, dtype=torch.float64) * 0.5
    k = drift * (0.5 + torch.rand(sensors, generator=dev, dtype=torch.float64))
    b = 0.5 + torch.rand(sensors, generator=dev, dtype=torch.float64)
    v = vibration * (0.5 + torch.rand(sensors, generator=dev, dtype=torch.float64))
    gen = _gen(seed, 54)
    T = chunks * ratio
    t = torch.arange(T, dtype=torch.float64)
    presses = max(1, chunks // 4)
    c = torch.rand(n, presses, 1, generator=gen, dtype=torch.float64) * T
    w = (1.0 + 3.0 * torch.rand(n, presses, 1, generator=gen, dtype=torch.float64)) * ratio
    a = 0.3 + torch.rand(n, presses, 1, generator=gen, dtype=torch.float64)
    f = (a * torch.exp(-((t - c) / w) ** 2)).sum(1)                                   # [n, T]
    creep = _ema(f, 1 - 1 / (creep_chunks * ratio))[..., None]                        # slow: ~creep_chunks chunks
    temp = torch.cumsum(torch.randn(n, T, sensors, generator=gen, dtype=torch.float64), 1) * 0.02  # per sensor
    period = 2.5 + 1.5 * torch.rand(n, 1, sensors, generator=gen, dtype=torch.float64)             # per sensor
    phase = 2 * math.pi * torch.rand(n, 1, sensors, generator=gen, dtype=torch.float64)
    burst = (torch.rand(n, chunks, 1, generator=gen, dtype=torch.float64) < 0.3).to(torch.float64).repeat_interleave(ratio, 1)
    vib = burst * torch.sin(2 * math.pi * t[:, None] / period + phase)                 # [n, T, sensors]
    s = (torch.tanh(g * f[..., None] + o) + k * creep + b * temp + v * vib
         + noise * torch.randn(n, T, sensors, generator=gen, dtype=torch.float64))
    return s.float(), f[:, ratio - 1::ratio].float()


def mesh(seed: int, nodes: int = 8) -> tuple[list[tuple[int, int]], Tensor]:
    """An ``nodes``-node mesh: a ring plus its diameters (every node of degree 3), with routing
    weights 1 + U(0, 1) drawn from ``seed`` (no ties: shortest paths are unique)."""
    if nodes < 4 or nodes % 2:
        raise ValueError(f"mesh: nodes must be even and >= 4, got {nodes}")
    edges = [(i, (i + 1) % nodes) for i in range(nodes)] + [(i, i + nodes // 2) for i in range(nodes // 2)]
    return edges, 1 + torch.rand(len(edges), generator=_gen(seed, 31), dtype=torch.float64)


def route(nodes: int, edges: list[tuple[int, int]], weights: Tensor, failed: int | None = None) -> Tensor:
    """Shortest-path routing as an incidence tensor R [nodes, nodes, edges]: R[i, j, e] = 1 when
    the path from i to j uses (undirected) edge e; edge ``failed`` is removed (Floyd-Warshall)."""
    inf = float("inf")
    dist = torch.full((nodes, nodes), inf, dtype=torch.float64)
    nxt = torch.full((nodes, nodes), -1, dtype=torch.int64)
    for e, (a, b) in enumerate(edges):
        if e != failed:
            dist[a, b] = dist[b, a] = weights[e]
            nxt[a, b], nxt[b, a] = b, a
    for i in range(nodes):
        dist[i, i], nxt[i, i] = 0.0, i
    for k in range(nodes):
        via = dist[:, k:k + 1] + dist[k:k + 1, :]
        better = via < dist
        dist = torch.where(better, via, dist)
        nxt = torch.where(better, nxt[:, k:k + 1].expand(-1, nodes), nxt)
    index = {frozenset(e): i for i, e in enumerate(edges)}
    R = torch.zeros(nodes, nodes, len(edges), dtype=torch.float64)
    for i in range(nodes):
        for j in range(nodes):
            if i == j or dist[i, j] == inf:
                continue
            a = i
            while a != j:
                b = int(nxt[a, j])
                R[i, j, index[frozenset((a, b))]] = 1.0
                a = b
    return R


def mesh_link_loads(steps: int, seed: int, failed: int | None = None, t_fail: int | None = None, nodes: int = 8,
                    period: int = 24, noise: float = 0.05) -> Tensor:
    """Link loads [steps, edges] of the LNN paper's setting: sinusoidal OD demands
    d_ij(t) = m_ij (1 + a_ij sin(2 pi t / period + phi_ij)) (1 + noise xi), m_ij log-normal,
    routed on shortest paths; from ``t_fail`` on, edge ``failed`` is down (its load is 0) and
    every OD pair is rerouted. Everything but the failure is fixed by ``seed``."""
    edges, w = mesh(seed, nodes)
    g = _gen(seed, 32)
    m = torch.exp(0.6 * torch.randn(nodes, nodes, generator=g, dtype=torch.float64))
    a = 0.3 + 0.5 * torch.rand(nodes, nodes, generator=g, dtype=torch.float64)
    phi = 2 * math.pi * torch.rand(nodes, nodes, generator=g, dtype=torch.float64)
    t = torch.arange(steps, dtype=torch.float64)[:, None, None]
    d = m * (1 + a * torch.sin(2 * math.pi * t / period + phi))
    d = d * (1 + noise * torch.randn(d.shape, generator=g, dtype=torch.float64))   # [T, n, n]
    loads = torch.einsum("tij,ije->te", d, route(nodes, edges, w))
    if failed is not None:
        t0 = steps if t_fail is None else t_fail
        loads[t0:] = torch.einsum("tij,ije->te", d[t0:], route(nodes, edges, w, failed))
    return loads.float()

# -- harness --------------------------------------------------------------------------------
def _gen(*key: int) -> torch.Generator:
    """A generator seeded from an integer key (seed, step, worker, ...), no global state."""
    h = 0x243F6A88
    for k in key:
        h = (h * 1000003 + int(k) + 0x9E3779B9) % (1 << 62)
    return torch.Generator().manual_seed(h)


def draw(n_items: int, size: int, *key: int) -> Tensor:
    """``size`` indices in [0, n_items) (without replacement when size <= n_items), from ``key``."""
    g = _gen(*key)
    if size <= n_items:
        return torch.randperm(n_items, generator=g)[:size]
    return torch.randint(n_items, (size,), generator=g)


def train(workload, seed: int, rounds: int | None = None, lr: float | None = None, workers: int = 2,
          method: str = "gd", compressor: str = "identity", dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Train ``workload`` through the simulator (``method`` x ``compressor``, the workload's server
    optimizer) and return its final parameters (local ones stacked per worker)."""
    from simulator.engine import RunConfig, Simulation
    from simulator.oracles import VmapOracle

    oracle = VmapOracle(workload, workers, seed=seed, dtype=dtype)
    r = rounds or workload.default_rounds
    cfg = RunConfig(method=method, compressor=compressor, lr=lr or workload.default_lr, rounds=r, seed=seed,
                    eval_every=r, optimizer=workload.default_optimizer, progress=False)
    sim = Simulation(oracle, cfg)
    sim.run()
    return {**oracle.spec.unflatten(sim.final_x), **oracle.local}


def mean_sd(xs: Sequence[float], digits: int = 3) -> str:
    """'mean ± sd' (sample sd) for the reproduce tables."""
    return report.pm((float(x) for x in xs), digits)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred - target) ** 2).mean()


def mae(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def rmse(pred: Tensor, target: Tensor) -> Tensor:
    return mse(pred, target).sqrt()


def mape(pred: Tensor, target: Tensor, floor: float = 1e-3) -> Tensor:
    """Mean absolute percentage error (in %), denominators floored at ``floor``."""
    return 100 * ((pred - target).abs() / target.abs().clamp_min(floor)).mean()


def time_to_convergence(err: Tensor, start: int, level: float, hold: int) -> int:
    """Steps after ``start`` until the per-step error ``err`` [T] stays at or below ``level`` for
    ``hold`` consecutive steps (the LNN paper's time-to-convergence); len(err) - start if never."""
    ok = (err[start:] <= level).to(torch.int64)
    run = 0
    for i, v in enumerate(ok.tolist()):
        run = run + 1 if v else 0
        if run >= hold:
            return i - hold + 1
    return len(err) - start
