"""Limits on the decoded perturbation f_D(W′) − f_D(W) that FSAP adds to a photograph (not in the thesis).

The thesis releases f_D(W′), a StyleGAN2 face. On an exact backbone anoncli releases the original plus the
decoded perturbation, and on the 64 px Glow that perturbation carries broad shading and colour casts which,
enlarged 3-6 times onto a wild photo's face, read as stains: an orange-white cheek, a dark nose, a whited-out
eye (README, FSAP). ``limit_perturbation`` splits it into a low band (Gaussian blur) and the rest, drops the
low band's colour, bounds its luminance, and bounds every pixel's change, each bound soft (L·tanh(x/L), so
small changes pass unaltered and the search's gradients still flow). FSAP applies it inside its search,
so that the identity loss is measured on what will be released and τ is reached with the limited change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PerturbationLimits:
    low_sigma: float = 0.0       # σ of the low band's Gaussian, in backbone pixels; 0: no band split
    low_luminance: float = 0.0   # largest |luminance| of the low band, images in [−1, 1]; 0: unbounded
    amplitude: float = 0.0       # largest |change| of any pixel and channel; 0: unbounded

    def __post_init__(self):
        for name in ("low_sigma", "low_luminance", "amplitude"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")

    @property
    def active(self) -> bool:
        return bool(self.low_sigma or self.amplitude)


def soft_bound(x: torch.Tensor, limit: float) -> torch.Tensor:
    """limit·tanh(x / limit): |result| ≤ limit, slope 1 at 0; the identity for limit 0 (no bound)."""
    return limit * torch.tanh(x / limit) if limit > 0 else x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of N x C x H x W, radius 3σ, reflected borders."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def limit_perturbation(delta: torch.Tensor, limits: PerturbationLimits) -> torch.Tensor:
    """The perturbation (N x 3 x H x W, image units in [−1, 1]) within ``limits``."""
    if limits.low_sigma > 0:
        low = gaussian_blur(delta, limits.low_sigma)
        luminance = soft_bound(low.mean(1, keepdim=True), limits.low_luminance)
        delta = delta - low + luminance          # the low band's colour dropped, its luminance bounded
    return soft_bound(delta, limits.amplitude)
