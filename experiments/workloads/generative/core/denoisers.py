"""Tiny time-conditioned denoisers, written as pure functions of a parameter dict so that the
simulator can vmap their losses over workers: ``init(gen, ...) -> params`` and
``apply(params, x, t, cond=None) -> out``.

* :func:`mlp_init` / :func:`mlp_apply` -- for flat data ``x [B, d]`` (2-D points, 64-pixel digits):
  h_0 = silu(W_in [x, cond] + b_in + U_0 phi(t)),  h_l = h_{l-1} + silu(W_l h_{l-1} + b_l + U_l phi(t)),
  out = W_out h_L + b_out.
* :func:`unet_init` / :func:`unet_apply` -- for images ``x [B, C, 8, 8]``: conv in, a residual block
  at 8x8, a stride-2 conv to 4x4, a middle block, nearest upsampling with a skip connection,
  conv out (Ronneberger et al. 2015 in miniature; time added as a per-channel bias).

``t`` is ``[B]`` (one time) or ``[B, k]`` (k conditioning scalars, e.g. RDDM's (alpha_bar, beta_bar)),
floats roughly in [0, 1]; phi is a fixed sinusoidal embedding of each scalar (Vaswani et al. 2017,
DDPM), concatenated. The output head's meaning (eps, score, v, x0, several stacked) is the
caller's: these nets only map (x, t, cond) to ``out_dim`` numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["time_features", "mlp_init", "mlp_apply", "unet_init", "unet_apply", "convnet_init", "convnet_apply", "n_params"]


def time_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of each scalar in ``t`` ([B] or [B, k]) -> ``[B, k * dim]``; frequencies
    1 .. 1000 (the DDPM embedding of t * 1000)."""
    t = t if t.dim() == 2 else t[:, None]
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / max(half - 1, 1))
    ang = 1000.0 * t[:, :, None] * freqs  # [B, k, half]
    return torch.cat([ang.sin(), ang.cos()], -1).reshape(t.shape[0], -1)


def _linear(gen: torch.Generator, fan_in: int, fan_out: int, zero: bool = False) -> tuple[Tensor, Tensor]:
    w = torch.zeros(fan_out, fan_in) if zero else torch.randn(fan_out, fan_in, generator=gen) / math.sqrt(fan_in)
    return w, torch.zeros(fan_out)


def mlp_init(gen: torch.Generator, dim: int, out_dim: int | None = None, hidden: int = 128, depth: int = 3,
             cond_dim: int = 0, temb: int = 32, n_times: int = 1) -> dict[str, Tensor]:
    """Parameters of a ``depth``-layer MLP of width ``hidden`` (``depth`` = number of hidden layers)."""
    if depth < 1 or hidden < 1:
        raise ValueError(f"mlp needs depth >= 1 and hidden >= 1, got depth={depth}, hidden={hidden}")
    out_dim = dim if out_dim is None else out_dim
    p: dict[str, Tensor] = {}
    tdim = temb * n_times
    for i in range(depth):
        p[f"l{i}.w"], p[f"l{i}.b"] = _linear(gen, dim + cond_dim if i == 0 else hidden, hidden)
        p[f"l{i}.t"], _ = _linear(gen, tdim, hidden)
    p["out.w"], p["out.b"] = _linear(gen, hidden, out_dim, zero=True)  # start as the zero predictor
    return p


