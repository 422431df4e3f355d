"""Theory stepsizes of the EF21 family (specs/ef-family.md §1, §3.3, §3.5, §3.7).

Notation: L the smoothness of f = mean_i f_i, L_i of f_i; L_AM = mean_i L_i,
L_QM = sqrt(mean_i L_i^2); alpha the compressor's contraction parameter.

    theta = 1 - sqrt(1 - alpha),  beta = (1 - alpha) / (1 - sqrt(1 - alpha))      (optimal s)
    xi(alpha) = sqrt(beta/theta) = (1 + sqrt(1 - alpha))/alpha - 1 <= 2/alpha - 1

* EF21 (Richtarik et al. 2021, Thm. 1):        lr <= 1/(L + L_QM xi(alpha))
* EF21-W and EF21's improved analysis (Richtarik, Gasanov, Burlachenko, ICLR 2024, Thms. 2-3):
                                               lr <= 1/(L + L_AM xi(alpha))
* PL(mu) variant (EF21 Thm. 2, as in the PL least-squares script):
                                               lr <= min(1/(L + L_QM sqrt(2 beta/theta)), theta/(2 mu))
* EF21-PP as FL_PyTorch computes it (s = rho = 1e-3, not the optimal s):
      theta_p = rho p_min + theta p_max - rho - (p_max - p_min)
      B = (beta p + (1 + 1/rho)(1 - p)) mean_i L_i^2      (L_AM^2 for the weighted variant)
      lr = 1/(L + sqrt(B / theta_p))
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["xi", "theta_beta", "l_am", "l_qm", "ef21", "ef21_pl", "ef21_pp", "LR_RULES"]


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")


def theta_beta(alpha: float, s: float | None = None) -> tuple[float, float]:
    """theta = 1 - (1+s)(1-alpha), beta = (1 + 1/s)(1-alpha); s defaults to the optimum
    1/sqrt(1-alpha) - 1 (giving theta = 1 - sqrt(1-alpha))."""
    _check_alpha(alpha)
    if alpha == 1.0:
        return 1.0, 0.0
    if s is None:
        r = math.sqrt(1.0 - alpha)
        return 1.0 - r, (1.0 - alpha) / (1.0 - r)
    return 1.0 - (1.0 + s) * (1.0 - alpha), (1.0 + 1.0 / s) * (1.0 - alpha)


def xi(alpha: float) -> float:
    """xi(alpha) = sqrt(beta/theta) = (1 + sqrt(1-alpha))/alpha - 1; xi(1) = 0."""
    _check_alpha(alpha)
    return (1.0 + math.sqrt(1.0 - alpha)) / alpha - 1.0


def _positive(name: str, values: Sequence[float]) -> list[float]:
    vals = [float(v) for v in values]
    if not vals or any(not (v > 0 and math.isfinite(v)) for v in vals):
        raise ValueError(f"{name} must be positive and finite, got {values!r}")
    return vals


def l_am(ls: Sequence[float]) -> float:
    vals = _positive("smoothness constants L_i", ls)
    return sum(vals) / len(vals)


def l_qm(ls: Sequence[float]) -> float:
    vals = _positive("smoothness constants L_i", ls)
    return math.sqrt(sum(v * v for v in vals) / len(vals))


def ef21(L: float, L_tilde: float, alpha: float) -> float:
    """1/(L + L_tilde xi(alpha)); L_tilde = L_QM (EF21) or L_AM (EF21-W / improved EF21)."""
    return 1.0 / (L + L_tilde * xi(alpha))


def ef21_pl(L: float, L_qm_: float, alpha: float, mu: float) -> float:
    theta, beta = theta_beta(alpha)
    if mu <= 0:
        raise ValueError(f"the PL stepsize needs mu > 0, got {mu}")
    first = 1.0 / (L + L_qm_ * math.sqrt(2.0 * beta / theta)) if beta > 0 else 1.0 / L
    return min(first, theta / (2.0 * mu))


def ef21_pp(L: float, ls: Sequence[float], alpha: float, p: float, rho: float = 1e-3, weighted: bool = False) -> float:
    """FL_PyTorch's EF21-PP stepsize with uniform participation probability p."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"participation p must be in (0, 1], got {p}")
    theta, beta = theta_beta(alpha, s=rho) if alpha < 1 else (1.0, 0.0)
    theta_p = rho * p + theta * p - rho  # p_min = p_max = p
    if theta_p <= 0:
        raise ValueError(f"EF21-PP's theta_p = {theta_p:.3g} <= 0 for p={p}, alpha={alpha}: participation too low "
                         "for this compressor; give a numeric --lr")
    msq = l_am(ls) ** 2 if weighted else l_qm(ls) ** 2
    big_b = (beta * p + (1.0 + 1.0 / rho) * (1.0 - p)) * msq
    return 1.0 / (L + math.sqrt(big_b / theta_p))


LR_RULES = {
    "theory": "1/(L + L_AM xi(alpha)) (EF21-W paper; valid for EF21 and EF21-W); EF21-PP's rule when participation < 1",
    "theory-qm": "1/(L + L_QM xi(alpha)) (original EF21 theorem)",
    "theory-pl": "min(1/(L + L_QM sqrt(2 beta/theta)), theta/(2 mu)) (EF21's PL theorem)",
}
