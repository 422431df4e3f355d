"""Diagonal state-space pieces shared by ``s5_ptd`` and ``hiss_hier_ssm``: HiPPO-LegS, the
S4D/S5 and PTD diagonal initialisations, transfer functions, ZOH discretisation, the diagonal
recurrence computed as an FFT convolution, and the S4D convolution kernel.

Continuous SSM  x' = A x + B u,  y = C x + D u;  transfer function G(s) = C (sI - A)^-1 B.

* HiPPO-LegS (Gu et al. 2020): A_nk = -sqrt((2n+1)(2k+1)) for n > k, -(n+1) for n = k, 0 above
  the diagonal; B_n = sqrt(2n+1). A is non-normal: its eigenvalues are -1..-N but its
  eigenvector matrix has condition number ~1e19 at N = 32, so it cannot be diagonalised stably.
* S4D / S5 (Gu et al. 2022; Smith et al. 2023) diagonalise only the normal part
  A_N = A + P P^T, P_n = sqrt(n + 1/2) (A_N + 1/2 I is skew-symmetric, so V is unitary), and
  S4D-LegS uses B/2. Its transfer function agrees with HiPPO's only weakly: A_N has eigenvalues
  -1/2 + i w with |w| up to ~10 N, each a resonance of height ~|c_p b_p| / (1/2) that HiPPO does
  not have (Yu et al. 2024, "Robustifying State-space Models ..." section 3).
* PTD (Yu et al. 2024, section 4): perturb, then diagonalise. Pick E minimising
  kappa(V_{A+E}) + gamma ||E|| (here: the best of a few random E of spectral norm eps, over a
  small grid of eps), diagonalise A + E = V Lambda V^-1 and initialise Lambda, B~ = V^-1 B,
  C~ = C V. Then |G_PTD(is) - G_HiPPO(is)| = O(eps) uniformly in s (their bound
  ~(2 ln N + 4) eps): strong convergence, no resonances.

Discrete time (ZOH, step dt): lambda_bar = exp(lambda dt), B_bar = (lambda_bar - 1)/lambda B~, and
x_k = lambda_bar x_{k-1} + B_bar u_k is the causal convolution x = K * (B_bar u) with
K_k = lambda_bar^k, computed by FFT (``diag_scan``). S4D's SISO kernel per channel is
K_k = 2 Re(sum_n C_n B_bar_n lambda_bar_n^k) over N/2 conjugate pairs (``s4d_kernel``).

Complex parameters travel as real pairs (last axis of size 2, ``as_complex``), so every
compressor sees real vectors; they become complex only inside ``loss``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["hippo_legs", "normal_part", "s4d_legs_init", "s4d_lin_init", "ptd_init", "balance", "transfer", "transfer_dense",
           "zoh", "diag_scan", "diag_scan_loop", "s4d_kernel", "causal_conv", "as_complex", "as_pairs", "layer_norm",
           "s4d_block_init", "s4d_block"]


# -- HiPPO and its diagonalisations (float64, at initialisation only) -------------------------
def hippo_legs(N: int) -> tuple[Tensor, Tensor]:
    """HiPPO-LegS (A [N, N], B [N]) in float64."""
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)  # sqrt(2n+1)
    A = -(torch.tril(q[:, None] * q[None, :]) - torch.diag(torch.arange(N, dtype=torch.float64)))
    return A, q.clone()


def normal_part(N: int) -> tuple[Tensor, Tensor]:
    """(A_N, P): A_N = A + P P^T, the normal part S4D and S5 diagonalise."""
    A, _ = hippo_legs(N)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    return A + P[:, None] * P[None, :], P


def s4d_legs_init(N: int) -> tuple[Tensor, Tensor]:
    """(Lambda [N] complex, V [N, N] unitary): A_N = V diag(Lambda) V^H (S4D-LegS / S5).
    A_N + I/2 is skew-symmetric, so -i (A_N + I/2) is Hermitian: eigh gives a unitary V."""
    AN, _ = normal_part(N)
    w, V = torch.linalg.eigh(-1j * (AN + 0.5 * torch.eye(N, dtype=torch.float64)).to(torch.complex128))
    return torch.complex(torch.full_like(w, -0.5), w), V


def s4d_lin_init(N: int) -> Tensor:
    """S4D-Lin eigenvalues -1/2 + i pi n, n = 0..N-1 (one of each conjugate pair)."""
    n = torch.arange(N, dtype=torch.float64)
    return torch.complex(torch.full_like(n, -0.5), math.pi * n)


def ptd_init(A: Tensor, eps: Sequence[float] = (0.03, 0.1, 0.3), tries: int = 8, gamma: float = 1e3,
             generator: torch.Generator | None = None) -> dict[str, Tensor | float]:
    """Perturb-then-diagonalise (Yu et al. 2024, eq. of section 4.2): among ``tries`` random
    Gaussian E per eps (rescaled to spectral norm eps), the one minimising
    kappa(V_{A+E}) + gamma ||E||_2. Returns Lambda [N], V [N, N] (complex128), E, kappa, eps.
    Real A + E has conjugate-pair eigenvalues; all N are kept (the layer takes Re of its output).
    """
    if not eps or min(eps) <= 0 or tries < 1:
        raise ValueError(f"ptd_init: need positive eps values and tries >= 1, got eps={eps}, tries={tries}")
    best = None
    for e in eps:
        for _ in range(tries):
            E = torch.randn(A.shape, dtype=torch.float64, generator=generator)
            E = E * (e / torch.linalg.matrix_norm(E, 2))
            lam, V = torch.linalg.eig(A + E)
            V = V / torch.linalg.vector_norm(V, dim=0, keepdim=True)  # unit columns: kappa is scale-free
            kappa = float(torch.linalg.cond(V))
            score = kappa + gamma * e
            if best is None or score < best["score"]:
                best = {"Lambda": lam, "V": V, "E": E, "kappa": kappa, "eps": float(e), "score": score}
    return best


def balance(Bt: Tensor, Ct: Tensor) -> tuple[Tensor, Tensor]:
    """Rescale each eigenvector (V -> V diag(d)) so that row p of B~ [N, ...] and column p of
    C~ [..., N] have equal norms: the system, hence G(s), is unchanged, but after PTD the
    residues c_p b_p no longer pair a huge b_p (~kappa(V)) with a small c_p, so a first-order
    change of B~ or C~ during training moves G by O(sqrt|c_p b_p|), not O(kappa)."""
    nb = torch.linalg.vector_norm(Bt.reshape(Bt.shape[0], -1), dim=1)            # [N]
    nc = torch.linalg.vector_norm(Ct.reshape(-1, Ct.shape[-1]), dim=0)           # [N]
    d = torch.sqrt(nc / nb)
    return Bt * d.reshape(-1, *[1] * (Bt.dim() - 1)), Ct / d


def transfer(lam: Tensor, Bt: Tensor, Ct: Tensor, s: Tensor) -> Tensor:
    """Diagonal system's G(s) = Ct diag(1/(s - lam)) Bt at points s [S]; Bt [N, ...in], Ct [...out, N]
    -> [S, ...out, ...in] (SISO: Bt [N], Ct [N] -> [S])."""
    r = 1.0 / (s[:, None] - lam[None, :])  # [S, N]
    if Bt.dim() == 1:
        return (r * (Ct * Bt)[None, :]).sum(-1)
    return torch.einsum("on,sn,ni->soi", Ct, r, Bt)


def transfer_dense(A: Tensor, B: Tensor, C: Tensor, s: Tensor) -> Tensor:
    """G(s) = C (sI - A)^-1 B for a dense A [N, N] (the HiPPO reference), same shapes as ``transfer``."""
    A = A.to(torch.complex128)
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    # (sI - A)^-1 B by explicit inverse: solve() with a broadcast right-hand side is ~100x slower
    # on CPU, and sI - A is well conditioned on the imaginary axis for the stable systems used here
    X = torch.linalg.inv(s[:, None, None] * eye - A) @ B.to(A.dtype).reshape(A.shape[0], -1)  # [S, N, in]
    G = torch.einsum("...n,snk->s...k", C.to(A.dtype), X)
    return G.reshape(len(s), *C.shape[:-1], *B.shape[1:])


# -- discrete time --------------------------------------------------------------------------
def zoh(lam: Tensor, dt: Tensor | float) -> tuple[Tensor, Tensor]:
    """Zero-order hold: (lambda_bar, gain) with lambda_bar = exp(lambda dt) and B_bar = gain * B,
    gain = (lambda_bar - 1) / lambda (exact for piecewise-constant input)."""
    lam_bar = torch.exp(lam * dt)
    return lam_bar, (lam_bar - 1) / lam


def _powers(lam_bar: Tensor, L: int) -> Tensor:
    """lambda_bar^k for k = 0..L-1 as exp(k log lambda_bar): [..., N] -> [..., N, L]."""
    k = torch.arange(L, dtype=lam_bar.real.dtype)
    return torch.exp(torch.log(lam_bar)[..., None] * k)


def diag_scan(lam_bar: Tensor, v: Tensor) -> Tensor:
    """x_k = lambda_bar * x_{k-1} + v_k, x_{-1} = 0, for v [..., L, N] complex (lambda_bar [N]):
    the causal convolution of v with K_k = lambda_bar^k, by FFT (length 2L, no wrap-around)."""
    L = v.shape[-2]
    K = _powers(lam_bar, L)  # [N, L]
    X = torch.fft.fft(v.transpose(-1, -2), n=2 * L) * torch.fft.fft(K, n=2 * L)
    return torch.fft.ifft(X, n=2 * L)[..., :L].transpose(-1, -2)


def diag_scan_loop(lam_bar: Tensor, v: Tensor) -> Tensor:
    """The same recurrence, one step at a time (the reference ``diag_scan`` is tested against)."""
    x = torch.zeros_like(v[..., 0, :])
    out = []
    for k in range(v.shape[-2]):
        x = lam_bar * x + v[..., k, :]
        out.append(x)
    return torch.stack(out, -2)


def s4d_kernel(lam: Tensor, B: Tensor, C: Tensor, dt: Tensor, L: int) -> Tensor:
    """S4D SISO kernels, one per channel: lam, B, C [H, N] complex (one of each conjugate pair),
    dt [H] -> K [H, L] real, K_k = 2 Re(sum_n C_n B_bar_n lambda_bar_n^k)  (K = C A_bar^k B_bar)."""
    lam_bar, gain = zoh(lam, dt[:, None])
    return 2 * torch.einsum("hn,hnl->hl", C * gain * B, _powers(lam_bar, L)).real


def causal_conv(u: Tensor, K: Tensor) -> Tensor:
    """y_t = sum_{k<=t} K_k u_{t-k} per channel, by real FFT: u [..., L, H], K [H, L] -> [..., L, H]."""
    L = u.shape[-2]
    y = torch.fft.irfft(torch.fft.rfft(u.transpose(-1, -2), n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)
    return y[..., :L].transpose(-1, -2)


# -- parameters as real pairs ---------------------------------------------------------------
def as_pairs(z: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """complex [...] -> real [..., 2] (what is stored, communicated and compressed)."""
    return torch.view_as_real(z.resolve_conj()).to(dtype).clone()


def as_complex(t: Tensor) -> Tensor:
    """real [..., 2] -> complex [...] (inside ``loss``; works under vmap and grad)."""
    return torch.complex(t[..., 0], t[..., 1])


def layer_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Parameter-free layer norm over the last axis (the pre-norm of the residual SSM blocks)."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


# -- an S4D residual block (S4D-Lin init; Gu et al. 2022) -------------------------------------
def s4d_block_init(prefix: str, H: int, N: int, g: torch.Generator, dt_min: float = 1e-3,
                   dt_max: float = 1e-1) -> dict[str, Tensor]:
    """Parameters of one block: N/2 conjugate pairs per channel (S4D-Lin, B = 1, C ~ CN(0, 1)),
    log dt ~ U(log dt_min, log dt_max) per channel, skip D, and an output linear map H -> H."""
    lam = s4d_lin_init(N // 2).expand(H, N // 2)
    log_dt = math.log(dt_min) + torch.rand(H, generator=g) * (math.log(dt_max) - math.log(dt_min))
    C = torch.randn(H, N // 2, 2, generator=g) * math.sqrt(0.5)
    return {f"{prefix}log_neg_re": torch.log(-lam.real).float().clone(), f"{prefix}im": lam.imag.float().clone(),
            f"{prefix}B": as_pairs(torch.ones(H, N // 2, dtype=torch.complex128)), f"{prefix}C": C,
            f"{prefix}log_dt": log_dt, f"{prefix}D": torch.randn(H, generator=g),
            f"{prefix}out.w": torch.randn(H, H, generator=g) / math.sqrt(H), f"{prefix}out.b": torch.zeros(H)}


def s4d_block(p: dict[str, Tensor], prefix: str, x: Tensor) -> Tensor:
    """x + W gelu(S4D(LN(x)) + D LN(x)) + b (pre-norm residual block): x [..., L, H] -> [..., L, H]."""
    z = layer_norm(x)
    lam = torch.complex(-torch.exp(p[f"{prefix}log_neg_re"]), p[f"{prefix}im"])
    K = s4d_kernel(lam, as_complex(p[f"{prefix}B"]), as_complex(p[f"{prefix}C"]), torch.exp(p[f"{prefix}log_dt"]),
                   x.shape[-2])                                                      # [H, L]
    y = torch.nn.functional.gelu(causal_conv(z, K) + p[f"{prefix}D"] * z)
    return x + y @ p[f"{prefix}out.w"].T + p[f"{prefix}out.b"]
