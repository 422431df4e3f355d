"""``tpgn`` -- Jia, Lin, Wang, Sun, Ye, Huang: "PGN: The RNN's New Successor is Effective for
Long-Range Time Series Forecasting" (NeurIPS 2024; TPGN; official code Water2sea/TPGN,
models/TPGN.py, whose structure this follows).

Temporal PGN. RevIN: each input window [L, C] is centred and scaled per channel (undone on the
output). The window is folded into R = L/P rows (periods) x P columns (phases), channel by
channel (every weight below is per channel, like the official grouped convolutions):

* long-term branch, PGN over rows for each column p: the Historical Information Extraction
  layer H_r = W_h [x_{r-w}, ..., x_{r-1}] + b_h (a causal window w = R-1 over past rows only,
  zero-padded), then the gated unit on [x_r, H_r]:
      g = sigmoid(W_g [x_r, H_r] + b_g),  c = tanh(W_c [x_r, H_r] + b_c),  h_r = g * H_r + (1 - g) * c,
  and an FC across rows, h -> one d-vector per column. Every row reaches its history in O(1).
* short-term branch: an FC within each row (the P values of one period -> d), then an FC
  across rows -> one d-vector, shared by all columns.
* head: concatenate the branches (2d per column) and map them, column by column (the official
  1x1 conv), to R_pred = H/P future rows: the forecast [H, C].

``model = "short_only"`` drops the PGN branch (the paper's ablation); ``model = "gru"`` is the
GRU baseline (RevIN, a GRU over the L steps with the C channels as input, its last state -> H x C
by a linear head). Loss: MSE on the RevIN-denormalised forecast. Metrics: test MSE and MAE.

Data (signals.seasonal_series): 3 channels of sinusoids with periods 24 and 96, a trend and
AR(1) noise; L = 192, P = 24, horizon 96 or 192; chronological split, the first 70% of the
series for training windows, the last 20% for test windows. The trend is local (a slope that
changes every 300-900 steps), so the test windows hold slopes the training windows did not:
forecasting means extrapolating the current slope, which the error at long horizons weighs
most. No time-stamp features (the official model also feeds calendar marks; the synthetic
series has none).

DP: data-parallel; the training stream is sharded by time: worker k holds the k-th contiguous
block of training windows and draws minibatches from (data_seed, step, worker). Every
parameter is communicated.

Mechanism check: TPGN vs the GRU at horizons 96 and 192 (test MSE; the gap grows with the
horizon), TPGN vs TPGN without its PGN branch, and time per training step TPGN vs GRU.
Departure: each model is trained once per seed at the longest horizon and scored on its first
96 and all 192 steps (the paper trains one model per horizon); without the PGN branch the
forecast is constant within each future period (the official head maps the shared short-term
vector column by column), so that ablation is a large gap by construction.
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

from .recurrent import rnn, rnn_init
from .signals import draw, mae, mean_sd, mse, seasonal_series, train

MODELS = ("tpgn", "short_only", "gru")


@functools.lru_cache(maxsize=8)
def series(length: int, channels: int, seed: int) -> Tensor:
    return seasonal_series(length, channels, seed)


@dataclasses.dataclass(frozen=True)
class TPGN:
    model: str = "tpgn"        # tpgn | short_only (no PGN branch) | gru (baseline)
    lookback: int = 192        # L
    horizon: int = 96          # H
    period: int = 24           # P
    d_model: int = 32          # d
    gru_hidden: int = 64
    channels: int = 3
    length: int = 3000         # series length (70% train, last 20% test)
    batch_size: int = 32
    data_seed: int = 0

    name: ClassVar[str] = "tpgn"
    paper: ClassVar[str] = "PGN: The RNN's New Successor is Effective for Long-Range Time Series Forecasting"
    primary_metric: ClassVar[str] = "mse"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[float] = 0.003
    default_rounds: ClassVar[int] = 300
    default_optimizer: ClassVar[str] = "adam"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"tpgn: model must be one of {MODELS}, got {self.model!r}")
        if self.lookback % self.period or self.horizon % self.period or self.lookback < 2 * self.period:
            raise ValueError(f"tpgn: lookback ({self.lookback}) and horizon ({self.horizon}) must be multiples of "
                             f"period ({self.period}), with at least 2 rows of history")
        if int(0.2 * self.length) < self.lookback // 2 + self.horizon or int(0.7 * self.length) < self.lookback + self.horizon + 64:
            raise ValueError(f"tpgn: length {self.length} is too short for lookback {self.lookback} + horizon "
                             f"{self.horizon}; raise length")

    @property
    def rows(self) -> int:
        return self.lookback // self.period

    # -- data -----------------------------------------------------------------------------------
    def data(self) -> Tensor:
        return series(self.length, self.channels, self.data_seed)

    def windows(self, starts: Tensor) -> tuple[Tensor, Tensor]:
        """(inputs [B, L, C], targets [B, H, C]) for windows starting at ``starts``."""
        x = self.data()
        idx = starts[:, None] + torch.arange(self.lookback + self.horizon)
        w = x[idx]
        return w[:, :self.lookback], w[:, self.lookback:]

    def train_starts(self) -> Tensor:
        return torch.arange(int(0.7 * self.length) - self.lookback - self.horizon + 1)

    def test_starts(self) -> Tensor:
        first = int(0.8 * self.length) - self.lookback  # test targets lie in the last 20%
        return torch.arange(first, self.length - self.lookback - self.horizon + 1, self.period // 2)

    # -- parameters ---------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        C, d, R, P = self.channels, self.d_model, self.rows, self.period
        Rp = self.horizon // P

        def lin(*shape, fan_in):
            return (2 * torch.rand(*shape, generator=g) - 1) / math.sqrt(fan_in)

        if self.model == "gru":
            h = self.gru_hidden
            return {**rnn_init("gru", C, h, g), "head.w": lin(self.horizon * C, h, fan_in=h),
                    "head.b": torch.zeros(self.horizon * C)}
        p = {"short.row.w": lin(C, d, P, fan_in=P), "short.row.b": torch.zeros(C, d),
             "short.col.w": lin(C, d, d, R, fan_in=d * R), "short.col.b": torch.zeros(C, d)}
        width = d
        if self.model == "tpgn":
            w = R - 1
            p |= {"pgn.hie.w": lin(C, d, w, fan_in=w), "pgn.hie.b": torch.zeros(C, d),
                  "pgn.gate.w": lin(C, 2 * d, 1 + d, fan_in=1 + d), "pgn.gate.b": torch.zeros(C, 2 * d),
                  "pgn.fc.w": lin(C, d, d, R, fan_in=d * R), "pgn.fc.b": torch.zeros(C, d)}
            width = 2 * d
        return p | {"head.w": lin(C, Rp, width, fan_in=width), "head.b": torch.zeros(C, Rp)}

    # -- model ----------------------------------------------------------------------------------
    def pgn(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        """PGN over rows: x [B, C, P, R] -> one d-vector per column [B, C, P, d]."""
        w = self.rows - 1
        past = torch.nn.functional.pad(x, (w, 0))[..., :-1]              # [B, C, P, R + w - 1]: rows r-w..r-1
        hist = past.unfold(-1, w, 1)                                     # [B, C, P, R, w]
        H = torch.einsum("bcprw,cdw->bcprd", hist, p["pgn.hie.w"]) + p["pgn.hie.b"][:, None, None]
        z = torch.einsum("bcpri,coi->bcpro", torch.cat([x[..., None], H], -1), p["pgn.gate.w"]) \
            + p["pgn.gate.b"][:, None, None]                             # [B, C, P, R, 2d]
        gate, cand = torch.sigmoid(z[..., :self.d_model]), torch.tanh(z[..., self.d_model:])
        h = gate * H + (1 - gate) * cand                                 # [B, C, P, R, d]
        return torch.einsum("bcprd,cedr->bcpe", h, p["pgn.fc.w"]) + p["pgn.fc.b"][:, None]

    def short_term(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        """FC within each row then across rows: x [B, C, P, R] -> [B, C, d]."""
        rows = torch.einsum("bcpr,cdp->bcrd", x, p["short.row.w"]) + p["short.row.b"][:, None]
        return torch.einsum("bcrd,cedr->bce", rows, p["short.col.w"]) + p["short.col.b"]

    def forecast(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        """x [B, L, C] -> forecast [B, H, C] (RevIN around the model)."""
        x = x.to(p["head.b"].dtype)
        mu = x.mean(1, keepdim=True)
        sd = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
        z = (x - mu) / sd
        B, C, P = x.shape[0], self.channels, self.period
        if self.model == "gru":
            h = rnn("gru", p, z)[:, -1]                                  # [B, hidden]
            y = (h @ p["head.w"].T + p["head.b"]).reshape(B, self.horizon, C)
        else:
            rows = z.permute(0, 2, 1).reshape(B, C, self.rows, P).transpose(-1, -2)  # [B, C, P, R]
            feat = self.short_term(p, rows)[:, :, None].expand(B, C, P, self.d_model)  # shared by all columns
            if self.model == "tpgn":
                feat = torch.cat([feat, self.pgn(p, rows)], -1)          # [B, C, P, 2d]
            out = torch.einsum("bcpk,crk->bcrp", feat, p["head.w"]) + p["head.b"][..., None]  # [B, C, R_pred, P]
            y = out.reshape(B, C, self.horizon).transpose(1, 2)           # [B, H, C]
        return y * sd + mu

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return mse(self.forecast(params, x), y.to(params["head.b"].dtype))

    def batch(self, worker: int, num_workers: int, step: int) -> tuple[Tensor, Tensor]:
        block = torch.tensor_split(self.train_starts(), num_workers)[worker]  # sharded by time
        return self.windows(block[draw(len(block), self.batch_size, self.data_seed, step, worker)])

    @torch.no_grad()
    def evaluate(self, params: dict[str, Tensor], horizon: int | None = None) -> dict[str, float]:
        """Test MSE and MAE over the first ``horizon`` forecast steps (default: all of them)."""
        x, y = self.windows(self.test_starts())
        h = horizon or self.horizon
        pred = self.forecast(params, x)[:, :h]
        y = y[:, :h].to(pred.dtype)
        return {"loss": float(mse(pred, y)), "mse": float(mse(pred, y)), "mae": float(mae(pred, y))}

    # -- mechanism check ----------------------------------------------------------------------
    def step_timer(self, seed: int):
        """One training step (forward + backward on one worker's batch) -> its seconds."""
        p = {k: v.requires_grad_(True) for k, v in self.init_params(seed).items()}
        b = self.batch(0, 1, 0)

        def step() -> float:
            t = time.perf_counter()
            self.loss(p, b).backward()
            return time.perf_counter() - t

        step()  # warm-up
        return step

    def reproduce(self, quick: bool = False, out=None, seeds: int | None = None):
        """TPGN vs GRU vs TPGN without PGN, each trained once per seed at horizon L and scored on
        its first L/2 and all L forecast steps (96 and 192 for L = 192), plus the time per
        training step. Quick: L = 96, d = 16, GRU hidden 32, batch 8, 60 rounds."""
        from experiments.reproduce.result import Result

        seeds = seeds or 3
        me = dataclasses.replace(self, lookback=96, d_model=16, gru_hidden=32, batch_size=8) if quick else self
        me = dataclasses.replace(me, horizon=me.lookback)
        rounds = 60 if quick else 400
        hs = (me.lookback // 2, me.lookback)
        res = Result(f"tpgn: TPGN vs GRU and without its PGN branch ({'quick' if quick else 'full'}, {seeds} seeds, "
                     f"L = {me.lookback})")
        t0 = time.perf_counter()
        mses: dict[tuple[str, int], list[float]] = {}
        for model in MODELS:
            for s in range(seeds):
                w = dataclasses.replace(me, model=model, data_seed=s)
                params = train(w, seed=s, rounds=rounds)
                for h in hs:
                    mses.setdefault((model, h), []).append(w.evaluate(params, horizon=h)["mse"])
        res.tables[f"test MSE over the first H steps ({rounds} Adam rounds, 2 workers, L = {me.lookback})"] = [
            {"model": m, **{f"H={h}": mean_sd(mses[(m, h)]) for h in hs}} for m in MODELS]
        mean = {k: sum(v) / len(v) for k, v in mses.items()}
        res.paired("MSE, TPGN minus", {f"{m} at H={h}": (mses[("tpgn", h)], mses[(m, h)])
                                       for m in ("gru", "short_only") for h in hs})
        for h in hs:
            res.check(f"TPGN beats the GRU at horizon {h}", "mean MSE TPGN < GRU",
                      f"{mean[('tpgn', h)]:.4f} vs {mean[('gru', h)]:.4f}", mean[("tpgn", h)] < mean[("gru", h)])
        gap = {h: mean[("gru", h)] - mean[("tpgn", h)] for h in hs}
        res.check("the gap to the GRU widens with the horizon", f"MSE_GRU - MSE_TPGN larger at H={hs[1]} than at H={hs[0]}",
                  f"{gap[hs[1]]:.4f} vs {gap[hs[0]]:.4f}", gap[hs[1]] > gap[hs[0]])
        for h in hs:
            res.check(f"removing the PGN branch hurts (H={h})", "mean MSE TPGN < short-term branch only",
                      f"{mean[('tpgn', h)]:.4f} vs {mean[('short_only', h)]:.4f}", mean[("tpgn", h)] < mean[("short_only", h)])
        if not quick and out is not None:
            from .common import bars

            vals = {m: {f"MSE H={h}": mses[(m, h)] for h in hs} for m in MODELS}
            res.figures.append(bars(vals, [f"MSE H={h}" for h in hs], Path(out) / "tpgn.png", "TPGN vs GRU"))
        reps = 5 if quick else 20
        times = {}
        for s in range(seeds):  # the models' steps interleaved, fastest of reps: a busy machine slows both alike
            timers = {m: dataclasses.replace(me, model=m).step_timer(s) for m in ("tpgn", "gru")}
            best = {m: math.inf for m in timers}
            for _ in range(reps):
                for m in timers:
                    best[m] = min(best[m], timers[m]())
            for m in timers:
                times.setdefault(m, []).append(best[m])
        res.tables[f"seconds per training step (forward + backward, batch {me.batch_size}, one worker, fastest of {reps})"] = [
            {"model": m, "step s": mean_sd(v, 4)} for m, v in times.items()]
        ratio = sum(times["tpgn"]) / sum(times["gru"])
        res.check("TPGN's training step is far cheaper than the GRU's", "time TPGN / time GRU < 0.5",
                  f"{ratio:.3f}", ratio < 0.5)
        res.notes.append(f"wall time {time.perf_counter() - t0:.1f} s")
        return res
