"""``stem_video`` -- Spatiotemporal Entropy Model is All You Need for Learned Video Compression
(Sun, Tang, Li, Liu, Zhang; 2021). No official code; the reference is the unofficial
mmSir/SpatioTemporalEntropyModel (``spatiotemporalpriors.py``, CompressAI-based; read, not copied).

One autoencoder codes raw frames -- no motion estimation, no residuals; a spatiotemporal
entropy model removes the redundancy between frames in latent space:

    y_t = g_a(x_t);  y^_t = y_t + U(-1/2, 1/2) in training, round(y_t) at test
    z_t = h_a([y_t, y^_{t-1}]);  z^_t likewise quantised
    (mu, sigma) = EPM([TPM(y^_{t-1}), h_s(z^_t), MaskedConv(y^_t)])
    p(y^) = prod [Phi((y^ - mu + 1/2)/sigma) - Phi((y^ - mu - 1/2)/sigma)]
    L = R + lambda D,  R = -log2 p(y^) - log2 p(z^) (bits per pixel),  D = MSE.

TPM is the temporal prior (a conv stack on the previous decoded latent), h_s the hyperprior
(Balle et al. 2018), MaskedConv the causal spatial context (Minnen et al. 2018, 5x5 mask A; at
decode time it runs in raster order, so the rate is computable in one pass). The first frame of
a clip (the I-frame) sees y^_0 = 0. A factorised Laplace prior (per channel location and
scale) on z replaces CompressAI's entropy bottleneck. ``temporal=False`` drops TPM and the
y^_{t-1} input of h_a: a pure image codec, the paper's ablation.

Model/data: moving-sprite video -- 32x32 frames in [0, 1], a static smooth background and 1-2
striped shapes (squares or discs) of random size and intensity moving at constant velocity,
3-frame clips, generated from (data_seed, worker, step). g_a: two stride-2 5x5 convs -> an 8x8x16 latent; g_s mirrors it.

Metrics: ``bpp`` (bits per pixel from the likelihoods, rounded latents, test clips),
``psnr`` (dB), per frame type; the primary metric is ``rd`` = bpp + lambda MSE, the loss at test.

DP: yes -- each worker codes its own clips; the rate term is part of the loss, and its
gradient (all modules) is what is communicated.

Mechanism check (over seeds), at exactly matched PSNR: one autoencoder is trained end to end
with two entropy models at once (``ablation=true``: the rate term is the mean of the two, so
the latents are shaped for neither alone) -- the spatiotemporal one and a pure image one (no
TPM, no y^_{t-1} in h_a). Both price the same rounded latents of the test clips, decoded to
the same frames: the P-frame bpp with TPM should be >= 30% lower.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.reproduce.result import Result

from .core import data as D
from .core.base import fit
from .core.report import arm_table, mean, plot_images, seeds_or, single_thread

# -- data: moving sprites -----------------------------------------------------------------------


def sprites(n: int, gen: torch.Generator, frames: int = 3, size: int = 32, speed: float = 1.0) -> Tensor:
    """``[n, frames, 1, size, size]`` clips in [0, 1]: a static smooth background (a random 4x4
    grid upsampled bicubically, level 0.1-0.4) and 1-2 striped shapes (square or disc, side 5-10
    px, stripes of random angle and period carried with the shape) moving at a constant velocity
    of up to ``speed`` px/frame in each axis. The texture is what an image codec pays for in every frame and a
    temporal prior can take from the previous one."""
    k = torch.randint(1, 3, (n, 1), generator=gen)
    shape = torch.randint(0, 2, (n, 2), generator=gen)
    half = 2.5 + 2.5 * torch.rand(n, 2, generator=gen)
    amp = 0.5 + 0.5 * torch.rand(n, 2, generator=gen)
    p0 = 6 + (size - 12) * torch.rand(n, 2, 2, generator=gen)            # [n, shape, (row, col)]
    v = (torch.rand(n, 2, 2, generator=gen) * 2 - 1) * speed
    ang = torch.rand(n, 2, generator=gen) * math.pi
    freq = 2 * math.pi / (2.5 + 2.5 * torch.rand(n, 2, generator=gen))
    phase = torch.rand(n, 2, generator=gen) * 2 * math.pi
    level = 0.1 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen)
    bg = F.interpolate(torch.rand(n, 1, 4, 4, generator=gen), size=(size, size), mode="bicubic", align_corners=True)
    bg = (level * (0.5 + bg)).clamp(0, 1)[:, 0]                          # [n, size, size]
    r, c = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5, torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    E = lambda t: t[..., None, None]
    clips = []
    for f in range(frames):
        p = p0 + f * v  # [n, 2, 2]
        dr, dc = r[None, None] - E(p[..., 0]), c[None, None] - E(p[..., 1])  # [n, 2, size, size]
        # soft edges (one pixel wide): squares by the max-norm, discs by the Euclidean norm
        dist = torch.where(E(shape) == 0, torch.maximum(dr.abs(), dc.abs()), (dr * dr + dc * dc).sqrt())
        mask = (E(half) + 0.5 - dist).clamp(0, 1) * E((torch.arange(2)[None] < k).float())
        stripes = 0.6 + 0.4 * torch.sin(E(freq) * (dr * E(ang.cos()) + dc * E(ang.sin())) + E(phase))
        frame = bg
        for j in range(2):  # the second shape occludes the first
            frame = frame * (1 - mask[:, j]) + mask[:, j] * (amp[:, j, None, None] * stripes[:, j])
        clips.append(frame)
    return torch.stack(clips, 1)[:, :, None]


# -- the codec ------------------------------------------------------------------------------

MASK_A = torch.ones(5, 5)
MASK_A[2, 2:] = 0
MASK_A[3:] = 0  # causal: rows above, and the left part of the current row (raster order)


def _conv(g: torch.Generator, cin: int, cout: int, k: int) -> tuple[Tensor, Tensor]:
    return torch.randn(cout, cin, k, k, generator=g) / math.sqrt(cin * k * k), torch.zeros(cout)


def _deconv(g: torch.Generator, cin: int, cout: int, k: int) -> tuple[Tensor, Tensor]:
    return torch.randn(cin, cout, k, k, generator=g) / math.sqrt(cin * k * k / 4), torch.zeros(cout)


def gaussian_likelihood(y: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """P(round-bin of y) under N(mu, sigma^2): Phi((1/2 - |y - mu|)/sigma) - Phi((-1/2 - |y - mu|)/sigma)."""
    v = (y - mu).abs()
    cdf = lambda x: 0.5 * torch.erfc(-x / math.sqrt(2))
    return (cdf((0.5 - v) / sigma) - cdf((-0.5 - v) / sigma)).clamp(min=1e-9)


def laplace_likelihood(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """P(round-bin of z) under a per-channel Laplace(loc, scale) (``loc``, ``scale`` [C])."""
    loc, scale = loc[None, :, None, None], scale[None, :, None, None]
    cdf = lambda x: 0.5 + 0.5 * torch.sign(x - loc) * (-torch.expm1(-(x - loc).abs() / scale))
    return (cdf(z + 0.5) - cdf(z - 0.5)).clamp(min=1e-9)


@dataclasses.dataclass(frozen=True)
class STEMVideo:
    temporal: bool = True        # False: a pure image codec (no TPM, no y^_{t-1} in h_a)
    ablation: bool = False       # also train a pure image entropy model ("img." params) on the same latents
    lam: float = 400.0           # lambda of R + lambda D (D: MSE of [0, 1] frames)
    width: int = 16              # transform channels
    latent: int = 16             # y channels (8x8 spatial)
    hyper: int = 8               # z channels (4x4 spatial)
    clips: int = 2               # 3-frame clips per worker per round
    eval_clips: int = 32
    data_seed: int = 0

    name: ClassVar[str] = "stem_video"
    paper: ClassVar[str] = "Spatiotemporal Entropy Model is All You Need for Learned Video Compression"
    primary_metric: ClassVar[str] = "rd"
    higher_is_better: ClassVar[bool] = False
    default_lr: ClassVar[float] = 6e-3
    default_rounds: ClassVar[int] = 600
    default_optimizer: ClassVar[str] = "adam"

    def __post_init__(self):
        if self.lam <= 0 or min(self.width, self.latent, self.hyper, self.clips) < 1:
            raise ValueError("stem_video: need lam > 0 and width, latent, hyper, clips >= 1")
        if self.ablation and not self.temporal:
            raise ValueError("stem_video: ablation=true pairs the temporal model with an image model; keep temporal=true")

    # -- parameters ----------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Tensor]:
        g = D.rng("stem-init", seed)
        N, C = self.width, self.latent
        p: dict[str, Tensor] = {}
        p["ga1.w"], p["ga1.b"] = _conv(g, 1, N, 5)
        p["ga2.w"], p["ga2.b"] = _conv(g, N, C, 5)
        p["gs1.w"], p["gs1.b"] = _deconv(g, C, N, 5)
        p["gs2.w"], p["gs2.b"] = _deconv(g, N, 1, 5)
        p.update(self._entropy_init(g, ""))
        if self.ablation:
            p.update(self._entropy_init(g, "img."))
        return p

    def _entropy_init(self, g: torch.Generator, prefix: str) -> dict[str, Tensor]:
        N, C, Z = self.width, self.latent, self.hyper
        p: dict[str, Tensor] = {}
        p["ha1.w"], p["ha1.b"] = _conv(g, 2 * C, N, 3)      # [y_t, y^_{t-1}] (zeros when not temporal)
        p["ha2.w"], p["ha2.b"] = _conv(g, N, Z, 3)          # stride 2 -> 4x4
        p["hs1.w"], p["hs1.b"] = _deconv(g, Z, N, 4)        # back to 8x8
        p["hs2.w"], p["hs2.b"] = _conv(g, N, C, 3)
        p["tpm1.w"], p["tpm1.b"] = _conv(g, C, C, 3)
        p["tpm2.w"], p["tpm2.b"] = _conv(g, C, C, 3)
        p["ctx.w"], p["ctx.b"] = _conv(g, C, C, 5)          # masked (MASK_A)
        p["epm1.w"], p["epm1.b"] = _conv(g, 4 * C, 2 * C, 1)  # [TPM 2C (y^_{t-1} and features), h_s C, ctx C]
        p["epm2.w"], p["epm2.b"] = _conv(g, 2 * C, 2 * C, 1)  # -> (mu, log sigma)
        p["tpm.gate"] = torch.zeros(C)
        p["z.loc"], p["z.scale"] = torch.zeros(Z), torch.full((Z,), -2.0)  # softplus(-2) ~ 0.13: z starts cheap
        return {prefix + k: v for k, v in p.items()}

    # -- the transforms and the entropy model ---------------------------------------------------
    def analysis(self, p, x: Tensor) -> Tensor:
        return F.conv2d(F.leaky_relu(F.conv2d(x, p["ga1.w"], p["ga1.b"], stride=2, padding=2), 0.1), p["ga2.w"], p["ga2.b"],
                        stride=2, padding=2)

    def synthesis(self, p, y: Tensor) -> Tensor:
        h = F.leaky_relu(F.conv_transpose2d(y, p["gs1.w"], p["gs1.b"], stride=2, padding=2, output_padding=1), 0.1)
        return F.conv_transpose2d(h, p["gs2.w"], p["gs2.b"], stride=2, padding=2, output_padding=1)

    def entropy_params(self, p, y_hat: Tensor, prev: Tensor, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, sigma) of y^_t from [TPM(y^_{t-1}) [B, 2C, 8, 8], h_s(z^_t), MaskedConv(y^_t) [B, C, 8, 8]];
        ``prev`` is zero for the image model (and the I-frame)."""
        hs = F.conv2d(F.leaky_relu(F.conv_transpose2d(z_hat, p["hs1.w"], p["hs1.b"], stride=2, padding=1), 0.1),
                      p["hs2.w"], p["hs2.b"], padding=1)
        tpm = F.conv2d(F.leaky_relu(F.conv2d(prev, p["tpm1.w"], p["tpm1.b"], padding=1), 0.1), p["tpm2.w"], p["tpm2.b"], padding=1)
        tpm = torch.cat([prev, tpm], 1)  # a skip: y^_{t-1} itself reaches the 1x1 EPM
        ctx = F.conv2d(y_hat, p["ctx.w"] * MASK_A.to(y_hat.dtype), p["ctx.b"], padding=2)
        h = F.leaky_relu(F.conv2d(torch.cat([tpm, hs, ctx], 1), p["epm1.w"], p["epm1.b"]), 0.1)
        mu, log_sigma = F.conv2d(h, p["epm2.w"], p["epm2.b"]).chunk(2, 1)
        mu = mu + p["tpm.gate"][None, :, None, None] * prev  # the temporal prior's mean: a share of y^_{t-1} + a correction
        return mu, F.softplus(log_sigma).clamp(min=0.11)  # CompressAI's scale lower bound

    def rate(self, p, y: Tensor, y_hat: Tensor, prev: Tensor, u_z: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """(bits of y^, bits of z^) per frame ``[B F]`` under one entropy model (``p`` unprefixed)."""
        z = F.conv2d(F.leaky_relu(F.conv2d(torch.cat([y, prev], 1), p["ha1.w"], p["ha1.b"], padding=1), 0.1),
                     p["ha2.w"], p["ha2.b"], stride=2, padding=1)                                     # [B F, Z, 4, 4]
        z_hat = z + u_z.reshape(z.shape) if u_z is not None else torch.round(z)
        mu, sigma = self.entropy_params(p, y_hat, prev, z_hat)
        bits_y = -torch.log2(gaussian_likelihood(y_hat, mu, sigma)).sum((1, 2, 3))
        bits_z = -torch.log2(laplace_likelihood(z_hat, p["z.loc"], F.softplus(p["z.scale"]) + 0.01)).sum((1, 2, 3))
        return bits_y, bits_z

    def code_clip(self, p, clip: Tensor, noise: Optional[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        """Code clips ``[B, F, 1, 32, 32]``. ``noise`` = (U_y [B, F, C, 8, 8], U_z [B, F, Z, 4, 4])
        for training, None to round. y^_t does not depend on the entropy model, so all frames
        run as one batch with y^_{t-1} the previous frame's latent (zeros before the first).
        Returns bits, mse ``[B, F]`` (and img_bits with ``ablation``) and x_hat ``[B, F, 1, 32, 32]``."""
        B, Fr = clip.shape[:2]
        x = clip.reshape(B * Fr, *clip.shape[2:])
        y = self.analysis(p, x)                                            # [B F, C, 8, 8]
        y_hat = y + noise[0].reshape(y.shape) if noise is not None else torch.round(y)
        yf = y_hat.reshape(B, Fr, *y.shape[1:])
        prev = torch.cat([torch.zeros_like(yf[:, :1]), yf[:, :-1]], 1).reshape(y.shape)  # y^_{t-1}
        u_z = noise[1] if noise is not None else None
        by, bz = self.rate(p, y, y_hat, prev if self.temporal else torch.zeros_like(prev), u_z)
        x_hat = self.synthesis(p, y_hat)
        out = {"bits": (by + bz).reshape(B, Fr), "bits_z": bz.reshape(B, Fr),
               "mse": ((x_hat - x) ** 2).mean((1, 2, 3)).reshape(B, Fr), "x_hat": x_hat.reshape(clip.shape)}
        if self.ablation:  # the image model codes the same latents without the previous frame
            img = {k[4:]: v for k, v in p.items() if k.startswith("img.")}
            by, bz = self.rate(img, y, y_hat, torch.zeros_like(prev), u_z)
            out["img_bits"] = (by + bz).reshape(B, Fr)
        return out

    # -- the Workload protocol ----------------------------------------------------------------
    def batch(self, worker: int, num_workers: int, step: int):
        """(clips [B, 3, 1, 32, 32], U_y, U_z) from (data_seed, worker, step): each worker its own clips."""
        g = D.rng("stem", self.data_seed, worker, step)
        clips = sprites(self.clips, g)
        u = lambda *s: torch.rand(self.clips, 3, *s, generator=g) - 0.5
        return clips, u(self.latent, 8, 8), u(self.hyper, 4, 4)

    def loss(self, params, batch) -> Tensor:
        """R + lambda D in bits per pixel; with ``ablation`` the rate is the mean of the two entropy
        models' (one autoencoder shaped by both, so neither model's latents are favoured)."""
        clips, uy, uz = batch
        dtype = params["ga1.w"].dtype
        c = self.code_clip(params, clips.to(dtype), (uy.to(dtype), uz.to(dtype)))
        rate = c["bits"].mean() if not self.ablation else (c["bits"].mean() + c["img_bits"].mean()) / 2
        return rate / (32 * 32) + self.lam * c["mse"].mean()

    def test_clips(self) -> Tensor:
        return sprites(self.eval_clips, D.rng("stem-test", self.data_seed))

    @torch.no_grad()
    def measure(self, params) -> dict[str, float]:
        """Rounded latents on the test clips: bpp and PSNR of the I-frame and the P-frames
        (``img_bpp_*``: the image entropy model's, with ``ablation``)."""
        dtype = params["ga1.w"].dtype
        c = self.code_clip(params, self.test_clips().to(dtype), None)
        bpp = (c["bits"].mean(0) / (32 * 32)).tolist()  # per frame
        mse = c["mse"].mean(0).tolist()
        psnr = lambda m: 10 * math.log10(1 / max(m, 1e-12))
        out = {"bpp": mean(bpp), "psnr": psnr(mean(mse)), "bpp_i": bpp[0], "bpp_p": mean(bpp[1:]),
               "psnr_i": psnr(mse[0]), "psnr_p": psnr(mean(mse[1:])), "rd": mean(bpp) + self.lam * mean(mse)}
        if self.ablation:
            img = (c["img_bits"].mean(0) / (32 * 32)).tolist()
            out.update({"img_bpp_i": img[0], "img_bpp_p": mean(img[1:])})
        return out

    def evaluate(self, params) -> dict[str, float]:
        m = self.measure(params)
        return {"loss": m["rd"], **m}

    # -- mechanism check -----------------------------------------------------------------------
    def reproduce(self, quick: bool = True, out=None, seeds: Optional[int] = None) -> Result:
        """P-frame bpp with and without the temporal prior at exactly matched PSNR: one
        autoencoder, trained end to end with both entropy models (``ablation=true``), codes the
        test clips once; the spatiotemporal and the pure image entropy model price the same
        latents. Also reported: a pure image codec trained alone, for reference."""
        k = seeds_or(seeds, 3)
        rounds = 300 if quick else 2000
        arms = {a: {m: [] for m in ("bpp_i", "bpp_p", "psnr_p")} for a in
                ("image entropy model (no TPM)", "spatiotemporal entropy model (TPM)")}
        figs = {}
        with single_thread():
            for s in range(k):
                w = dataclasses.replace(self, temporal=True, ablation=True, data_seed=s)
                params, _ = fit(w, s, rounds)
                m = w.measure(params)
                for arm, pre in (("image entropy model (no TPM)", "img_"), ("spatiotemporal entropy model (TPM)", "")):
                    arms[arm]["bpp_i"].append(m[pre + "bpp_i"])
                    arms[arm]["bpp_p"].append(m[pre + "bpp_p"])
                    arms[arm]["psnr_p"].append(m["psnr_p"])  # one decoder: the same reconstructions
                if s == 0:
                    clip = w.test_clips()[:6]
                    with torch.no_grad():
                        rec = w.code_clip(params, clip, None)["x_hat"]
                    figs = {**{f"frame {f + 1}": clip[:, f, 0] * 2 - 1 for f in range(3)},
                            **{f"decoded {f + 1}": rec[:, f, 0].clamp(0, 1) * 2 - 1 for f in range(3)}}
        res = Result(f"stem_video: spatiotemporal vs image entropy model on one autoencoder, moving sprites 32x32 "
                     f"({k} seeds, {rounds} rounds, lambda {self.lam}, n=2)")
        res.tables["test clips, rounded latents (mean ± sd over seeds)"] = arm_table(arms, ["bpp_i", "bpp_p", "psnr_p"], "entropy model")
        b_img, b_tpm = mean(arms["image entropy model (no TPM)"]["bpp_p"]), mean(arms["spatiotemporal entropy model (TPM)"]["bpp_p"])
        drops = [1 - t / i for t, i in zip(arms["spatiotemporal entropy model (TPM)"]["bpp_p"], arms["image entropy model (no TPM)"]["bpp_p"])]
        res.check("the temporal prior cuts P-frame bits at matched PSNR", "P-frame bpp drop >= 30% (same latents, same PSNR)",
                  f"{b_img:.4f} -> {b_tpm:.4f} bpp ({100 * (1 - b_tpm / b_img):.1f}% less; per seed "
                  f"{', '.join(f'{100 * d:.0f}%' for d in drops)})", 1 - b_tpm / b_img >= 0.30)
        if out is not None and not quick:
            res.figures.append(_plot_frames(figs, Path(out) / "stem_video_frames.png"))
        return res


def _plot_frames(rows: dict[str, Tensor], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .core.report import save_figure

    fig, axes = plt.subplots(len(rows), 6, figsize=(7, len(rows) * 1.2), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(6):
            axes[r][c].imshow(imgs[c].float().numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[r][c].axis("off")
        axes[r][0].set_title(name, fontsize=7, loc="left")
    return save_figure(fig, path)
