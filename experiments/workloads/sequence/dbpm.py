"""``dbpm`` -- "Towards Enhancing Time Series Contrastive Learning: A Dynamic Bad Pair Mining
Approach" (Lan et al., ICLR 2024). Official code: lanxiang1017/DynamicBadPairMining_ICLR24
(``models/dbpm_model.py``, ``models/loss.py``, ``dataset.py``; read, not copied).

SimCLR on time series with a per-pair InfoNCE loss (tau = 0.2, both directions averaged):

    l_i = 1/2 sum_{v in 1,2} -log( exp(s_ii / tau) / (exp(s_ii / tau) + sum_{k != i, both views} exp(s_ik / tau)) )

with s = cosine similarity of projections of a weak view (scaling) and a strong view
(permutation into 2..5 pieces + jitter 0.8, the official strength). DBPM adds no parameters:

* memory module: every instance's loss history; at epoch e (after ``warm_epochs``) its
  summary m_i = mean_{e' < e} ((e'+1)/E) l_i^{e'} (E = ``epochs``), and mu, sigma of m over
  all instances;
* noisy positive pairs m_i <= mu - beta_np sigma; faulty positive pairs m_i >= mu + beta_fp sigma;
* transformation: a flagged pair's loss is multiplied by the Gaussian pdf N(l_i; mu, sigma)
  (the current loss against the memory's statistics, as the official code does).

beta_np = beta_fp = 1 here; the official config's 2 and 3 are for bad pairs that are rare
outliers. With the spec's 15% + 15% injected, the bad pairs are no longer tails of one
Gaussian: the faulty cluster inflates sigma and a 2-sigma/3-sigma rule flags ~12 of the 76
(the full check runs the official betas as an extra arm).

Data: three classes (sine, square, sawtooth; random frequency, phase, amplitude; length 128;
additive noise). 15% of the training instances are replaced by pure noise (AR(1) with its own
colour and level: noise-dominated recordings whose idiosyncrasies are easy to align), and 15%
get a pattern-destroying strong view (faulty pairs: the series cut into 32 pieces, shuffled,
heavily jittered). Encoder: a 3-layer 1-D CNN with global average pooling; projection head:
2-layer MLP. Metric: linear-probe accuracy of the encoder's features (clean labelled sets).

Scale: the bad pairs' harm builds up over training. With 100 single-step epochs SimCLR on the
contaminated set scored as well as on clean data (nothing for DBPM to recover, and DBPM did
not beat SimCLR); at 300 steps (150 epochs of two minibatches per worker) the contaminated
run loses a few points against clean data and DBPM recovers them (the full check shows all
three).

DP: each worker holds the instances i with i % n == worker and walks through them in
minibatches of ``batch_size`` (a fresh order each epoch). The loss is decomposable: each
worker's InfoNCE takes its negatives from its own minibatch (a deployment all-gathers
embeddings to use the global batch instead). The memory is per instance, so it is sharded by
index: ``local_params = ("memory",)``, one row (weighted loss sum, count) per instance,
written only by the worker that owns it and never communicated. mu and sigma come from the
worker's own rows (its shard is a uniform sample of the instances; the memory is read as it
stands, so rows already visited this epoch hold one more entry, where the official code
freezes the statistics at the epoch's start); a deployment all-reduces (sum m, sum m^2,
count) -- three floats per epoch. The write goes through the local-parameter channel: the
loss carries a zero-valued term whose gradient is minus the increment, so the simulator's
local step (lr 1) adds it exactly.

Mechanism check (``reproduce``): SimCLR vs SimCLR + DBPM on the same data, seeds and steps
(n = 2 workers, 3 seeds; the full run: 5 seeds, plus DBPM with the official betas and SimCLR on
clean data), trained side by side (``common.train_many``: the simulator's gd + identity + adam
rounds); DBPM's probe accuracy is higher and its flags recall the injected pairs >= 3x chance.
Seeds: the probe edge is within its noise. Paired by seed it is +0.019 +- 0.030 (t = +0.6) in
the quick run and +0.007 +- 0.013 (t = +0.5) at 10 seeds (full: 0.812 vs 0.805), so the check's
direction holds by chance; the recall check holds by far (0.636 vs chance 0.205 at 10 seeds).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.reproduce.result import Result

from . import common as C


@dataclasses.dataclass(frozen=True)
class DBPM:
    dbpm: bool = True  # False: plain SimCLR
    n_train: int = 256
    n_probe: int = 100  # clean labelled series to fit the linear probe (tested on 3 x as many)
    length: int = 128
    noise: float = 0.6  # additive noise on the clean series (keeps the probe off the ceiling)
    noisy_frac: float = 0.15
    faulty_frac: float = 0.15
    tau: float = 0.2
    beta_np: float = 1.0
    beta_fp: float = 1.0
    jitter: float = 0.8  # the strong view's jitter (the official config's)
    wreck_pieces: int = 32  # faulty strong views: the series cut into this many pieces, shuffled ...
    wreck_noise: float = 0.8  # ... and jittered this much
    epochs: int = 150  # E in the memory's weights (e+1)/E
    warm_epochs: int = 90
    batch_size: int = 64  # instances per worker per round (2 rounds per epoch with n = 2)
    channels: int = 16
    rep_dim: int = 32
    proj_dim: int = 16
    data_seed: int = 0

    name: ClassVar[str] = "dbpm"
    paper: ClassVar[str] = "Towards Enhancing Time Series Contrastive Learning: A Dynamic Bad Pair Mining Approach"
    primary_metric: ClassVar[str] = "probe_acc"
    higher_is_better: ClassVar[bool] = True
    default_lr: ClassVar[float] = 3e-3
    default_rounds: ClassVar[int] = 300  # 150 epochs at n = 2
    default_optimizer: ClassVar[str] = "adam"
    local_params: ClassVar[tuple] = ("memory",)
    local_lr: ClassVar[float] = 1.0  # the memory write is exact at lr 1 (see the module docstring)

    def __post_init__(self):
        if not (0 <= self.noisy_frac and 0 <= self.faulty_frac and self.noisy_frac + self.faulty_frac < 1):
            raise ValueError(f"dbpm: need noisy_frac, faulty_frac >= 0 with sum < 1, got {self.noisy_frac}, {self.faulty_frac}")
        if not 0 <= self.warm_epochs < self.epochs:
            raise ValueError(f"dbpm: need 0 <= warm_epochs < epochs, got {self.warm_epochs}, {self.epochs}")
        if self.length % self.wreck_pieces:
            raise ValueError(f"dbpm: length ({self.length}) must be a multiple of wreck_pieces ({self.wreck_pieces})")

    # -- data ------------------------------------------------------------------------------------
    def series(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` clean series ``[n, length]`` and their classes (0 sine, 1 square, 2 sawtooth)."""
        y = torch.randint(0, 3, (n,), generator=g)
        t = torch.arange(self.length) / self.length
        freq = 2 + 6 * torch.rand(n, 1, generator=g)  # cycles per series
        phase = torch.rand(n, 1, generator=g)
        amp = 0.7 + 0.6 * torch.rand(n, 1, generator=g)
        u = (freq * t + phase) % 1.0  # [n, L] phase in cycles
        waves = torch.stack([torch.sin(2 * math.pi * u), torch.sign(torch.sin(2 * math.pi * u)), 2 * u - 1], 1)
        x = amp * waves[torch.arange(n), y] + self.noise * torch.randn(n, self.length, generator=g)
        return x, y

    @functools.lru_cache(maxsize=4)
    def train_set(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x ``[N, L]``, class ``[N]``, noisy mask ``[N]``, faulty mask ``[N]``): the contrastive set."""
        g = C.gen("dbpm-train", self.data_seed)
        x, y = self.series(self.n_train, g)
        kind = torch.randperm(self.n_train, generator=g)
        n_noisy, n_faulty = round(self.noisy_frac * self.n_train), round(self.faulty_frac * self.n_train)
        noisy = torch.zeros(self.n_train, dtype=torch.bool)
        faulty = torch.zeros(self.n_train, dtype=torch.bool)
        noisy[kind[:n_noisy]] = True
        faulty[kind[n_noisy:n_noisy + n_faulty]] = True
        x = torch.where(noisy.unsqueeze(1), self.noise_series(self.n_train, g), x)
        return x, y, noisy, faulty

    def noise_series(self, n: int, g: torch.Generator) -> Tensor:
        """Pure noise, each series with its own colour and level: AR(1) with phi ~ U(-0.99, 0.99),
        scale log-uniform in [0.5, 4] (noise-dominated recordings whose idiosyncrasies are easy
        to align -- the paper's noisy alignment)."""
        phi = 1.98 * torch.rand(n, 1, generator=g) - 0.99
        e = torch.randn(n, self.length, generator=g) * (1 - phi ** 2).sqrt()
        out = [e[:, 0]]
        for t in range(1, self.length):
            out.append(phi[:, 0] * out[-1] + e[:, t])
        return 0.5 * 8 ** torch.rand(n, 1, generator=g) * torch.stack(out, 1)

    @functools.lru_cache(maxsize=4)
    def probe_sets(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = C.gen("dbpm-probe", self.data_seed)
        x_tr, y_tr = self.series(self.n_probe, g)
        x_te, y_te = self.series(3 * self.n_probe, g)
        return x_tr, y_tr, x_te, y_te

    def views(self, x: Tensor, faulty: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """The official pair: weak = scaling, strong = jitter(permutation into 2..5 pieces);
        faulty instances get a pattern-destroying strong view (``wreck_pieces`` shuffled pieces,
        heavy jitter)."""
        n, L = x.shape
        weak = x * (1 + 0.3 * torch.randn(n, 1, generator=g))
        k = torch.randint(2, 6, (n,), generator=g)  # pieces of the ordinary permutation
        # piece boundaries: k equal pieces, shuffled by sorting random keys per piece
        piece = (torch.arange(L).unsqueeze(0) * k.unsqueeze(1)) // L  # [n, L] piece index
        order = torch.argsort(torch.rand(n, 5, generator=g), 1)  # a permutation of pieces 0..4
        rank = torch.argsort(order, 1).gather(1, piece)  # new position of each step's piece
        perm = torch.argsort(rank * L + torch.arange(L), dim=1)  # pieces in their new order
        strong = x.gather(1, perm) + self.jitter * torch.randn(n, L, generator=g)
        P = self.wreck_pieces
        pieces = torch.argsort(torch.rand(n, P, generator=g), 1)  # faulty: P pieces shuffled
        idx = (pieces.unsqueeze(2) * (L // P) + torch.arange(L // P)).reshape(n, L)
        wrecked = x.gather(1, idx) + self.wreck_noise * torch.randn(n, L, generator=g)
        return weak, torch.where(faulty.unsqueeze(1), wrecked, strong)

    # -- the model -------------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        g = C.gen("dbpm-init", seed)
        c, r, p = self.channels, self.rep_dim, self.proj_dim

        def u(*shape, fan):  # torch's default (Kaiming-uniform-like) init
            return (torch.rand(*shape, generator=g) * 2 - 1) / math.sqrt(fan)

        return {"c1": u(c, 1, 8, fan=8), "c1b": torch.zeros(c), "c2": u(2 * c, c, 8, fan=8 * c), "c2b": torch.zeros(2 * c),
                "c3": u(r, 2 * c, 8, fan=16 * c), "c3b": torch.zeros(r),
                "h1": u(r, r, fan=r), "h1b": torch.zeros(r), "h2": u(p, r, fan=r), "h2b": torch.zeros(p),
                "memory": torch.zeros(self.n_train, 2)}  # per instance: (sum_e (e+1)/E l^e, epochs seen)

    def encode(self, P: dict, x: Tensor) -> Tensor:
        """1-D CNN, ``[B, L] -> [B, rep_dim]`` (3 strided convs, ReLU, global average pool)."""
        h = x.unsqueeze(1)
        for k in ("c1", "c2", "c3"):
            h = F.relu(F.conv1d(h, P[k], P[k + "b"], stride=2))
        return h.mean(-1)

    def project(self, P: dict, r: Tensor) -> Tensor:
        return F.relu(r @ P["h1"].T + P["h1b"]) @ P["h2"].T + P["h2b"]

    def pair_losses(self, P: dict, x1: Tensor, x2: Tensor) -> Tensor:
        """The official per-pair InfoNCE: ``[B]``, negatives = every other series of both views."""
        z = F.normalize(self.project(P, self.encode(P, torch.cat([x1, x2]))), dim=1)  # [2B, p]
        B = x1.shape[0]
        sim = torch.exp(z @ z.T / self.tau)  # [2B, 2B]
        pos = torch.exp((z[:B] * z[B:]).sum(1) / self.tau).repeat(2)  # [2B]
        eye = torch.eye(2 * B, dtype=torch.bool)
        partner = eye.roll(B, 1)
        neg = torch.where(eye | partner, 0.0, sim).sum(1)
        return (-torch.log(pos / (pos + neg))).view(2, B).mean(0)

    def memory_stats(self, memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(m ``[N]``, mu, sigma) over the instances the memory has seen."""
        seen = memory[:, 1] > 0
        m = memory[:, 0] / memory[:, 1].clamp_min(1)
        k = seen.sum().clamp_min(1)
        mu = (m * seen).sum() / k
        sd = (((m - mu) ** 2 * seen).sum() / k).sqrt()  # population sd, as np.std
        return m, mu, sd

    def flags(self, memory: Tensor, beta_np=None, beta_fp=None) -> tuple[Tensor, Tensor]:
        """(noisy-pair flags, faulty-pair flags) ``[N]`` from the memory."""
        m, mu, sd = self.memory_stats(memory)
        seen = memory[:, 1] > 0
        beta_np = self.beta_np if beta_np is None else beta_np
        beta_fp = self.beta_fp if beta_fp is None else beta_fp
        return seen & (m <= mu - beta_np * sd), seen & (m >= mu + beta_fp * sd)

    # -- the Workload protocol -------------------------------------------------------------------
    def steps_per_epoch(self, num_workers: int) -> int:
        shard = -(-self.n_train // num_workers)  # ceil
        return -(-shard // self.batch_size)

    def batch(self, worker: int, num_workers: int, step: int):
        """Minibatch ``step % steps_per_epoch`` of epoch ``step // steps_per_epoch`` over the
        worker's shard (i % n == worker; a fresh order each epoch, the last minibatch padded with
        mask 0): (weak view, strong view ``[b, L]``, index ``[b]``, mask ``[b]``, epoch ``[]``)."""
        x, _, _, faulty = self.train_set()
        own = torch.arange(worker, self.n_train, num_workers)
        spe = self.steps_per_epoch(num_workers)
        epoch, j = divmod(step, spe)
        own = own[torch.randperm(len(own), generator=C.gen("dbpm-order", self.data_seed, worker, epoch))]
        pos = torch.arange(j * self.batch_size, (j + 1) * self.batch_size)
        idx = own[pos % len(own)]
        x1, x2 = self.views(x[idx], faulty[idx], C.gen("dbpm-views", self.data_seed, worker, step))
        return x1, x2, idx, (pos < len(own)).float(), torch.tensor(float(epoch))

    def objective(self, P: dict, batch, mining: Tensor) -> Tensor:
        """The (re-weighted) mean pair loss plus the zero-valued memory write; ``mining`` =
        (DBPM on 0/1, beta_np, beta_fp)."""
        x1, x2, idx, mask, epoch = batch
        dt = P["c1"].dtype
        x1, x2, mask, epoch = x1.to(dt), x2.to(dt), mask.to(dt), epoch.to(dt)
        loss = self.pair_losses(P, x1, x2)  # [m]
        memory = P["memory"]
        m, mu, sd = self.memory_stats(memory.detach())
        use_dbpm, beta_np, beta_fp = mining.unbind(-1)
        bad = self.flags(memory.detach(), beta_np, beta_fp)
        flagged = (bad[0] | bad[1]).index_select(0, idx)
        pdf = torch.exp(-0.5 * ((loss.detach() - mu) / sd.clamp_min(1e-12)) ** 2) / (sd.clamp_min(1e-12) * math.sqrt(2 * math.pi))
        active = (epoch >= self.warm_epochs) & (use_dbpm > 0)
        weight = torch.where(active & flagged, pdf, torch.ones_like(pdf))
        objective = (loss * weight * mask).sum() / mask.sum()
        # memory write: rows idx get ((e+1)/E l_i, 1); the term's gradient is -increment
        inc = torch.zeros_like(memory).index_add(0, idx, torch.stack([(epoch + 1) / self.epochs * loss.detach(),
                                                                     torch.ones_like(loss)], 1) * mask.unsqueeze(1))
        write = -(memory * inc).sum()
        return objective + write - write.detach()

    def loss(self, params: dict[str, Tensor], batch) -> Tensor:
        return self.objective(params, batch, torch.tensor([float(self.dbpm), self.beta_np, self.beta_fp]))

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, float]:
        P = {k: v.detach() for k, v in params.items()}
        memory = P["memory"]
        if memory.dim() == 3:  # the workers' copies [n, N, 2]: row i from its owner i % n
            i = torch.arange(memory.shape[1])
            memory = memory[i % memory.shape[0], i]
        x, _, _, faulty = self.train_set()
        x1, x2 = self.views(x, faulty, C.gen("dbpm-eval", self.data_seed))
        with torch.no_grad():
            loss = float(self.pair_losses(P, x1.to(P["c1"].dtype), x2.to(P["c1"].dtype)).mean())
        return {"loss": loss, "probe_acc": self.probe(P), **self.mining(memory)}

    def probe(self, P: dict) -> float:
        x_tr, y_tr, x_te, y_te = self.probe_sets()
        dt = P["c1"].dtype
        with torch.no_grad():
            f_tr, f_te = self.encode(P, x_tr.to(dt)), self.encode(P, x_te.to(dt))
        return C.linear_probe(f_tr, y_tr, f_te, y_te, 3)

    def mining(self, memory: Tensor) -> dict[str, float]:
        """How well the memory's flags find the injected bad pairs: recall of the injected ones,
        and chance (the recall of as many random flags)."""
        _, _, noisy, faulty = self.train_set()
        np_flag, fp_flag = self.flags(memory)
        flagged, bad = np_flag | fp_flag, noisy | faulty
        return {"flagged": float(flagged.sum()), "recall": float((flagged & bad).sum() / bad.sum()),
                "chance": float(flagged.double().mean()), "np_recall": float((np_flag & noisy).sum() / noisy.sum().clamp_min(1)),
                "fp_recall": float((fp_flag & faulty).sum() / faulty.sum().clamp_min(1))}

    # -- the mechanism check ---------------------------------------------------------------------
    def reproduce(self, quick: bool = True, out=None, seeds: int | None = None) -> Result:
        """DBPM vs plain SimCLR on the same data, seeds and epochs (n = 2 workers): DBPM's linear
        probe is better, and its flags recall the injected bad pairs far above chance. The full
        run adds SimCLR on the clean data (the headroom) and DBPM with the official betas."""
        from torch.func import vmap

        k = seeds or (3 if quick else 5)
        arms = {"SimCLR": (self, 0.0), f"SimCLR + DBPM (beta {self.beta_np:g}, {self.beta_fp:g})": (self, 1.0)}
        if not quick:
            arms |= {"SimCLR + DBPM (official beta 2, 3)": (dataclasses.replace(self, beta_np=2.0, beta_fp=3.0), 1.0),
                     "SimCLR, clean data": (dataclasses.replace(self, noisy_frac=0.0, faulty_frac=0.0), 0.0)}
        # arms on the same data train identically until the warm-up ends (betas and the DBPM switch
        # act only after it): train each dataset once up to there, then branch (exactly the same runs)
        data = list(dict.fromkeys(dataclasses.replace(w, beta_np=self.beta_np, beta_fp=self.beta_fp) for w, _ in arms.values()))
        warm, total = self.warm_epochs * self.steps_per_epoch(2), self.epochs * self.steps_per_epoch(2)

        def batches(works):  # [M, 2 workers, ...]: the two workers' minibatches (each its own negatives)
            def batch(step):
                per = {w: tuple(torch.stack(p) for p in zip(w.batch(0, 2, step), w.batch(1, 2, step))) for w in set(works)}
                return tuple(torch.stack([per[w][j] for w in works]) for j in range(5))
            return batch

        def loss(P, b, e):  # [M]: per model, the mean over the two workers of their losses
            return vmap(lambda p, bb, ee: vmap(self.objective, in_dims=(None, 0, None))(p, bb, ee).mean(0))(P, b, e)

        with C.single_thread():
            pre = [w for w in data for _ in range(k)]
            mining = torch.tensor([(0.0, w.beta_np, w.beta_fp) for w in pre])
            P, state = C.train_many(self, [self.init_params(s) for _ in data for s in range(k)], batches(pre), warm,
                                    self.default_lr, extra=mining, loss=loss, return_state=True)
            works = [w for w, _ in arms.values() for _ in range(k)]
            src = torch.tensor([data.index(dataclasses.replace(w, beta_np=self.beta_np, beta_fp=self.beta_fp)) * k + s
                                for w, _ in arms.values() for s in range(k)])
            mining = torch.tensor([(on, w.beta_np, w.beta_fp) for w, on in arms.values() for _ in range(k)])
            P = C.train_many(self, {n: v[src] for n, v in P.items()}, batches(works), total - warm, self.default_lr,
                             extra=mining, loss=loss, start=warm, opt_state=_rows(state, src))
            evals = [w.evaluate({n: v[i].detach() for n, v in P.items()}) for i, w in enumerate(works)]
        metrics = ["probe_acc", "recall", "chance", "np_recall", "fp_recall", "flagged"]
        vals = {a: {m: [e[m] for e in evals[i * k:(i + 1) * k]] for m in metrics} for i, a in enumerate(arms)}
        res = Result(f"dbpm: SimCLR vs SimCLR + DBPM ({k} seeds, {self.epochs} epochs, n=2 workers)")
        res.tables["linear probe and bad-pair mining (mean ± sd over seeds)"] = C.arm_rows(vals, metrics, "method")
        simclr, dbpm = list(arms)[:2]
        base, ours = C.mean(vals[simclr]["probe_acc"]), C.mean(vals[dbpm]["probe_acc"])
        res.check("DBPM beats plain SimCLR", "probe accuracy: DBPM > SimCLR", f"DBPM {ours:.4f}, SimCLR {base:.4f}",
                  ours > base)
        res.paired("DBPM minus SimCLR", {"probe accuracy": (vals[dbpm]["probe_acc"], vals[simclr]["probe_acc"])})
        rec, ch = C.mean(vals[dbpm]["recall"]), C.mean(vals[dbpm]["chance"])
        res.check("flags recall the injected bad pairs far above chance", "recall >= 3 x chance",
                  f"recall {rec:.3f}, chance {ch:.3f}", rec >= 3 * ch and rec > 0)
        if out is not None and not quick:
            res.figures.append(C.bars(vals, ["probe_acc", "recall", "chance"], Path(out) / "dbpm.png", "SimCLR vs DBPM"))
        return res


def _rows(state: dict, idx: Tensor) -> dict:
    """The optimizer states of models ``idx`` (per-model tensors indexed, shared scalars kept)."""
    return {k: type(st)(*(x[idx] if x.dim() > 0 else x for x in st)) for k, st in state.items()}
