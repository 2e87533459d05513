"""Texture figure: how much fine detail a face region keeps (issue 20, realism).

A face generated at 64 or 128 px and enlarged into a 300 px face is smooth where the photo
around it is sharp; detectors still find it, this figure does not. High-frequency energy is
the mean squared response of a difference of Gaussians (sigma 0.5 px minus sigma 1.5 px, the
band of pore, hair and edge detail that enlargement removes) on the luminance, inside a mask.
"""
from __future__ import annotations

import cv2
import numpy as np

FINE_SIGMA = 0.5
COARSE_SIGMA = 1.5


def _luminance(rgb: np.ndarray) -> np.ndarray:
    x = np.asarray(rgb, np.float32)
    if x.ndim == 2:
        return x
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def high_frequency_energy(rgb: np.ndarray, mask: np.ndarray,
                          fine_sigma: float = FINE_SIGMA, coarse_sigma: float = COARSE_SIGMA) -> float:
    """Mean squared band-pass (DoG) response of the luminance where ``mask`` > 0.5 (grey levels²)."""
    y = _luminance(rgb)
    band = cv2.GaussianBlur(y, (0, 0), fine_sigma) - cv2.GaussianBlur(y, (0, 0), coarse_sigma)
    inside = np.asarray(mask) > 0.5
    if not inside.any():
        raise ValueError("the mask selects no pixel")
    return float(np.mean(band[inside] ** 2))


def texture_ratio(anonymized: np.ndarray, original: np.ndarray, mask: np.ndarray) -> float:
    """High-frequency energy of the anonymized region over the original's (1 = as sharp)."""
    reference = high_frequency_energy(original, mask)
    if reference <= 0:
        return float("nan")
    return high_frequency_energy(anonymized, mask) / reference


# The face region, brows to chin, as an ellipse placed by the five landmarks (eyes, nose tip,
# mouth corners). Units: h = distance from the eyes' midpoint to the mouth corners' midpoint
# along the face's vertical axis, D = distance between the eyes. On 60 CelebA crops, dlib's
# 68-point predictor puts the brows' top at -0.40 h, the chin at 1.90 h and the jaw at
# +-1.03 D at cheek level (std 0.1-0.2): the ellipse spans -0.35 h .. 1.85 h and +-0.95 D.
ELLIPSE_CENTRE = 0.75          # h below the eyes' midpoint
ELLIPSE_HALF_HEIGHT = 1.10     # h
ELLIPSE_HALF_WIDTH = 0.95      # D


def face_ellipse(landmarks5) -> tuple[tuple[float, float], tuple[float, float], float]:
    """((cx, cy), (half width, half height), angle in degrees) of the brows-to-chin ellipse."""
    p = np.asarray(landmarks5, np.float64)
    if p.shape != (5, 2) or not np.isfinite(p).all():
        raise ValueError(f"expected 5 x 2 finite landmarks, got shape {p.shape}")
    eyes, mouth = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    h = float(np.linalg.norm(mouth - eyes))
    d = float(np.linalg.norm(p[1] - p[0]))
    if h <= 0 or d <= 0:
        raise ValueError("degenerate landmarks: eyes or eyes and mouth coincide")
    down = (mouth - eyes) / h
    centre = eyes + ELLIPSE_CENTRE * h * down
    angle = float(np.degrees(np.arctan2(down[1], down[0]))) - 90.0   # 0 for an upright face
    return (float(centre[0]), float(centre[1])), (ELLIPSE_HALF_WIDTH * d, ELLIPSE_HALF_HEIGHT * h), angle


def face_region_mask(shape, landmarks5) -> np.ndarray:
    """Boolean mask (image ``shape[:2]``) of the brows-to-chin ellipse of one face."""
    (cx, cy), (a, b), angle = face_ellipse(landmarks5)
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = np.radians(angle)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(t) + dy * np.sin(t)       # along the face's width
    v = -dx * np.sin(t) + dy * np.cos(t)      # along its height
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def face_texture_ratio(anonymized: np.ndarray, original: np.ndarray, landmarks5) -> float:
    """``texture_ratio`` inside one face's brows-to-chin ellipse, at the photo's resolution.
    Computed on the ellipse's bounding box grown by the filters' reach, so a large photo costs
    no more than its face (same values as on the whole image unless the face touches an edge)."""
    (cx, cy), (a, b), _ = face_ellipse(landmarks5)
    reach = int(np.ceil(4 * COARSE_SIGMA)) + 2
    r = max(a, b)
    h, w = original.shape[:2]
    x0, y0 = max(0, int(cx - r) - reach), max(0, int(cy - r) - reach)
    x1, y1 = min(w, int(np.ceil(cx + r)) + reach + 1), min(h, int(np.ceil(cy + r)) + reach + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return float("nan")
    points = np.asarray(landmarks5, np.float64) - [x0, y0]
    mask = face_region_mask((y1 - y0, x1 - x0), points)
    if not mask.any():
        return float("nan")
    return texture_ratio(anonymized[y0:y1, x0:x1], original[y0:y1, x0:x1], mask)
