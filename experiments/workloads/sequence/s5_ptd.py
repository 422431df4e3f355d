"""``s5_ptd`` -- Yu, Nigmetov, Morozov, Mahoney, Erichson: "Robustifying State-space Models for
Long Sequences via Approximate Diagonalization" (ICLR 2024; S4-PTD / S5-PTD).

The HiPPO-LegS matrix A (ssm.py) is non-normal; diagonalising it directly is ill-posed
(kappa(V) ~ 1e19 at N = 32). S4D/S5 diagonalise its normal part A_N = A + P P^T instead, whose
transfer function matches HiPPO's only weakly: A_N's eigenvalues -1/2 + i w reach |w| ~ 10 N and
each one is a resonance HiPPO does not have. PTD perturbs then diagonalises,
A + E = V Lambda V^-1 with E chosen to keep kappa(V) moderate, and initialises
Lambda, B~ = V^-1 B, C~ = C V: sup_s |G_PTD(is) - G_HiPPO(is)| = O(eps) (strong convergence).

Model: digits (scikit-learn's 8x8, bundled) read as length-64 pixel sequences; an S5 network:
u [L] -> encoder (1 -> H) -> ``layers`` x [pre-LayerNorm, S5 layer, GELU, residual] -> mean over
time -> LayerNorm -> linear classifier (10). An S5 layer is one MIMO diagonal SSM with P complex
states, ZOH step dt = exp(log_dt) (one per layer):
    x_k = lambda_bar * x_{k-1} + B_bar u_k,   y_k = Re(C~ x_k) + D * u_k      (ssm.diag_scan)
All N eigenvalues are kept (conjugate pairs included) and the output's real part taken.
``init = "s5"`` is the S4D/S5 initialisation (eig of A_N, V unitary); ``init = "ptd"`` is PTD.
Loss: cross-entropy. Metrics: test accuracy and loss.

DP: data-parallel; each worker holds a contiguous shard of the training digits and draws
minibatches from (data_seed, step, worker). Every parameter is communicated. Lambda, B~, C~
are complex and are stored, sent and compressed as real pairs (last axis 2;
Re(Lambda) as log(-Re) so that stability survives any update); ``loss`` rebuilds them.

Mechanism check (``reproduce``), over seeds:
1. deterministic transfer-function gap sup_w |G_init(iw) - G_HiPPO(iw)| for the SISO LegS system
   (B HiPPO's, S4D with B/2, C random): PTD's is far smaller than S4D's, below a tenth of it
   for the same system in every seed;
2. train both initialisations on clean digits, test on u + a cos(theta* t), theta* the discrete
   frequency where the S5 initialisation's gap to HiPPO (same B, C, dt) peaks: PTD's accuracy
   drops less (mean drop over a in {0.5, 1, 2}, a robustness curve rather than one a). The
   table also gives the first layer's gain at theta* before and after training.
Departures: no LRA-scale training (a few hundred Adam steps); PTD's E is the best of 8 random
draws per eps in {0.1, 0.3, 1, 3} under kappa(V) + gamma ||E|| (gamma = 300 picks kappa ~ 500)
rather than the paper's optimisation; each eigenvector is rescaled so that B~'s row and C~'s
column have equal norms (``ssm.balance``: same system, but PTD's B~ no longer holds entries of
size ~kappa(V) that Adam steps would move off their cancellation); one dt per layer; a cosine
(a sine vanishes at theta = pi). Trained PTD models reach lower clean accuracy than S5 in the
same number of steps (their balanced B~, C~ entries are ~10x larger, and Adam steps are
absolute), which narrows the robustness margin: paired by seed, PTD's drop minus S5's is -0.037
+- 0.029 (t = -1.3) in the quick run and -0.026 +- 0.026 (t = -1.0) at 10 seeds (full), a tie
whose sign holds. The transfer-function check holds in every one of 10 seeds (largest
PTD / S4D gap ratio 0.056); compared across seeds (PTD's worst against S4D's best, as the
check first did) it failed at 10 seeds, 0.141 vs 1.02, two different systems.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ssm
from .signals import draw, mean_sd, train

INITS = ("ptd", "s5")
AMPS = (0.5, 1.0, 2.0)  # noise amplitudes (the input is standardised: sd 1)


# -- data -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def digits(data_seed: int, train_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train [n, 64], y_train [n], x_test, y_test): pixels / 16, standardised with the
    training mean and std, rows in a permutation drawn from ``data_seed``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(data_seed))
    x, y = x[perm], y[perm]
    mu, sd = x[:train_size].mean(), x[:train_size].std()
    x = (x - mu) / sd
    return x[:train_size], y[:train_size], x[train_size:], y[train_size:]


# -- initialisation -------------------------------------------------------------------------
PTD_EPS = (0.1, 0.3, 1.0, 3.0)  # the perturbation sizes PTD chooses among


def diagonal_init(init: str, N: int, g: torch.Generator, gamma: float) -> tuple[Tensor, Tensor]:
    """(Lambda [N], V [N, N]) complex128 for ``init``: S5/S4D (normal part) or PTD (A + E)."""
    if init == "s5":
        return ssm.s4d_legs_init(N)
    A, _ = ssm.hippo_legs(N)
    out = ssm.ptd_init(A, eps=PTD_EPS, gamma=gamma, generator=g)
    return out["Lambda"], out["V"]


@dataclasses.dataclass(frozen=True)
class S5PTD:
    init: str = "ptd"          # "ptd" (perturb-then-diagonalise) or "s5" (S4D/S5: normal part)
    state: int = 32            # N = P complex states per layer
    width: int = 32            # H channels
    layers: int = 2
    dt: float = 0.05           # initial ZOH step
    ptd_gamma: float = 300.0   # PTD: E minimises kappa(V) + gamma ||E|| over ||E|| in PTD_EPS
    batch_size: int = 32       # digits per worker per step
    train_size: int = 1297     # the remaining 500 are the test set
    data_seed: int = 0

    name: ClassVar[str] = "s5_ptd"
    paper: ClassVar[str] = "Robustifying State-space Models for Long Sequences via Approximate Diagonalization"
    primary_metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    default_lr: ClassVar[float] = 0.01
    default_rounds: ClassVar[int] = 300
    default_optimizer: ClassVar[str] = "adam"

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"s5_ptd: init must be one of {INITS}, got {self.init!r}")
        if self.state < 2 or self.width < 1 or self.layers < 1:
            raise ValueError("s5_ptd: need state >= 2, width >= 1, layers >= 1")
        if not 0 < self.dt < 1 or self.ptd_gamma < 0:
            raise ValueError(f"s5_ptd: need 0 < dt < 1 and ptd_gamma >= 0, got dt={self.dt}, ptd_gamma={self.ptd_gamma}")
        if not 10 <= self.train_size <= 1697:
            raise ValueError(f"s5_ptd: train_size must be in [10, 1697] (digits has 1797 rows), got {self.train_size}")

    def data(self):
        return digits(self.data_seed, self.train_size)

    # -- parameters ---------------------------------------------------------------------------
    def weights(self, seed: int) -> dict[str, Tensor]:
        """The real random weights (float64), drawn in a fixed order from ``seed``: both
        initialisations share them (only Lambda and V differ)."""
        g = torch.Generator().manual_seed(seed)
        N, H = self.state, self.width
        w = {"enc.w": torch.randn(H, generator=g, dtype=torch.float64)}
        for i in range(self.layers):
            w[f"l{i}.B"] = torch.randn(N, H, dtype=torch.float64, generator=g) / math.sqrt(H)  # lecun normal, as S5
            w[f"l{i}.C"] = torch.randn(H, N, dtype=torch.float64, generator=g) / math.sqrt(N)
            w[f"l{i}.D"] = torch.randn(H, dtype=torch.float64, generator=g)
        w["dec.w"] = torch.randn(10, H, generator=g, dtype=torch.float64) / math.sqrt(H)
        return w

    def init_params(self, seed: int) -> dict[str, Tensor]:
        w = self.weights(seed)
        g_ptd = torch.Generator().manual_seed(seed + 7919)  # PTD's E from its own stream
        p = {"enc.w": w["enc.w"].float(), "enc.b": torch.zeros(self.width)}
        for i in range(self.layers):
            lam, V = diagonal_init(self.init, self.state, g_ptd, self.ptd_gamma)
            Bt, Ct = ssm.balance(torch.linalg.solve(V, w[f"l{i}.B"].to(torch.complex128)),  # B~ = V^-1 B   [N, H]
                                 w[f"l{i}.C"].to(torch.complex128) @ V)                      # C~ = C V      [H, N]
            p |= {f"l{i}.log_neg_re": torch.log(-lam.real).float(), f"l{i}.im": lam.imag.float(),
                  f"l{i}.B": ssm.as_pairs(Bt), f"l{i}.C": ssm.as_pairs(Ct), f"l{i}.D": w[f"l{i}.D"].float(),
                  f"l{i}.log_dt": torch.full((1,), math.log(self.dt))}  # [1]: 0-d parameters do not unflatten
        return p | {"dec.w": w["dec.w"].float(), "dec.b": torch.zeros(10)}

    # -- model ----------------------------------------------------------------------------------
    @staticmethod
    def s5_layer(p: dict[str, Tensor], i: int, u: Tensor) -> Tensor:
        """One S5 layer on u [..., L, H] (real) -> y [..., L, H]."""
        lam = torch.complex(-torch.exp(p[f"l{i}.log_neg_re"]), p[f"l{i}.im"])  # [N]
        lam_bar, gain = ssm.zoh(lam, torch.exp(p[f"l{i}.log_dt"]))
        Bbar = gain[:, None] * ssm.as_complex(p[f"l{i}.B"])                  # [N, H]
        v = torch.complex(u @ Bbar.real.T, u @ Bbar.imag.T)                  # B_bar u: [..., L, N] (real matmuls)
        x = ssm.diag_scan(lam_bar, v)                                        # [..., L, N]
        C = p[f"l{i}.C"]                                                     # [H, N, 2]
        return x.real @ C[..., 0].T - x.imag @ C[..., 1].T + p[f"l{i}.D"] * u  # Re(C~ x) + D u

    def logits(self, p: dict[str, Tensor], u: Tensor) -> Tensor:
        """u [B, L] pixel sequences -> logits [B, 10]."""
        x = u.to(p["enc.w"].dtype)[..., None] * p["enc.w"] + p["enc.b"]  # [B, L, H]
        for i in range(self.layers):
            x = x + F.gelu(self.s5_layer(p, i, ssm.layer_norm(x)))
        return ssm.layer_norm(x.mean(-2)) @ p["dec.w"].T + p["dec.b"]

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        u, y = batch
        return F.cross_entropy(self.logits(params, u), y)

    def batch(self, worker: int, num_workers: int, step: int) -> tuple[Tensor, Tensor]:
        x, y, _, _ = self.data()
        shard = torch.tensor_split(torch.arange(len(x)), num_workers)[worker]  # contiguous shards
        idx = shard[draw(len(shard), self.batch_size, self.data_seed, step, worker)]
        return x[idx], y[idx]

    @torch.no_grad()
    def evaluate(self, params: dict[str, Tensor], noise: Tensor | None = None) -> dict[str, float]:
        """Test loss and accuracy; ``noise`` [L] is added to every test sequence (robustness)."""
        _, _, x, y = self.data()
        if noise is not None:
            x = x + noise
        z = self.logits(params, x)
        return {"loss": float(F.cross_entropy(z, y)), "accuracy": float((z.argmax(-1) == y).float().mean())}

    # -- mechanism check ----------------------------------------------------------------------
    def legs_gap(self, seed: int) -> dict[str, float]:
        """sup_w |G(iw) - G_HiPPO(iw)| of the SISO LegS system (B HiPPO's, C random unit norm):
        S4D-LegS (Lambda, V of A_N, B/2) and PTD (A + E). The grid adds A_N's eigen-frequencies,
        where S4D's resonances sit."""
        N = self.state
        g = torch.Generator().manual_seed(seed)
        A, B = ssm.hippo_legs(N)
        C = torch.randn(N, dtype=torch.float64, generator=g)
        C = C / C.norm()
        lam_s, V_s = ssm.s4d_legs_init(N)
        lam_p, V_p = diagonal_init("ptd", N, g, self.ptd_gamma)
        w = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-2, 4, 600, dtype=torch.float64),
                       lam_s.imag.abs()])
        s = (1j * w).to(torch.complex128)
        G_h = ssm.transfer_dense(A, B, C, s)
        Bc, Cc = B.to(torch.complex128), C.to(torch.complex128)
        G_s = ssm.transfer(lam_s, V_s.conj().T @ (Bc / 2), Cc @ V_s, s)
        G_p = ssm.transfer(lam_p, torch.linalg.solve(V_p, Bc), Cc @ V_p, s)
        gs, gp = (G_s - G_h).abs(), (G_p - G_h).abs()
        return {"s5": float(gs.max()), "ptd": float(gp.max()), "w_star": float(w[gs.argmax()]),
                "hippo_sup": float(G_h.abs().max())}

    def noise_frequency(self, seed: int, grid: int = 200) -> float:
        """theta* in [pi/20, pi]: where the S5-initialised first layer's discrete (ZOH) transfer
        matrix is farthest (Frobenius) from the HiPPO system with the same B, C and dt."""
        w = self.weights(seed)
        B, C = w["l0.B"], w["l0.C"]
        A, _ = ssm.hippo_legs(self.state)
        theta = torch.linspace(0.05 * math.pi, math.pi, grid, dtype=torch.float64)  # 0 would be a constant offset
        gaps = discrete_gap(A, ssm.normal_part(self.state)[0], B, C, self.dt, theta)
        return float(theta[gaps.argmax()])

    @staticmethod
    def input_gain(p: dict[str, Tensor], theta: float) -> float:
        """|H_1(e^{i theta}) w| for the first layer's discrete transfer matrix H_1 and the unit
        encoder direction w: how strongly the first SSM passes an input sinusoid at theta."""
        lam = torch.complex(-torch.exp(p["l0.log_neg_re"]), p["l0.im"]).to(torch.complex128)
        lam_bar, gain = ssm.zoh(lam, torch.exp(p["l0.log_dt"].double()))
        Bbar = gain[:, None] * ssm.as_complex(p["l0.B"]).to(torch.complex128)
        w = p["enc.w"].double() / p["enc.w"].double().norm()
        z = torch.exp(torch.tensor(1j * theta, dtype=torch.complex128))
        Hw = ssm.as_complex(p["l0.C"]).to(torch.complex128) @ ((Bbar @ w.to(torch.complex128)) / (z - lam_bar))
        return float(Hw.abs().norm())

    def reproduce(self, quick: bool = False, out=None, seeds: int | None = None):
        """Check 1 (transfer-function gap) and check 2 (accuracy drop under u + a cos(theta* t),
        summarised as the mean drop over a in AMPS: a robustness curve, not one hand-picked a).
        Quick: N = H = 16 and 150 rounds; full: the workload's N, H and 400 rounds."""
        from experiments.reproduce.result import Result

        seeds = seeds or 3
        me = dataclasses.replace(self, state=16, width=16) if quick else self
        rounds = 150 if quick else 400
        res = Result(f"s5_ptd: PTD vs S4D/S5 initialisation ({'quick' if quick else 'full'}, {seeds} seeds, "
                     f"N = H = {me.state})")
        t0 = time.perf_counter()
        gaps = [me.legs_gap(s) for s in range(seeds)]
        res.tables[f"transfer-function gap sup_w |G_init(iw) - G_HiPPO(iw)| (SISO LegS, N = {me.state})"] = [
            {"init": "S4D/S5 (normal part)", "sup gap": mean_sd([g["s5"] for g in gaps], 4),
             "argmax w": mean_sd([g["w_star"] for g in gaps], 1), "sup |G_HiPPO|": mean_sd([g["hippo_sup"] for g in gaps], 4)},
            {"init": "PTD", "sup gap": mean_sd([g["ptd"] for g in gaps], 4), "argmax w": "", "sup |G_HiPPO|": ""}]
        # per seed, one system (the same C) initialised both ways; comparing PTD's worst seed with
        # S4D's best instead would pair different systems and get stricter with every seed added
        ratio = [g["ptd"] / g["s5"] for g in gaps]
        worst = max(range(seeds), key=ratio.__getitem__)
        res.check("PTD's transfer function is far closer to HiPPO's than S4D's",
                  "in every seed gap_PTD < 0.1 * gap_S4D",
                  f"largest ratio {ratio[worst]:.3f} (seed {worst}: {gaps[worst]['ptd']:.4f} vs {gaps[worst]['s5']:.4f})",
                  ratio[worst] < 0.1)

        rows = []
        for s in range(seeds):
            theta = me.noise_frequency(s)
            wave = torch.cos(theta * torch.arange(64, dtype=torch.float32))  # cos: nonzero at theta = pi
            for init in INITS:
                w = dataclasses.replace(me, init=init, data_seed=s)
                params = train(w, seed=s, rounds=rounds)
                clean = w.evaluate(params)["accuracy"]
                drop = {a: clean - w.evaluate(params, noise=a * wave)["accuracy"] for a in AMPS}
                rows.append({"init": init, "seed": s, "theta*": round(theta, 3), "clean acc": clean,
                             **{f"drop a={a}": d for a, d in drop.items()}, "mean drop": sum(drop.values()) / len(AMPS),
                             "gain@theta* init": me.input_gain(w.init_params(s), theta),
                             "gain@theta* trained": me.input_gain(params, theta)})
        res.tables[f"digits: accuracy drop under u + a cos(theta* t) ({rounds} Adam rounds, 2 workers)"] = rows
        keys = ["clean acc"] + [f"drop a={a}" for a in AMPS] + ["mean drop", "gain@theta* trained"]
        res.tables["mean ± sd over seeds"] = [
            {"init": k, **{c: mean_sd([r[c] for r in rows if r["init"] == k]) for c in keys}} for k in INITS]
        dp, ds = (sum(r["mean drop"] for r in rows if r["init"] == k) / seeds for k in ("ptd", "s5"))
        drops = {k: [r["mean drop"] for r in rows if r["init"] == k] for k in INITS}
        res.paired("PTD minus S5", {"mean drop": (drops["ptd"], drops["s5"])})
        res.check("PTD's accuracy drops less than S5's under noise at S5's peak-gap frequency",
                  f"mean drop over a in {AMPS}: PTD < S5", f"{dp:.3f} vs {ds:.3f}", dp < ds)
        if not quick and out is not None:
            from .common import bars

            vals = {k: {c: [r[c] for r in rows if r["init"] == k] for c in ("clean acc", "mean drop", "gain@theta* trained")}
                    for k in INITS}
            res.figures.append(bars(vals, list(vals["ptd"]), Path(out) / "s5_ptd.png", "S5 vs PTD under Fourier-mode noise"))
        res.notes.append("theta*: argmax over [pi/20, pi] of ||H_S5(e^{i theta}) - H_HiPPO(e^{i theta})||_F for the "
                         "first layer's B, C, dt; gain@theta*: |H_1(e^{i theta*}) w_enc| of the first layer")
        res.notes.append(f"wall time {time.perf_counter() - t0:.1f} s")
        return res


def discrete_gap(A: Tensor, M: Tensor, B: Tensor, C: Tensor, dt: float, theta: Tensor) -> Tensor:
    """|| H_M(e^{i theta}) - H_A(e^{i theta}) ||_F for the ZOH discretisations (step dt) of the
    systems (A, B, C) and (M, B, C): H(z) = C (z I - A_bar)^-1 B_bar. -> [len(theta)]."""
    def h(X):
        Xd = torch.linalg.matrix_exp(X * dt)
        Bd = torch.linalg.solve(X, (Xd - torch.eye(len(X), dtype=X.dtype)) @ B)  # X^-1 (e^{X dt} - I) B
        return ssm.transfer_dense(Xd, Bd, C, torch.exp(1j * theta).to(torch.complex128))
    return torch.linalg.matrix_norm(h(M) - h(A))
