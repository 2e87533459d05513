"""DP-Image's iteration (thesis ch. 4, Algorithm 6 and Theorem 4.4.1; METHODS.md §8), on any latent
backbone: the procedure and its privacy accounting, the networks come in as functions.

    for t = 0..T−1:  z_{t+1} = clip(f_E(f_D(z_t)), ±c) + N(0, σ² I_d);   release X_T = f_D(z_T)

Accounting: releasing z_T is (α, αΔf²/(2Tσ²))-RDP with Δf = 2c√d, the clip box's diameter
(privacy amplification by iteration, Feldman et al. 2018), **provided every step
z ↦ clip(f_E(f_D(z))) is contractive**. On an exact backbone (an invertible flow) f_E∘f_D is the
identity and clipping is 1-Lipschitz, so the condition holds and the bound is proved; the chain
is then run on z directly (f_E(f_D(z)) = z; the iterate is never rounded to pixels, METHODS.md
§8 decision). On an encoder + generator pair the contraction is only assumed. Converted to
(ε, δ)-DP by ε = min_α αΔf²/(2Tσ²) + ln(1/δ)/(α−1) (closed form: ``accountant.linear_rdp_to_dp``).
Never pure DP: the thesis' "α = ∞" claim is false (METHODS.md errata).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..privacy.accountant import dp_image_rdp, linear_rdp_to_dp
from ..privacy.mechanisms import gaussian_noise

NOISE_CHUNK = 1 << 22   # noise values drawn per call to the OS's generator (memory, not privacy)


@dataclass(frozen=True)
class DpImageSettings:
    sigma: float        # σ, the noise of every step (thesis 0.2, 0.4, 0.6)
    iterations: int     # T
    clip: float         # c, the clip box ±c (thesis ±20 on W+)
    delta: float        # δ of the (ε, δ) conversion (thesis 1e-8)

    def __post_init__(self):
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"--sigma must be a positive number, got {self.sigma}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"--iterations must be an integer >= 1, got {self.iterations}")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"--clip must be a positive number, got {self.clip}")
        if not 0 < self.delta < 1:
            raise ValueError(f"--delta must be in (0, 1), got {self.delta}")


@dataclass(frozen=True)
class DpImageAccount:
    """The (ε, δ) the maths gives for one face's release, with what it was computed from."""

    epsilon: float
    delta: float
    best_alpha: float
    sensitivity: float      # Δf = 2c√d
    dimension: int          # d
    rdp_coefficient: float  # ρ(α) = coefficient · α


def dp_image_account(settings: DpImageSettings, dimension: int) -> DpImageAccount:
    """Theorem 4.4.1's (α, αΔf²/(2Tσ²))-RDP with Δf = 2c√d, at its best α for δ."""
    sensitivity = 2.0 * settings.clip * math.sqrt(dimension)
    coefficient = dp_image_rdp(1.0, sensitivity, settings.sigma, settings.iterations)
    epsilon, alpha = linear_rdp_to_dp(coefficient, settings.delta)
    return DpImageAccount(epsilon, settings.delta, alpha, sensitivity, dimension, coefficient)


def dp_image_chain(z0: np.ndarray, settings: DpImageSettings, reencode: Callable[[np.ndarray], np.ndarray] | None = None,
                   noise: Callable[[float, tuple], np.ndarray] = gaussian_noise) -> np.ndarray:
    """z_T from z_0 = f_E(X) (float64, any shape). ``reencode``: f_E∘f_D for a backbone whose
    inverse is not exact (None: the identity, an exact backbone). ``noise(σ, shape)`` must be
    the cryptographic ``privacy.mechanisms.gaussian_noise`` outside tests."""
    z = np.asarray(z0, np.float64).copy()
    steps_per_draw = max(1, NOISE_CHUNK // max(z.size, 1))
    done = 0
    while done < settings.iterations:
        steps = min(steps_per_draw, settings.iterations - done)
        draws = noise(settings.sigma, (steps,) + z.shape)
        for step in range(steps):
            if reencode is not None:
                z = np.asarray(reencode(z), np.float64)
            np.clip(z, -settings.clip, settings.clip, out=z)
            z += draws[step]
        done += steps
    return z

