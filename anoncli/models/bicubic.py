"""Bicubic enlargement by an integer factor as two depthwise convolutions: the same numbers as
``F.interpolate(mode="bicubic", align_corners=False)`` (Keys' kernel, a = −0.75, borders clamped),
whose CPU backward is a slow scatter; this one's backward is a convolution too. FSAP differentiates
through the enlargement of its 64 px perturbation at every identity step."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CUBIC_A = -0.75   # PyTorch's (and OpenCV's) bicubic coefficient
_RADIUS = 2       # every output pixel reads source pixels within two of its own


def _cubic(x: float) -> float:
    """Keys' cubic convolution kernel at distance x."""
    x, a = abs(x), CUBIC_A
    if x <= 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


def phase_taps(factor: int) -> torch.Tensor:
    """factor x 5 weights: output pixel factor·j + r is Σ_k taps[r, k] · source[j + k − 2]."""
    taps = torch.zeros(factor, 2 * _RADIUS + 1, dtype=torch.float64)
    for r in range(factor):
        u = (r + 0.5) / factor - 0.5          # its source coordinate, relative to j
        base = math.floor(u)
        for k in range(-1, 3):
            taps[r, base + k + _RADIUS] = _cubic(u - (base + k))
    return taps


def _enlarge_last_axis(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    factor = taps.shape[0]
    padded = F.pad(x, (_RADIUS, _RADIUS, 0, 0), mode="replicate")
    weight = taps.to(x).repeat(c, 1).view(c * factor, 1, 1, -1)
    phases = F.conv2d(padded, weight, groups=c)                     # n x (c·factor) x h x w
    return phases.view(n, c, factor, h, w).permute(0, 1, 3, 4, 2).reshape(n, c, h, w * factor)


def enlarge_bicubic(x: torch.Tensor, factor: int) -> torch.Tensor:
    """N x C x H x W -> N x C x (H·factor) x (W·factor), as ``F.interpolate`` bicubic, differentiable."""
    if factor == 1:
        return x
    taps = phase_taps(factor)
    wide = _enlarge_last_axis(x, taps)
    return _enlarge_last_axis(wide.transpose(2, 3), taps).transpose(2, 3)
