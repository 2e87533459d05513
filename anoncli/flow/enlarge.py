"""Enlarging a flow's 64 px fake face into the working crop (flowrot's ``--crosshatch-sigma``,
``--upsampler``, ``--sharpen``, ``--sharpen-sigma``). Pure functions but the upsampler, which is passed in.

The Glow's squeeze layers (2 x 2 space-to-depth) leave a crosshatch at the 2-pixel period of its
grid: patterns (−1)^x, (−1)^y and (−1)^(x+y) whose amplitude varies slowly over the face. Enlarged
as it is, the face is a blur with a faint grid; sharpened as it is, the grid comes forward. So the
three patterns are first demodulated away (each one's local amplitude, a Gaussian average of the
image times the pattern, is subtracted; a notch at the grid's frequency that leaves the rest of the
spectrum nearly as it was), the face is enlarged (bicubic, or by a learned upsampler that would
otherwise draw the grid as texture), and then optionally sharpened by unsharp masking,
x + a·(x − G_s·x): the features' edges regain the contrast a bicubic enlargement spread.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..faces.upsampling import resize


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def grid_patterns(size: int) -> list[np.ndarray]:
    """The three period-2 patterns of a ``size`` grid, ±1 (float32, shape (size, size, 1))."""
    yy, xx = np.mgrid[0:size, 0:size]
    return [np.where(p % 2, -1.0, 1.0).astype(np.float32)[..., None] for p in (xx, yy, xx + yy)]


def remove_crosshatch(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` (H x W x C float) without its period-2 patterns, each one's amplitude measured as a
    Gaussian average (``sigma`` pixels) of the image times the pattern; 0 leaves the image as it is."""
    x = np.asarray(image, np.float32)
    if sigma <= 0:
        return x
    if x.ndim != 3 or x.shape[0] != x.shape[1]:
        raise ValueError(f"expected a square H x W x C image, got shape {x.shape}")
    for p in grid_patterns(x.shape[0]):   # mirrored about the edge pixels, which keeps each pattern's parity
        x = x - cv2.GaussianBlur(x * p, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101) * p
    return x


def unsharp(image: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """x + amount·(x − G_sigma·x); amount 0 leaves the image as it is."""
    x = np.asarray(image, np.float32)
    if amount == 0 or sigma <= 0:
        return x
    return x + amount * (x - _blur(x, sigma))


def enlarge_fake(face: np.ndarray, size: int, crosshatch_sigma: float, sharpen: float, sharpen_sigma: float,
                 upsample=resize) -> np.ndarray:
    """The flow's face (its own pixels, 0-255 float) without crosshatch, enlarged to ``size`` by
    ``upsample(face, size)`` (``faces.upsampling``; bicubic by default) and sharpened;
    ``crosshatch_sigma`` and ``sharpen_sigma`` are in the flow's pixels."""
    x = remove_crosshatch(face, crosshatch_sigma)
    scale = size / x.shape[0]
    x = upsample(x.clip(0.0, 255.0), size)
    return unsharp(x, sharpen, sharpen_sigma * scale).clip(0.0, 255.0)
