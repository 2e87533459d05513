"""Noise and selection mechanisms of differential privacy: pure formulas plus samplers.

Samplers draw only from `rng.secure_uniform` (OS entropy, never seeded) via inverse CDFs.
Caveat stated as far as the maths goes: these are the textbook real-valued mechanisms sampled in
float64; floating-point sampling is known to leak slightly beyond the textbook guarantee
(Mironov, CCS 2012) and no snapping/discretisation defence is applied here.
"""
from __future__ import annotations

import math

import numpy as np

from anoncli.privacy.rng import secure_uniform


def _require_positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


# ---------------------------------------------------------------- Laplace (METHODS §2, §5)

def laplace_scale(l1_sensitivity: float, epsilon: float) -> float:
    """Scale b = Δ₁/ε of the Laplace mechanism giving ε-DP (METHODS §2 DP-Pix, §5 IdentityDP)."""
    return _require_positive("l1_sensitivity", l1_sensitivity) / _require_positive("epsilon", epsilon)


def laplace_inverse_cdf(u: np.ndarray, scale: float) -> np.ndarray:
    """Quantile function of Laplace(0, b) at u ∈ (0, 1): b·ln(2u) below ½, −b·ln(2(1−u)) above."""
    u = np.asarray(u, dtype=np.float64)
    # Two branches instead of sign(u−½)·ln(1−2|u−½|): 2u and 1−u (u ≥ ½) are exact in float64,
    # so the tails keep full precision.
    lower = u < 0.5
    return np.where(lower, scale * np.log(np.where(lower, 2.0 * u, 1.0)),
                    -scale * np.log(np.where(lower, 1.0, 2.0 * (1.0 - u))))


def laplace_noise(scale: float, shape: int | tuple[int, ...] = ()) -> np.ndarray:
    """I.i.d. Laplace(0, scale) noise by inverse CDF of secure uniforms."""
    return laplace_inverse_cdf(secure_uniform(shape), _require_positive("scale", scale))


# ---------------------------------------------------------------- Gaussian

def gaussian_sigma_classic(l2_sensitivity: float, epsilon: float, delta: float) -> float:
    """σ = Δ₂·√(2 ln(1.25/δ))/ε of the classic Gaussian mechanism, (ε, δ)-DP for 0 < ε < 1.

    Dwork & Roth 2014, Theorem A.1; the proof needs ε < 1, so larger ε is refused rather than
    given a σ whose guarantee is unproven (use the RDP accountant instead).
    """
    _require_positive("l2_sensitivity", l2_sensitivity)
    _require_positive("epsilon", epsilon)
    if not epsilon < 1:
        raise ValueError(f"the classic Gaussian mechanism bound holds only for epsilon < 1, got "
                         f"epsilon={epsilon}; use anoncli.privacy.accountant (RDP) for larger epsilon")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return l2_sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def gaussian_noise(sigma: float, shape: int | tuple[int, ...] = ()) -> np.ndarray:
    """I.i.d. Normal(0, σ²) noise by Box–Muller from secure uniforms (both outputs used)."""
    sigma = _require_positive("sigma", sigma)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    count = int(np.prod(shape, dtype=np.int64))
    pairs = (count + 1) // 2
    radius = np.sqrt(-2.0 * np.log(secure_uniform(pairs)))
    angle = 2.0 * np.pi * secure_uniform(pairs)
    normals = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    return sigma * normals.reshape(shape)


# ---------------------------------------------------------------- exponential mechanism (METHODS §4)

def exponential_mechanism_probabilities(utilities, epsilon: float, sensitivity: float) -> np.ndarray:
    """Selection probabilities ∝ exp(ε·u/(2Δu)) of the exponential mechanism (METHODS §4).

    Computed after subtracting max(u), which leaves the ratios unchanged and cannot overflow.
    """
    u = np.asarray(utilities, dtype=np.float64)
    if u.ndim != 1 or u.size == 0 or not np.all(np.isfinite(u)):
        raise ValueError("utilities must be a non-empty 1-d array of finite numbers")
    factor = _require_positive("epsilon", epsilon) / (2.0 * _require_positive("sensitivity", sensitivity))
    weights = np.exp(factor * (u - u.max()))
    return weights / weights.sum()


def roulette_wheel(probabilities, size: int | None = None):
    """Index drawn with the given probabilities by a roulette wheel spun with secure uniforms."""
    p = np.asarray(probabilities, dtype=np.float64)
    cumulative = np.cumsum(p)
    spins = secure_uniform(() if size is None else size) * cumulative[-1]
    # side="right": an outcome with probability 0 has an empty slot and is never chosen.
    index = np.minimum(np.searchsorted(cumulative, spins, side="right"), p.size - 1)
    return int(index) if size is None else index


def exponential_mechanism_choice(utilities, epsilon: float, sensitivity: float, size: int | None = None):
    """Index chosen by the exponential mechanism (roulette wheel, METHODS §4); `size` draws if given."""
    return roulette_wheel(exponential_mechanism_probabilities(utilities, epsilon, sensitivity), size)


def two_outcome_keep_probability(votes, k: float, epsilon: float, sensitivity: float):
    """p = e^{εv/2Δq} / (e^{εv/2Δq} + e^{ε(k−v)/2Δq}) of keeping an attribute (METHODS §4).

    The exponential mechanism over {keep: utility v, flip: utility k−v}; evaluated as the
    logistic of ε(2v−k)/(2Δq), which is the same quantity without overflow.
    """
    from scipy.special import expit   # here: scipy.special's import costs every identity worker 0.4 s

    factor = _require_positive("epsilon", epsilon) / (2.0 * _require_positive("sensitivity", sensitivity))
    result = expit(factor * (2.0 * np.asarray(votes, dtype=np.float64) - float(k)))
    return float(result) if np.ndim(result) == 0 else result


# ---------------------------------------------------------------- vote bounding and subsampling (METHODS §4)

def tau_approximation(votes, tau: float) -> np.ndarray:
    """v̂ = v·min(τ/‖v‖₁, 1): votes scaled so ‖v̂‖₁ ≤ τ, hence L1 sensitivity 2τ (METHODS §4)."""
    tau = _require_positive("tau", tau)
    v = np.asarray(votes, dtype=np.float64)
    norm = float(np.abs(v).sum())
    return v.copy() if norm <= tau else v * (tau / norm)


def poisson_subsample(n: int, rate: float) -> np.ndarray:
    """Boolean mask of length n keeping each item independently with probability `rate` (METHODS §4)."""
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")
    return secure_uniform(int(n)) < rate
