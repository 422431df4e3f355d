"""``hiss_hier_ssm`` -- Bhirangi, Wang, Pattabiraman, Majidi, Gupta, Hellebrekers, Pinto:
"Hierarchical State Space Models for Continuous Sequence-to-Sequence Modeling" (ICML 2024;
HiSS; official code raunaqbhirangi/hiss, hiss/models.py::HierarchicalModel).

HiSS stacks two SSMs in time. The high-rate sensor sequence [T, S] is cut into T/k chunks of
k = ``ratio`` samples (``freq_ratio``). A low-level SSM network runs inside every chunk
independently and its output at the chunk's last sample is the chunk feature; a high-level
SSM network runs over the T/k chunk features and a linear head predicts the low-rate target:

    e = embed(s) [T/k, k, d];  z_c = LL(e_c)[-1]  [T/k, d];  y = W HL(z) + b  [T/k]

LL and HL are stacks of S4D blocks (ssm.s4d_block: pre-LayerNorm, diagonal S4D
x' = A x + B u with A = diag(lambda), S4D-Lin init, computed as the causal FFT convolution with
K_k = 2 Re(C A_bar^k B_bar), GELU, output linear, residual). Baselines at (about) equal
parameter count, both reading the same high-rate sequence and predicting at each chunk's last
sample: ``model = "s4d"`` (a flat stack of S4D blocks over all T samples) and ``model = "lstm"``
(one LSTM layer). Loss: MSE on the target. Metric: test MSE.

Data (signals.sensor_sequences): a latent force pressed onto S = 8 nonlinear sensors with
slow load-dependent creep, per-sensor temperature drift and vibration bursts, and noise,
sampled k = 10 times faster than the force target; d = 32. No Transformer baseline (the spec
lists one; its check names only flat S4D and the LSTM).

DP: data-parallel over sequences: each worker holds a contiguous shard of the training
sequences and draws minibatches from (data_seed, step, worker); every parameter (complex
S4D parameters as real pairs) is communicated.

Mechanism check: HiSS vs flat S4D vs LSTM on test MSE over seeds (HiSS lower than both), and
in the full check also with 4x fewer training sequences (the gap to flat S4D grows). Quick:
12 targets per sequence (120 sensor samples), batch 8, 70 rounds.
Departures: one S4D block per level instead of the official 4 (and 2 flat blocks), no dropout,
targets at chunk ends for every model (the official flat baseline reads its output at chunk
starts, ``pred[:, ::freq_ratio]``).

Why the check fails (investigated; 3 seeds each, means): on this generator, at equal parameter
count and with every model reading the same samples, the hierarchy has no edge over the LSTM.
* Not the seeds: over 12 seeds (quick setting, paired by seed) HiSS - flat S4D = -0.0086 +-
  0.0018 (standard error: HiSS better at 4.8 SE), HiSS - LSTM = +0.0012 +- 0.0031 (a tie);
  means HiSS 0.0749, S4D 0.0835, LSTM 0.0737. With 4x the training sequences (256, 150
  rounds) it is still a three-way tie within the seeds' spread (0.0655, 0.0617, 0.0685).
* Not the official details we depart from (quick setting, 6 seeds paired, HiSS minus each
  baseline +- standard error): dropout 0.1 on every S4D block's residual branch with the
  official 2-layer LSTM (dropout 0.1 between layers, hidden 22 for equal parameters): vs S4D
  -0.0070 +- 0.0018, vs LSTM -0.0022 +- 0.0046 after 70 rounds; -0.0017 +- 0.0027 and +0.0028
  +- 0.0066 after 200 (without dropout, after 200: -0.0002 +- 0.0046 and +0.0043 +- 0.0039).
  In the full setting (400 rounds, 3 seeds) with the same dropout and LSTM, HiSS wins neither:
  n_train = 64: HiSS 0.120, S4D 0.117, LSTM 0.091 (HiSS - LSTM +0.029 +- 0.009); n_train = 16:
  0.201, 0.189, 0.183.
  The official one-step input differences appended (``append_input_deltas``): -0.0086 +- 0.0023
  and -0.0003 +- 0.0037. Deeper, 2 + 2 HiSS blocks vs 4 flat vs an LSTM of hidden 56: -0.0206
  +- 0.0059 and -0.0012 +- 0.0048. Every HiSS-LSTM difference is within 1.1 standard errors.
* Not the learning rate: with lr tuned per model on {0.002, 0.005, 0.01, 0.02} in the quick
  setting the best means are HiSS 0.0790, flat S4D 0.0814, LSTM 0.0749 (a least-squares
  read-out of each chunk's last sensor sample, reported as a note, scores 0.112).
* Not (only) short sequences: at 100 targets (1000 sensor samples) HiSS leads after 70 rounds
  of batch 8 (0.214 vs S4D 0.230, LSTM 0.272) but is last after 300 of batch 16 (0.152 vs 0.133, 0.132):
  there the 70-round ranking is early-training speed, not the trained models'. With 2 + 2 HiSS
  blocks against 4 flat ones (closer to the official depth) flat S4D still wins (0.151 vs 0.171).
  Both train well below their test MSE (seed 1: HiSS 0.123 vs 0.189, S4D 0.087 vs 0.148).
* Not the target being a point value: with each chunk's mean force as the target (a per-step
  aggregate, like the position differences the paper's marker-writing task predicts), quick
  setting: HiSS 0.0725, flat S4D 0.0816, LSTM 0.0617.
* Not the target being a difference: with the official marker-writing task's target form
  (``predict_diffs``: f at chunk k's end minus f at chunk k-1's, standardised), quick setting,
  HiSS 0.361 vs flat S4D 0.315 and LSTM 0.410 after 70 rounds, but 0.263 vs 0.244 and 0.196
  after 250: the LSTM again ends best. Nor an IMU-style task (accelerometers with drifting
  bias, the velocity as target, integrated over the sequence): 0.381 vs 0.354 and 0.341.
* Not the layers being time-invariant: the official configs use Mamba at the high level for the
  tactile tasks (and at both levels for one), where the spec fixes S4D. We probed Mamba-style
  selective blocks in place of S4D: input-dependent dt, B and C; a 4-tap causal conv; a SiLU
  gate; the state 16 per channel; about 10% more parameters. Quick setting, 6 seeds paired,
  minus the LSTM: S4D low with Mamba high +0.0037 +- 0.0040, Mamba at both levels -0.0035 +-
  0.0043 (S4D at both: -0.0020 +- 0.0036). A flat 2-block Mamba is best of all (0.0730, against
  0.0756 for Mamba HiSS and 0.0791 for the LSTM). Full setting (400 rounds, 3 seeds), Mamba at
  both levels: 0.111, 1.08 (unstable at lr 0.005) and 0.211, against 0.084, 0.155 and 0.142 for
  S4D HiSS and 0.089, 0.128 and 0.139 for the LSTM.
* The official read-out is not neutral: its flat models predict target c from the samples up to
  chunk c's first, HiSS from those up to its last, so HiSS sees k - 1 more samples per target.
  Given that read-out here, flat S4D scores 0.132 and the LSTM 0.158 against HiSS's 0.079 (quick
  setting): the read-out alone can produce a margin like the paper's >= 23%. We keep ours.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from . import ssm
from .recurrent import rnn, rnn_init
from .signals import draw, mean_sd, mse, sensor_sequences, train

MODELS = ("hiss", "s4d", "lstm")


@functools.lru_cache(maxsize=16)
def dataset(n: int, chunks: int, ratio: int, sensors: int, seed: int) -> tuple[Tensor, Tensor]:
    return sensor_sequences(n, chunks, ratio, sensors, seed)


@dataclasses.dataclass(frozen=True)
class HiSS:
    model: str = "hiss"        # hiss | s4d (flat) | lstm (flat)
    ratio: int = 10            # k: sensor samples per target (freq_ratio)
    chunks: int = 24           # targets per sequence (T = chunks * ratio sensor samples)
    sensors: int = 8           # S
    d_model: int = 32          # d
    state: int = 32            # S4D state size N (N/2 conjugate pairs per channel)
    low_blocks: int = 1        # S4D blocks inside a chunk (HiSS)
    high_blocks: int = 1       # S4D blocks over chunks (HiSS)
    flat_blocks: int = 2       # S4D blocks of the flat baseline
    lstm_hidden: int = 32
    n_train: int = 64          # training sequences
    n_test: int = 64
    batch_size: int = 16       # sequences per worker per step
    data_seed: int = 0

    name: ClassVar[str] = "hiss_hier_ssm"
    paper: ClassVar[str] = "Hierarchical State Space Models for Continuous Sequence-to-Sequence Modeling"
    primary_metric: ClassVar[str] = "mse"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[float] = 0.005
    default_rounds: ClassVar[int] = 300
    default_optimizer: ClassVar[str] = "adam"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"hiss_hier_ssm: model must be one of {MODELS}, got {self.model!r}")
        if self.ratio < 2 or self.chunks < 2 or self.state < 2 or self.state % 2:
            raise ValueError("hiss_hier_ssm: need ratio >= 2, chunks >= 2 and an even state >= 2")
        if self.n_train < 2 or self.batch_size < 1:
            raise ValueError("hiss_hier_ssm: need n_train >= 2 (one shard per worker) and batch_size >= 1")

    def data(self, split: str) -> tuple[Tensor, Tensor]:
        """(sensors [n, T, S], targets [n, chunks]); test sequences come from another seed of
        the same sensor (signals.sensor_sequences keeps the sensor fixed per seed // 1000)."""
        n, s = (self.n_train, 1000 * self.data_seed) if split == "train" else (self.n_test, 1000 * self.data_seed + 1)
        return dataset(n, self.chunks, self.ratio, self.sensors, s)

    # -- parameters ---------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        d = self.d_model
        p = {"embed.w": torch.randn(d, self.sensors, generator=g) / math.sqrt(self.sensors), "embed.b": torch.zeros(d)}
        if self.model == "lstm":
            p |= rnn_init("lstm", d, self.lstm_hidden, g)
            width = self.lstm_hidden
        else:
            blocks = ([f"low{i}." for i in range(self.low_blocks)] + [f"high{i}." for i in range(self.high_blocks)]
                      if self.model == "hiss" else [f"flat{i}." for i in range(self.flat_blocks)])
            for b in blocks:
                p |= ssm.s4d_block_init(b, d, self.state, g)
            width = d
        return p | {"head.w": torch.randn(1, width, generator=g) / math.sqrt(width), "head.b": torch.zeros(1)}

    # -- model ----------------------------------------------------------------------------------
    def predict(self, p: dict[str, Tensor], s: Tensor) -> Tensor:
        """s [B, T, S] sensor samples -> predicted targets [B, chunks]."""
        e = s.to(p["embed.w"].dtype) @ p["embed.w"].T + p["embed.b"]   # [B, T, d]
        B, k = e.shape[0], self.ratio
        if self.model == "hiss":
            z = e.reshape(B * self.chunks, k, -1)                       # every chunk on its own
            for i in range(self.low_blocks):
                z = ssm.s4d_block(p, f"low{i}.", z)
            z = z[:, -1].reshape(B, self.chunks, -1)                     # chunk feature: last output
            for i in range(self.high_blocks):
                z = ssm.s4d_block(p, f"high{i}.", z)                     # [B, chunks, d]
        elif self.model == "s4d":
            z = e
            for i in range(self.flat_blocks):
                z = ssm.s4d_block(p, f"flat{i}.", z)
            z = z[:, k - 1::k]                                           # outputs at chunk ends
        else:
            z = rnn("lstm", p, e)[:, k - 1::k]
        return (z @ p["head.w"].T + p["head.b"])[..., 0]

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        s, y = batch
        return mse(self.predict(params, s), y.to(params["head.b"].dtype))

    def batch(self, worker: int, num_workers: int, step: int) -> tuple[Tensor, Tensor]:
        s, y = self.data("train")
        if num_workers > len(s):
            raise ValueError(f"hiss_hier_ssm: {len(s)} training sequences cannot be sharded over {num_workers} "
                             f"workers; raise n_train or use fewer workers")
        shard = torch.tensor_split(torch.arange(len(s)), num_workers)[worker]  # sharded by sequence
        idx = shard[draw(len(shard), self.batch_size, self.data_seed, step, worker)]
        return s[idx], y[idx]

    @torch.no_grad()
    def evaluate(self, params: dict[str, Tensor]) -> dict[str, float]:
        s, y = self.data("test")
        m = float(mse(self.predict(params, s), y.to(params["head.b"].dtype)))
        return {"loss": m, "mse": m}

    # -- mechanism check ----------------------------------------------------------------------
    def readout_mse(self) -> float:
        """Reference: test MSE of a least-squares map from each chunk's last sensor sample (and a
        bias) to its target, fitted on the training sequences -- no memory, no nonlinearity."""
        def design(split):
            s, y = self.data(split)
            x = s[:, self.ratio - 1::self.ratio].double()                       # [n, chunks, S]
            x = torch.cat([x, torch.ones_like(x[..., :1])], -1)                 # [n, chunks, S + 1]
            return x.reshape(-1, self.sensors + 1), y.reshape(-1, 1).double()
        (a, y), (at, yt) = design("train"), design("test")
        return float(mse(at @ torch.linalg.lstsq(a, y).solution, yt))

    def n_params(self) -> int:
        return sum(v.numel() for v in self.init_params(0).values())

    def reproduce(self, quick: bool = False, out=None, seeds: int | None = None):
        from experiments.reproduce.result import Result

        seeds = seeds or 3
        me = dataclasses.replace(self, chunks=12, batch_size=8) if quick else self
        rounds = 70 if quick else 400
        sizes = (me.n_train,) if quick else (me.n_train, me.n_train // 4)
        res = Result(f"hiss_hier_ssm: HiSS vs flat S4D vs LSTM ({'quick' if quick else 'full'}, {seeds} seeds)")
        t0 = time.perf_counter()
        mses: dict[tuple[str, int], list[float]] = {}
        for n in sizes:
            for m in MODELS:
                for s in range(seeds):
                    w = dataclasses.replace(me, model=m, n_train=n, data_seed=s)
                    mses.setdefault((m, n), []).append(w.evaluate(train(w, seed=s, rounds=rounds))["mse"])
        res.tables[f"test MSE ({rounds} Adam rounds, 2 workers)"] = [
            {"model": m, "params": dataclasses.replace(me, model=m).n_params(),
             **{f"n_train={n}": mean_sd(mses[(m, n)], 4) for n in sizes}} for m in MODELS]
        mean = {k: sum(v) / len(v) for k, v in mses.items()}
        n0 = sizes[0]
        ref = {n: sum(dataclasses.replace(me, n_train=n, data_seed=s).readout_mse() for s in range(seeds)) / seeds
               for n in sizes}
        res.notes.append("reference, a linear read-out of each chunk's last sensor sample: "
                         + ", ".join(f"n_train={n}: {v:.4f}" for n, v in ref.items()))
        res.paired("HiSS minus baseline", {b: (mses[("hiss", n0)], mses[(b, n0)]) for b in ("s4d", "lstm")})
        beats = {}
        for base in ("s4d", "lstm"):
            h, b = mean[("hiss", n0)], mean[(base, n0)]
            beats[base] = res.check(f"HiSS beats flat {base} (n_train={n0})", f"mean MSE HiSS < {base}",
                                    f"{h:.4f} vs {b:.4f} ({100 * abs(1 - h / b):.0f}% {'lower' if h <= b else 'higher'})",
                                    h < b)
        if not beats["lstm"]:
            res.notes.append(f"HiSS not beating the LSTM is the known result on this generator (a strict xfail "
                             f"in the tests); {Path(__file__).name}'s docstring lists the probes: seeds, dropout, "
                             f"depth, lr, length, targets, selective layers, the official read-out")
        if len(sizes) > 1:
            rel = {n: 1 - mean[("hiss", n)] / mean[("s4d", n)] for n in sizes}
            res.check("the gap to flat S4D is larger on less data", f"relative gap at n_train={sizes[1]} > at {n0}",
                      f"{rel[sizes[1]]:.3f} vs {rel[n0]:.3f}", rel[sizes[1]] > rel[n0])
        if not quick and out is not None:
            from .common import bars

            vals = {m: {f"MSE n_train={n}": mses[(m, n)] for n in sizes} for m in MODELS}
            res.figures.append(bars(vals, [f"MSE n_train={n}" for n in sizes], Path(out) / "hiss.png", "HiSS vs flat"))
        res.notes.append(f"wall time {time.perf_counter() - t0:.1f} s")
        return res
