"""Image similarity inside and outside the face region: SSIM (Wang et al. 2004), PSNR, MAE.

SSIM uses the paper's constants: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, L = 255, on the luma of 8-bit RGB images; the region scores average the SSIM map
over the region's pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

K1, K2, DYNAMIC_RANGE = 0.01, 0.03, 255.0
WINDOW_SIGMA = 1.5


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB image (or the image itself if it has one channel), float64."""
    x = np.asarray(rgb, np.float64)
    if x.ndim == 2:
        return x
    if x.shape[2] == 1:
        return x[..., 0]
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two images of the same size."""
    x, y = luma(a), luma(b)
    c1, c2 = (K1 * DYNAMIC_RANGE) ** 2, (K2 * DYNAMIC_RANGE) ** 2

    def blur(img):
        return cv2.GaussianBlur(img, (11, 11), WINDOW_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def _masked_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    if mask is None:
        return float(values.mean())
    m = np.asarray(mask, bool)
    if values.ndim == 3:
        m = np.repeat(m[..., None], values.shape[2], axis=2)
    return float(values[m].mean()) if m.any() else float("nan")


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM over ``mask`` (all pixels if None; NaN for an empty mask)."""
    return _masked_mean(ssim_map(a, b), mask)


def mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    return _masked_mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, mask)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, peak: float = DYNAMIC_RANGE) -> float:
    """10 log10(peak^2 / MSE) over ``mask``; inf for identical pixels."""
    err = mse(a, b, mask)
    if np.isnan(err):
        return float("nan")
    return float("inf") if err == 0 else float(10 * np.log10(peak ** 2 / err))


def mae(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    return _masked_mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), mask)