def mlp_apply(p: dict[str, Tensor], x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """``x [B, d]``, ``t [B]`` or ``[B, k]``, ``cond [B, c]`` -> ``[B, out_dim]``."""
    depth = sum(1 for k in p if k.endswith(".t"))
    temb = p["l0.t"].shape[1] // (t.shape[1] if t.dim() == 2 else 1)
    phi = time_features(t.to(x.dtype), temb)  # [B, k * temb]
    h = x if cond is None else torch.cat([x, cond.to(x.dtype)], -1)
    for i in range(depth):
        z = F.silu(h @ p[f"l{i}.w"].T + p[f"l{i}.b"] + phi @ p[f"l{i}.t"].T)
        h = z if i == 0 else h + z
    return h @ p["out.w"].T + p["out.b"]


def _conv(gen: torch.Generator, c_in: int, c_out: int, k: int = 3, zero: bool = False) -> tuple[Tensor, Tensor]:
    fan_in = c_in * k * k
    w = torch.zeros(c_out, c_in, k, k) if zero else torch.randn(c_out, c_in, k, k, generator=gen) / math.sqrt(fan_in)
    return w, torch.zeros(c_out)


def unet_init(gen: torch.Generator, channels: int = 1, out_channels: int | None = None, base: int = 16,
              cond_channels: int = 0, temb: int = 32, n_times: int = 1) -> dict[str, Tensor]:
    """A two-resolution U-Net for 8x8 (any even size) images, ``base`` channels at full resolution."""
    out_channels = channels if out_channels is None else out_channels
    c, c2, tdim = base, 2 * base, temb * n_times
    p: dict[str, Tensor] = {}
    p["in.w"], p["in.b"] = _conv(gen, channels + cond_channels, c)
    for name, width in (("b1", c), ("mid", c2), ("b2", c)):  # residual blocks, time as channel bias
        p[f"{name}.w1"], p[f"{name}.b1"] = _conv(gen, width, width)
        p[f"{name}.w2"], p[f"{name}.b2"] = _conv(gen, width, width)
        p[f"{name}.t"], _ = _linear(gen, tdim, width)
    p["down.w"], p["down.b"] = _conv(gen, c, c2)
    p["up.w"], p["up.b"] = _conv(gen, c2, c)
    p["skip.w"], p["skip.b"] = _conv(gen, 2 * c, c, k=1)
    p["out.w"], p["out.b"] = _conv(gen, c, out_channels, zero=True)
    return p


def _block(p: dict[str, Tensor], name: str, h: Tensor, phi: Tensor) -> Tensor:
    z = F.silu(F.conv2d(h, p[f"{name}.w1"], p[f"{name}.b1"], padding=1) + (phi @ p[f"{name}.t"].T)[:, :, None, None])
    return h + F.conv2d(z, p[f"{name}.w2"], p[f"{name}.b2"], padding=1)


def unet_apply(p: dict[str, Tensor], x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """``x [B, C, H, W]``, ``cond [B, C', H, W]`` (concatenated to x) -> ``[B, out_channels, H, W]``."""
    temb = p["b1.t"].shape[1] // (t.shape[1] if t.dim() == 2 else 1)
    phi = time_features(t.to(x.dtype), temb)
    h = x if cond is None else torch.cat([x, cond.to(x.dtype)], 1)
    h1 = _block(p, "b1", F.silu(F.conv2d(h, p["in.w"], p["in.b"], padding=1)), phi)  # [B, c, H, W]
    h2 = _block(p, "mid", F.silu(F.conv2d(h1, p["down.w"], p["down.b"], stride=2, padding=1)), phi)  # [B, 2c, H/2, W/2]
    up = F.silu(F.conv2d(F.interpolate(h2, scale_factor=2, mode="nearest"), p["up.w"], p["up.b"], padding=1))
    h3 = _block(p, "b2", F.conv2d(torch.cat([up, h1], 1), p["skip.w"], p["skip.b"]), phi)
    return F.conv2d(F.silu(h3), p["out.w"], p["out.b"], padding=1)


def convnet_init(gen: torch.Generator, channels: int = 1, out_channels: int | None = None, width: int = 16,
                 layers: int = 3, cond_channels: int = 0, temb: int = 32, n_times: int = 1) -> dict[str, Tensor]:
    """A plain stack of ``layers`` 3x3 convs of ``width`` channels (time as a per-channel bias after
    each, residual from the second on; odd layers dilated by 2, so 3 layers see 11x11), then a
    3x3 conv out: the cheapest conv denoiser."""
    out_channels = channels if out_channels is None else out_channels
    p: dict[str, Tensor] = {}
    for i in range(layers):
        p[f"c{i}.w"], p[f"c{i}.b"] = _conv(gen, channels + cond_channels if i == 0 else width, width)
        p[f"c{i}.t"], _ = _linear(gen, temb * n_times, width)
    p["out.w"], p["out.b"] = _conv(gen, width, out_channels, zero=True)
    return p


def convnet_apply(p: dict[str, Tensor], x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """``x [B, C, H, W]``, ``cond [B, C', H, W]`` -> ``[B, out_channels, H, W]``."""
    layers = sum(1 for k in p if k.endswith(".t"))
    temb = p["c0.t"].shape[1] // (t.shape[1] if t.dim() == 2 else 1)
    phi = time_features(t.to(x.dtype), temb)
    h = x if cond is None else torch.cat([x, cond.to(x.dtype)], 1)
    for i in range(layers):
        d = 1 + i % 2
        z = F.silu(F.conv2d(h, p[f"c{i}.w"], p[f"c{i}.b"], padding=d, dilation=d) + (phi @ p[f"c{i}.t"].T)[:, :, None, None])
        h = z if i == 0 else h + z
    return F.conv2d(h, p["out.w"], p["out.b"], padding=1)


def n_params(p: dict[str, Tensor]) -> int:
    return sum(int(v.numel()) for v in p.values())
