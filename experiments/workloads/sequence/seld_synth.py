"""``seld_synth`` -- "A Dataset of Dynamic Reverberant Sound Scenes with Directional Interferers for
Sound Event Localization and Detection" (Politis et al., DCASE2021 Task 3). The dataset cannot be
downloaded here, so this workload is the report's generator, written in the STFT domain, and
its SELDnet-style baseline with the ACCDOA output (official baseline:
sharathadavanne/seld-dcase2021; read, not copied).

Generator (per clip: ``frames`` STFT frames of 100 ms = 2 s, ``bins`` frequency bands):

* sound events of ``classes`` target classes (each a spectral template) and of out-of-set
  interferer classes, static or moving (azimuth drifting 10..40 deg/s), elevation in
  [-40, 40] deg, polyphony of targets <= 3 (same-class overlaps allowed). Each source is a
  complex Gaussian STFT s(t, f) with the template's power, FOA-encoded (ACN/SN3D):
  W = s, Y = s sin(phi) cos(theta), Z = s sin(theta), X = s cos(phi) cos(theta);
* reverberation: a diffuse exponential tail per source (RT60 ~ U(0.3, 1.0) s) -- its power a
  decaying sum of the source's past frames (tail gain 0.5), spread over random directions per bin;
* ambient noise: diffuse, pink-ish, at an SNR of 6..20 dB;
* directional interferers: 0..2 out-of-set events per clip, spatialised like the targets, at
  the same levels, and not annotated.

Features (7 x frames x bins): log-power of W, X, Y, Z and the normalised active intensity
vector Re{W* [X, Y, Z]} / (|W|^2 + (|X|^2 + |Y|^2 + |Z|^2)/3). Labels every frame (100 ms,
the DCASE2021 label rate; the features share it here to keep the CPU budget).

Model: CRNN (3 conv blocks, 8 channels, 3x3; a GRU with 64 units; a dense layer). Output
``accdoa``: per class a_c in R^3 (tanh), ||a_c|| = activity, trained by MSE to
activity x unit DOA; or ``seddoa``: the two-branch SELDnet (sigmoid SED by BCE plus DOA
regression masked by the reference activity). Departures: no batch norm (the conv stack is
shallow; the model stays a pure function), one unidirectional GRU layer.

Metrics (DCASE2021, per 100-ms frame rather than 1-s segments): location-aware error rate
ER_20 and F_20 (a class-matched prediction counts as a true positive within 20 deg),
class-dependent localisation error LE_CD (deg) and recall LR_CD, and the SELD score
(ER + 1 - F + LE/180 + 1 - LR)/4 (lower is better).

DP: plain data parallelism: each worker holds the clips i with i % n == worker and draws
minibatches from them; the gradients (compressed) are all-reduced, nothing stays local.

Mechanism check (``reproduce``): the report's ablation with the ACCDOA baseline -- the full
dataset and the full dataset without ambient noise, without reverberation, without the
interferers, each trained and tested on its own version -- and ACCDOA vs the two-branch
output on the full dataset; 3 seeds each, trained side by side (``common.train_many``: the
simulator's gd + identity + adam rounds on n = 2 workers).
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
class SELDSynth:
    output: str = "accdoa"  # or "seddoa" (two-branch SELDnet)
    ambient: bool = True
    reverb: bool = True
    interferers: bool = True
    classes: int = 6
    interferer_classes: int = 4
    frames: int = 20  # 100-ms frames (2 s)
    bins: int = 16
    n_train: int = 512
    n_test: int = 256
    p_event: float = 0.8  # each of the 3 target slots holds an event with this probability
    p_interferer: float = 0.7  # each of the 2 interferer slots, when interferers are on
    batch_size: int = 16  # clips per worker per round
    channels: int = 8
    hidden: int = 64
    data_seed: int = 0

    name: ClassVar[str] = "seld_synth"
    paper: ClassVar[str] = ("A Dataset of Dynamic Reverberant Sound Scenes with Directional Interferers for Sound Event "
                            "Localization and Detection")
    primary_metric: ClassVar[str] = "seld_score"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[float] = 3e-3
    default_rounds: ClassVar[int] = 300
    default_optimizer: ClassVar[str] = "adam"

    hop_s: ClassVar[float] = 0.1
    max_events: ClassVar[int] = 3  # target polyphony
    max_interferers: ClassVar[int] = 2

    def __post_init__(self):
        if self.output not in ("accdoa", "seddoa"):
            raise ValueError(f"seld_synth: output must be accdoa or seddoa, got {self.output!r}")
        if self.bins % 8:
            raise ValueError(f"seld_synth: bins must be a multiple of 8 (three 2x frequency poolings), got {self.bins}")

    # -- the generator -----------------------------------------------------------------------------
    def templates(self) -> Tensor:
        """``[classes + interferer_classes, bins]`` spectral templates (unit mean power): two
        Gaussian bumps per class; interferers are drawn from the same family (out-of-set events
        that sound like events)."""
        g = C.gen("seld-templates", self.data_seed)
        K = self.classes + self.interferer_classes
        f = torch.arange(self.bins).float()
        c = torch.rand(K, 2, generator=g) * (self.bins - 1)
        w = 0.8 + 2.0 * torch.rand(K, 2, generator=g)
        a = torch.stack([torch.ones(K), 0.3 + 0.7 * torch.rand(K, generator=g)], 1)
        t = (a.unsqueeze(2) * torch.exp(-0.5 * ((f - c.unsqueeze(2)) / w.unsqueeze(2)) ** 2)).sum(1) + 0.02
        return t / t.mean(1, keepdim=True)

    def _events(self, n: int, slots: int, p: float, cls_lo: int, cls_n: int, g: torch.Generator) -> dict[str, Tensor]:
        """``slots`` event slots per clip (each present with prob ``p``): class, activity
        ``[n, slots, frames]``, azimuth/elevation per frame (rad), level."""
        T = self.frames
        on = torch.rand(n, slots, generator=g) < p
        dur = torch.randint(5, 16, (n, slots), generator=g)  # 0.5 .. 1.5 s
        start = (torch.rand(n, slots, generator=g) * (T - dur + 1)).long()
        t = torch.arange(T)
        active = on.unsqueeze(2) & (t >= start.unsqueeze(2)) & (t < (start + dur).unsqueeze(2))
        az0 = (torch.rand(n, slots, generator=g) * 2 - 1) * math.pi
        moving = torch.rand(n, slots, generator=g) < 0.5
        speed = torch.deg2rad(10 + 30 * torch.rand(n, slots, generator=g)) * torch.where(
            torch.rand(n, slots, generator=g) < 0.5, -1.0, 1.0) * moving
        az = az0.unsqueeze(2) + speed.unsqueeze(2) * self.hop_s * (t - start.unsqueeze(2)).clamp_min(0)
        el = torch.deg2rad(80 * torch.rand(n, slots, generator=g) - 40).unsqueeze(2).expand(n, slots, T)
        return {"cls": cls_lo + torch.randint(0, cls_n, (n, slots), generator=g), "active": active,
                "az": torch.remainder(az + math.pi, 2 * math.pi) - math.pi, "el": el,
                "level": 0.7 + 0.6 * torch.rand(n, slots, generator=g)}

    @staticmethod
    def _cgauss(shape, power: Tensor, g: torch.Generator) -> Tensor:
        """Complex Gaussian STFT coefficients with the given power."""
        re, im = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        return torch.complex(re, im) * (power / 2).sqrt()

    def _diffuse(self, power: Tensor, g: torch.Generator) -> Tensor:
        """A diffuse field of the given power ``[n, T, F]``: FOA ``[n, 4, T, F]`` (W, Y, Z, X),
        every bin from its own random direction (uncorrelated with W on average)."""
        s = self._cgauss(power.shape, power, g)
        d = F.normalize(torch.randn(*power.shape, 3, generator=g), dim=-1)  # [n, T, F, 3] (x, y, z)
        return torch.stack([s, s * d[..., 1], s * d[..., 2], s * d[..., 0]], 1)

    def generate(self, split: str) -> dict[str, Tensor]:
        """A whole split: features ``[n, 7, frames, bins]``, the ACCDOA target ``[n, L, classes, 3]``
        and the references (DOAs ``[n, L, classes, 3, 3]``, mask ``[n, L, classes, 3]``)."""
        n = self.n_train if split == "train" else self.n_test
        g = C.gen("seld-data", self.data_seed, split)
        T, Fb = self.frames, self.bins
        tmpl = self.templates()
        ev = self._events(n, self.max_events, self.p_event, 0, self.classes, g)
        srcs = [ev]
        if self.interferers:
            srcs.append(self._events(n, self.max_interferers, self.p_interferer, self.classes, self.interferer_classes, g))
        rt60 = 0.3 + 0.7 * torch.rand(n, 1, 1, generator=g)
        foa = torch.zeros(n, 4, T, Fb, dtype=torch.complex64)
        for e in srcs:
            for k in range(e["cls"].shape[1]):
                power = (e["level"][:, k, None, None] ** 2 * tmpl[e["cls"][:, k]].unsqueeze(1)
                         * e["active"][:, k].unsqueeze(2).float())  # [n, T, F]
                s = self._cgauss(power.shape, power, g)
                az, el = e["az"][:, k].unsqueeze(2), e["el"][:, k].unsqueeze(2)  # [n, T, 1]
                gains = torch.stack([torch.ones_like(az), torch.sin(az) * torch.cos(el), torch.sin(el),
                                     torch.cos(az) * torch.cos(el)], 1)  # [n, 4, T, 1]
                foa = foa + s.unsqueeze(1) * gains
                if self.reverb:  # diffuse tail: decaying sum of past frames' power
                    decay = torch.exp(-13.8 * self.hop_s / rt60)  # power decay per frame (60 dB per RT60)
                    tail, acc = [], torch.zeros(n, Fb)
                    for t in range(T):
                        tail.append(acc)
                        acc = decay[:, 0] * (acc + 0.5 * power[:, t])
                    foa = foa + self._diffuse(torch.stack(tail, 1), g)
        if self.ambient:
            snr_db = 6 + 14 * torch.rand(n, 1, 1, generator=g)
            pink = 1 / (1 + torch.arange(Fb).float()) ** 0.5
            foa = foa + self._diffuse((10 ** (-snr_db / 10)) * pink / pink.mean() * torch.ones(n, T, Fb), g)
        foa = foa + self._diffuse(1e-3 * torch.ones(n, T, Fb), g)  # sensor noise floor
        return {"x": self.features(foa), **self.labels(ev)}

    def features(self, foa: Tensor) -> Tensor:
        """Log-power of W, X, Y, Z and the normalised intensity vector: ``[n, 7, T, F]``."""
        W, Y, Z, X = foa.unbind(1)
        p = torch.stack([W.abs() ** 2, X.abs() ** 2, Y.abs() ** 2, Z.abs() ** 2], 1)
        energy = p[:, 0] + p[:, 1:].sum(1) / 3 + 1e-6
        inten = torch.stack([(W.conj() * V).real for V in (X, Y, Z)], 1) / energy.unsqueeze(1)
        return torch.cat([torch.log(p + 1e-3), inten], 1)

    def labels(self, ev: dict) -> dict[str, Tensor]:
        """ACCDOA targets and references per frame."""
        n, K, L = ev["active"].shape
        act, az, el = ev["active"], ev["az"], ev["el"]  # [n, K, L]
        xyz = torch.stack([torch.cos(az) * torch.cos(el), torch.sin(az) * torch.cos(el), torch.sin(el)], -1)  # [n, K, L, 3]
        onehot = F.one_hot(ev["cls"], self.classes).bool()  # [n, K, C]
        ref_mask = (act.unsqueeze(3) & onehot.unsqueeze(2)).permute(0, 2, 3, 1)  # [n, L, C, K]
        ref_doa = xyz.permute(0, 2, 1, 3).unsqueeze(2).expand(n, L, self.classes, K, 3)  # [n, L, C, K, 3]
        first = ref_mask.float().cumsum(-1).eq(1) & ref_mask  # ACCDOA keeps one event per class (the first slot)
        target = (ref_doa * first.unsqueeze(-1).float()).sum(3)  # [n, L, C, 3]
        return {"target": target, "ref_doa": ref_doa, "ref_mask": ref_mask}

    @functools.lru_cache(maxsize=8)
    def dataset(self, split: str) -> dict[str, Tensor]:
        """A split with features standardised per channel and band by the training split's
        statistics (the baseline's feature scaler)."""
        D = self.generate(split)
        train = D["x"] if split == "train" else self.dataset("train")["raw"]
        mu, sd = train.mean((0, 2), keepdim=True), train.std((0, 2), keepdim=True) + 1e-6
        return {**D, "raw": D["x"], "x": (D["x"] - mu) / sd}

    # -- the model ---------------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        g = C.gen("seld-init", seed)
        c, H = self.channels, self.hidden
        d_in = c * self.bins // 8

        def u(*shape, fan):  # torch.nn.Linear / GRU default
            return (torch.rand(*shape, generator=g) * 2 - 1) / math.sqrt(fan)

        def kaiming(*shape):  # He init for the ReLU convs
            return torch.randn(*shape, generator=g) * math.sqrt(2 / (shape[1] * shape[2] * shape[3]))

        P = {"k1": kaiming(c, 7, 3, 3), "b1": torch.zeros(c), "k2": kaiming(c, c, 3, 3), "b2": torch.zeros(c),
             "k3": kaiming(c, c, 3, 3), "b3": torch.zeros(c),
             "gru_i": u(3 * H, d_in, fan=H), "gru_h": u(3 * H, H, fan=H), "gru_bi": torch.zeros(3 * H),
             "gru_bh": torch.zeros(3 * H)}
        if self.output == "accdoa":
            P |= {"out": u(3 * self.classes, H, fan=H), "out_b": torch.zeros(3 * self.classes)}
        else:
            P |= {"sed": u(self.classes, H, fan=H), "sed_b": torch.zeros(self.classes),
                  "doa": u(3 * self.classes, H, fan=H), "doa_b": torch.zeros(3 * self.classes)}
        return P

    def trunk(self, P: dict, x: Tensor) -> Tensor:
        """CRNN trunk: ``[B, 7, T, F] -> [B, T, hidden]`` (pooling over frequency only)."""
        h = x
        for k in ("1", "2", "3"):  # conv 3x3, ReLU, max-pool 2 over frequency (a reshape: cheaper than max_pool2d)
            h = F.relu(F.conv2d(h, P["k" + k], P["b" + k], padding=1))
            h = h.unflatten(-1, (h.shape[-1] // 2, 2)).amax(-1)  # [B, c, T, F / 2^l]
        seq = h.permute(0, 2, 1, 3).flatten(2)  # [B, T, c F/8]
        gi = seq @ P["gru_i"].T + P["gru_bi"]  # [B, T, 3H]: input projections, all steps at once
        state = torch.zeros(x.shape[0], self.hidden, dtype=x.dtype)
        outs = []
        # unbind/split, not slicing: a slice's backward writes a zero tensor of the full size
        for gi_r, gi_z, gi_n in zip(*(g.unbind(1) for g in gi.split(self.hidden, -1))):  # GRU (torch.nn.GRU's equations)
            gh_r, gh_z, gh_n = (state @ P["gru_h"].T + P["gru_bh"]).split(self.hidden, -1)
            r, z = torch.sigmoid(gi_r + gh_r), torch.sigmoid(gi_z + gh_z)
            state = torch.lerp(torch.tanh(gi_n + r * gh_n), state, z)  # (1 - z) n + z h
            outs.append(state)
        return torch.stack(outs, 1)

    def predict(self, P: dict, x: Tensor) -> tuple[Tensor, Tensor]:
        """(activity ``[B, L, C]`` in [0, 1], unit-ish DOA ``[B, L, C, 3]``)."""
        h = self.trunk(P, x)
        B, L, _ = h.shape
        if self.output == "accdoa":
            a = torch.tanh(h @ P["out"].T + P["out_b"]).view(B, L, self.classes, 3)
            return a.norm(dim=-1), a
        sed = torch.sigmoid(h @ P["sed"].T + P["sed_b"])
        return sed, torch.tanh(h @ P["doa"].T + P["doa_b"]).view(B, L, self.classes, 3)

    # -- the Workload protocol ---------------------------------------------------------------------
    def batch(self, worker: int, num_workers: int, step: int) -> tuple[Tensor, Tensor]:
        """``batch_size`` of the worker's clips (i % n == worker), a fresh permutation per pass."""
        D = self.dataset("train")
        own = torch.arange(worker, self.n_train, num_workers)
        per_pass = max(1, len(own) // self.batch_size)
        perm = own[torch.randperm(len(own), generator=C.gen("seld-batch", self.data_seed, worker, step // per_pass))]
        j = (step % per_pass) * self.batch_size
        idx = perm[torch.arange(j, j + self.batch_size) % len(own)]
        return D["x"][idx], D["target"][idx]

    def loss(self, params: dict[str, Tensor], batch) -> Tensor:
        x, target = batch
        dt = params["k1"].dtype
        x, target = x.to(dt), target.to(dt)
        if self.output == "accdoa":
            _, a = self.predict(params, x)
            return ((a - target) ** 2).mean()
        h = self.trunk(params, x)
        B, L, _ = h.shape
        active = (target.norm(dim=-1) > 0.5).to(dt)  # [B, L, C]
        sed = F.binary_cross_entropy_with_logits(h @ params["sed"].T + params["sed_b"], active)
        doa = torch.tanh(h @ params["doa"].T + params["doa_b"]).view(B, L, self.classes, 3)
        doa_mse = (((doa - target) ** 2).sum(-1) * active).sum() / active.sum().clamp_min(1)
        return sed + doa_mse

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, float]:
        D = self.dataset("test")
        P = {k: v.detach() for k, v in params.items()}
        dt = P["k1"].dtype
        with torch.no_grad():
            loss = float(self.loss(P, (D["x"], D["target"])))
            act, doa = self.predict(P, D["x"].to(dt))
        return {"loss": loss, **seld_metrics(act > 0.5, doa, D["ref_doa"].to(dt), D["ref_mask"])}

    # -- the mechanism check -----------------------------------------------------------------------
    def reproduce(self, quick: bool = True, out=None, seeds: int | None = None) -> Result:
        """The report's ablation (ACCDOA baseline, each condition removed from the full set in
        turn: removing the interferers helps most) and ACCDOA vs the two-branch SELDnet."""
        from torch.func import vmap

        k = seeds or (3 if quick else 5)
        rounds = 150 if quick else 600
        conds = {"full": {}, "no ambient": {"ambient": False}, "no reverb": {"reverb": False},
                 "no interferers": {"interferers": False}}
        runs: dict[str, list[dict]] = {}
        with C.single_thread():
            for label, out_kind, variants in (("ACCDOA", "accdoa", conds), ("SED+DOA two-branch", "seddoa", {"full": {}})):
                ws = [dataclasses.replace(self, output=out_kind, **v) for v in variants.values()]
                for w in ws:
                    w.dataset("train"), w.dataset("test")

                def batch(step, ws=ws):  # [M, 2 x batch_size, ...]: each model its own dataset
                    return _stack_models(ws, k, step)

                def loss(P, b, e, w0=ws[0]):  # equal minibatches: the mean over both = the workers' mean
                    return vmap(w0.loss)(P, b)

                P = C.train_many(ws[0], [ws[0].init_params(s) for _ in ws for s in range(k)], batch, rounds,
                                 self.default_lr, loss=loss)
                for i, (name, w) in enumerate(zip(variants, ws)):
                    runs[f"{label}, {name}"] = [w.evaluate({n: v[i * k + s] for n, v in P.items()}) for s in range(k)]
        metrics = ["seld_score", "er20", "f20", "le_cd", "lr_cd"]
        vals = {a: {m: [r[m] for r in rs] for m in metrics} for a, rs in runs.items()}
        res = Result(f"seld_synth: condition ablation and output format ({k} seeds, {rounds} rounds, n=2 workers)")
        res.tables["SELD metrics on each dataset version (mean ± sd over seeds)"] = C.arm_rows(vals, metrics, "model, dataset")
        sc = {a: C.mean(v["seld_score"]) for a, v in vals.items()}
        full = sc["ACCDOA, full"]
        gain = {c: full - sc[f"ACCDOA, {c}"] for c in ("no ambient", "no reverb", "no interferers")}
        res.check("directional interferers are the most detrimental condition",
                  "removing interferers lowers the SELD score more than removing ambient noise or reverb",
                  ", ".join(f"{c}: -{v:.4f}" for c, v in gain.items()),
                  gain["no interferers"] > max(gain["no ambient"], gain["no reverb"]))
        two = sc["SED+DOA two-branch, full"]
        score = {a: v["seld_score"] for a, v in vals.items()}
        res.paired("SELD score", {f"ACCDOA full minus {c}": (score["ACCDOA, full"], score[f"ACCDOA, {c}"])
                                  for c in ("no ambient", "no reverb", "no interferers")}
                   | {"ACCDOA minus two-branch": (score["ACCDOA, full"], score["SED+DOA two-branch, full"])})
        res.check("ACCDOA is at least as good as the two-branch SED+DOA output", "SELD score ACCDOA <= two-branch",
                  f"ACCDOA {full:.4f}, two-branch {two:.4f}", full <= two)
        if out is not None and not quick:
            res.figures.append(C.bars(vals, metrics, Path(out) / "seld_ablation.png", "SELD metrics per dataset version"))
        return res


def _stack_models(ws: list, k: int, step: int) -> tuple[Tensor, Tensor]:
    """Batches for M = len(ws) x k models, ``[M, 2 x batch_size, ...]``: the two workers'
    minibatches side by side, the same for the k seeds of a dataset version."""
    per_w = [tuple(torch.cat(p) for p in zip(w.batch(0, 2, step), w.batch(1, 2, step))) for w in ws]
    return tuple(torch.stack([b[j] for b in per_w for _ in range(k)]) for j in range(2))


def seld_metrics(pred_act: Tensor, pred_doa: Tensor, ref_doa: Tensor, ref_mask: Tensor, thr_deg: float = 20.0) -> dict:
    """DCASE2021 SELD metrics per frame: ``pred_act [N, L, C]`` (bool), ``pred_doa [N, L, C, 3]``,
    references ``ref_doa [N, L, C, K, 3]`` with ``ref_mask [N, L, C, K]``. A class-matched
    prediction is a true positive when within ``thr_deg`` of the nearest reference of its class."""
    err = C.angular_distance_deg(pred_doa.unsqueeze(3), ref_doa)  # [N, L, C, K]
    err = torch.where(ref_mask, err, torch.full_like(err, 1e9))
    nearest = err.min(-1).values  # [N, L, C]
    n_ref = ref_mask.sum(-1)  # [N, L, C]
    matched = pred_act & (n_ref > 0)  # class-matched predictions
    tp = (matched & (nearest <= thr_deg)).sum((-1,))  # [N, L] per frame
    fp = (pred_act.sum(-1) - tp)  # unmatched class or too far
    fn = n_ref.sum(-1) - tp
    S = torch.minimum(fn, fp).sum()
    D_ = (fn - fp).clamp_min(0).sum()
    I_ = (fp - fn).clamp_min(0).sum()
    N = n_ref.sum().clamp_min(1)
    TP = tp.sum()
    er = float((S + D_ + I_) / N)
    f = float(2 * TP / (2 * TP + fp.sum() + fn.sum()).clamp_min(1))
    le = float(nearest[matched].mean()) if bool(matched.any()) else 180.0
    lr = float(((n_ref > 0) & pred_act).sum() / (n_ref > 0).sum().clamp_min(1))
    return {"er20": er, "f20": f, "le_cd": le, "lr_cd": lr, "seld_score": (er + (1 - f) + le / 180 + (1 - lr)) / 4}
