"""How far above each brow the forehead's bare skin reaches (issue 20: a region raised high enough to
take the forehead's identity, without cutting into a fringe, a hat or glasses). Pure functions on an
upright face crop in CIE Lab (cv2's float scale: L 0-100, a and b about -127..127) and its 68 points.

The skin's colour is read from the cheeks and under the eyes (points 1-4, 48, 31, 36, 40, 41 and
their mirror), as a median and a robust spread per Lab channel. For each brow point (17-26) a short
horizontal segment, between the midpoints to its neighbours, is moved up from the brow in steps of
the chin-to-brows distance (``outline.outline_polygon``'s unit); the reach is the first height at
which fewer than ``SKIN_SHARE`` of its samples look like that skin, less ``MARGIN`` so that the
region's edge stays on skin, then median-smoothed over neighbouring points and clamped to
[``low``, ``high``]."""
from __future__ import annotations

import cv2
import numpy as np

from .outline import BROWS, CHIN

CHEEKS = ((1, 2, 3, 4, 48, 31, 40, 41, 36), (15, 14, 13, 12, 54, 35, 47, 46, 45))
SCAN_START = 0.06       # above the brow hairs themselves
SCAN_STEP = 0.01
SEGMENT_SAMPLES = 9
SKIN_SHARE = 0.7
MARGIN = 0.03
L_TOLERANCE = 12.0      # at least, below and above the skin's median lightness...
L_SHINE = 15.0          # ...and this much more above it: foreheads catch the light
CHROMA_TOLERANCE = 6.0  # at least, for a and b
ROBUST_SIGMAS = 3.0     # tolerances widen to this many robust standard deviations of the cheeks


def skin_colour(lab: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust standard deviation (1.4826 x MAD) per Lab channel of the cheeks."""
    pts = np.asarray(points, np.float64)
    mask = np.zeros(lab.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts[list(idx)] * 16).astype(np.int32) for idx in CHEEKS], 1, cv2.LINE_8, 4)
    samples = lab[mask > 0] if mask.any() else lab.reshape(-1, 3)
    median = np.median(samples, 0)
    return median, 1.4826 * np.median(np.abs(samples - median), 0)


def looks_like_skin(lab_samples: np.ndarray, median: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Bool per sample: within the skin's tolerance in a and b, and in L (more room above: shine)."""
    tol = np.maximum(ROBUST_SIGMAS * spread, [L_TOLERANCE, CHROMA_TOLERANCE, CHROMA_TOLERANCE])
    d = np.asarray(lab_samples, np.float64) - median
    return (np.abs(d[..., 1]) < tol[1]) & (np.abs(d[..., 2]) < tol[2]) & (d[..., 0] > -tol[0]) & (d[..., 0] < tol[0] + L_SHINE)


def forehead_reach(lab: np.ndarray, points: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per brow point (17-26), how far up the skin reaches, as a fraction of the chin-to-brows
    distance, within [low, high]. ``lab``: the upright crop in Lab; ``points``: its 68 points."""
    pts = np.asarray(points, np.float64)
    brows = pts[BROWS]
    up = brows.mean(0) - pts[CHIN]
    median, spread = skin_colour(lab, pts)
    h, w = lab.shape[:2]
    heights = np.arange(SCAN_START, high + 1e-9, SCAN_STEP)
    reach = np.full(len(brows), high, np.float64)
    for j in range(len(brows)):
        a = (brows[max(j - 1, 0)] + brows[j]) / 2.0
        b = (brows[min(j + 1, len(brows) - 1)] + brows[j]) / 2.0
        segment = np.linspace(a, b, SEGMENT_SAMPLES)
        for t in heights:
            at = segment + t * up
            xi = np.clip(np.round(at[:, 0]).astype(int), 0, w - 1)
            yi = np.clip(np.round(at[:, 1]).astype(int), 0, h - 1)
            if looks_like_skin(lab[yi, xi], median, spread).mean() < SKIN_SHARE:
                reach[j] = t - MARGIN
                break
    smoothed = np.array([np.median(reach[max(j - 1, 0):j + 2]) for j in range(len(reach))])
    return np.clip(smoothed, low, high)
