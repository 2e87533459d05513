"""Rényi-DP accounting for Gaussian noise and its conversion to (ε, δ)-DP (METHODS.md §8).

Conversion used throughout: an (α, ρ(α))-RDP mechanism is (ρ(α) + ln(1/δ)/(α−1), δ)-DP for every
α > 1 (Mironov 2017, Prop. 3); the reported ε is the minimum over α. This is the conversion the
thesis uses; tighter conversions exist and are not applied, so ε here is an upper bound.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.optimize import minimize_scalar


def _require_positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _require_delta(delta: float) -> float:
    delta = float(delta)
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return delta


def _require_iterations(iterations) -> int:
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    return int(iterations)


def gaussian_rdp(alpha: float, l2_sensitivity: float, sigma: float, steps: int = 1) -> float:
    """RDP of `steps` adaptively composed Gaussian mechanisms: steps·α·Δ₂²/(2σ²) (Mironov 2017, Prop. 7 + composition)."""
    return steps * alpha * _require_positive("l2_sensitivity", l2_sensitivity) ** 2 / (
        2.0 * _require_positive("sigma", sigma) ** 2)


def dp_image_rdp(alpha: float, delta_f: float, sigma: float, iterations: int) -> float:
    """RDP of DP-Image after T iterations as the thesis states it: αΔf²/(2Tσ²) (METHODS §8).

    Thesis ch. 4, Theorem 4.4.1: releasing X_T is "(α, αΔf²/(2Tσ²))-RDP", Δf = 40·√d the
    diameter of the clipped latent box. Note that T *divides* the RDP: it is the thesis's own
    privacy-amplification-by-iteration claim over a contractive chain, not plain composition
    (which would multiply by T, see `gaussian_rdp`).
    Errata (METHODS §8): the claim needs every encode–decode–clip step to be contractive, which
    the thesis assumes and does not prove; the pure-DP claim "for α = ∞" is false. Figures
    computed from this function are conditional on that assumption and must be reported so.
    """
    return alpha * _require_positive("delta_f", delta_f) ** 2 / (
        2.0 * _require_iterations(iterations) * _require_positive("sigma", sigma) ** 2)


def linear_rdp_to_dp(c: float, delta: float) -> tuple[float, float]:
    """Closed-form (ε, α*) for an RDP curve ρ(α) = c·α: ε = c + 2√(c·ln(1/δ)) at α* = 1 + √(ln(1/δ)/c).

    Minimises c·α + ln(1/δ)/(α−1) over α > 1 (derivative c − ln(1/δ)/(α−1)² = 0).
    """
    c = _require_positive("c", c)
    log_inv_delta = math.log(1.0 / _require_delta(delta))
    return c + 2.0 * math.sqrt(c * log_inv_delta), 1.0 + math.sqrt(log_inv_delta / c)


def rdp_to_dp(rdp_of_alpha: Callable[[float], float], delta: float,
              alphas=None) -> tuple[float, float]:
    """(ε, best α) = min over α > 1 of ρ(α) + ln(1/δ)/(α−1) (Mironov 2017, Prop. 3; METHODS §8).

    Searches a grid of α (default: α−1 log-spaced over 1e-8…1e8), then refines with a bounded
    scalar minimisation on log(α−1) between the grid neighbours of the best point.
    """
    log_inv_delta = math.log(1.0 / _require_delta(delta))
    grid = np.sort(np.asarray(1.0 + np.logspace(-8, 8, 1601) if alphas is None else alphas, dtype=np.float64))
    if grid.ndim != 1 or grid.size == 0 or not np.all(grid > 1):
        raise ValueError("alphas must be a non-empty 1-d sequence of orders > 1")

    # Parameterised by x = log(α−1), not log α: at large ρ the optimum α* sits just above 1
    # (α*−1 ≈ 0.03 for DP-Image at T = 10⁴), where log α loses the relative precision of α−1.
    def epsilon_at(x: float) -> float:
        alpha_minus_1 = math.exp(x)
        return float(rdp_of_alpha(1.0 + alpha_minus_1)) + log_inv_delta / alpha_minus_1

    xs = np.log(grid - 1.0)
    values = np.array([epsilon_at(x) for x in xs])
    best = int(np.nanargmin(values))
    if not math.isfinite(values[best]):
        raise ValueError("the RDP curve is infinite at every order tried")
    lo, hi = xs[max(best - 1, 0)], xs[min(best + 1, xs.size - 1)]
    if hi > lo:
        refined = minimize_scalar(epsilon_at, bounds=(lo, hi), method="bounded",
                                  options={"xatol": 1e-12 * max(1.0, abs(lo), abs(hi))})
        if refined.success and refined.fun < values[best]:
            return float(refined.fun), 1.0 + math.exp(float(refined.x))
    return float(values[best]), float(grid[best])


def _linear_coefficient_for_epsilon(epsilon: float, delta: float) -> float:
    """The c with c + 2√(c·ln(1/δ)) = ε: c = (√(ln(1/δ) + ε) − √ln(1/δ))²."""
    epsilon = _require_positive("epsilon", epsilon)
    log_inv_delta = math.log(1.0 / _require_delta(delta))
    # Written as ε²/(√(L+ε)+√L)² to avoid cancellation when ε ≪ L.
    return epsilon ** 2 / (math.sqrt(log_inv_delta + epsilon) + math.sqrt(log_inv_delta)) ** 2


def dp_image_t_sigma_squared_for_epsilon(epsilon: float, delta: float, delta_f: float) -> float:
    """T·σ² at which DP-Image reaches exactly (ε, δ) under Theorem 4.4.1 (METHODS §8): Δf²/(2c).

    Conditional on the thesis's contractivity assumption (see `dp_image_rdp`).
    """
    c = _linear_coefficient_for_epsilon(epsilon, delta)
    return _require_positive("delta_f", delta_f) ** 2 / (2.0 * c)


def dp_image_sigma_for_epsilon(epsilon: float, delta: float, delta_f: float, iterations: int) -> float:
    """Smallest σ giving (ε, δ)-DP for DP-Image after T iterations under Theorem 4.4.1 (METHODS §8).

    σ = √(T·σ²/T) from `dp_image_t_sigma_squared_for_epsilon`. Conditional on contractivity.
    """
    t_sigma2 = dp_image_t_sigma_squared_for_epsilon(epsilon, delta, delta_f)
    return math.sqrt(t_sigma2 / _require_iterations(iterations))


def dp_image_iterations_for_epsilon(epsilon: float, delta: float, delta_f: float, sigma: float,
                                    max_iterations: int | None = None) -> int:
    """Smallest integer T giving (ε, δ)-DP at noise σ under Theorem 4.4.1 (METHODS §8).

    With `max_iterations`, refuses (ValueError with the numbers) when more would be needed.
    """
    t_sigma2 = dp_image_t_sigma_squared_for_epsilon(epsilon, delta, delta_f)
    sigma = _require_positive("sigma", sigma)
    # The 1e-12 slack stops float rounding of an exact integer ratio from adding one iteration.
    needed = max(1, math.ceil(t_sigma2 / sigma ** 2 * (1.0 - 1e-12)))
    if max_iterations is not None and needed > max_iterations:
        raise ValueError(
            f"DP-Image cannot reach epsilon={epsilon:g} at delta={delta:g} with sigma={sigma:g}, "
            f"delta_f={delta_f:g}: it needs T*sigma^2 = {t_sigma2:.6g}, i.e. T >= {needed} iterations, "
            f"more than the limit {max_iterations}")
    return needed
