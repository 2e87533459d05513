"""The face outline from dense landmarks (iBUG 300-W 68-point markup, as dlib predicts it): the
region a generated face replaces, from the brows (raised toward the forehead) to the chin. Pure
functions."""
from __future__ import annotations

import numpy as np

from .align import alignment_matrix, apply_affine, invert_affine

JAW = slice(0, 17)
BROWS = slice(17, 27)
CHIN = 8

MEAN_OUTLINE_112 = np.array([
    [16.3, 54.2], [16.5, 64.9], [17.7, 75.4], [19.8, 85.9], [23.7, 95.7], [29.8, 104.3], [37.5, 111.5], [46.2, 117.5],
    [56.2, 119.2], [66.3, 117.6], [75.4, 111.9], [83.6, 104.8], [90.1, 96.4], [94.1, 86.6], [96.2, 75.9], [97.4, 65.1],
    [97.8, 54.2],
    [23.3, 45.3], [28.3, 41.3], [35.0, 40.3], [42.0, 41.4], [48.4, 44.4], [63.0, 44.1], [69.7, 41.2], [76.9, 40.1],
    [83.9, 41.2], [89.2, 45.3],
])
"""Mean of dlib's points 0-26 (jaw, brows) in the 112 px ArcFace frame of the five detector
landmarks, over 199 CelebA crops (RetinaFace landmarks, ``compositing.predict_landmarks68``; sd
3.3 px across, 2.7 px down): the outline when only the crop is at hand."""


def outline_polygon(landmarks: np.ndarray, brow_raise, jaw_inset: float = 0.0) -> np.ndarray:
    """Jaw 0 -> 16, each point moved ``jaw_inset`` x the face's width (point 0 to 16) toward the
    outline's centre, then the brows 26 -> 17 moved up (from the chin toward the brows' centre and
    beyond) by ``brow_raise`` x the chin-to-brows distance: one fraction for every brow point, or ten,
    one per point 17-26. ``landmarks``: the 68 points, or at least their first 27 (jaw and brows)."""
    pts = np.asarray(landmarks, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 27:
        raise ValueError("need the 68 landmarks (or at least jaw and brows, points 0-26) as (x, y)")
    raise_by = np.asarray(brow_raise, np.float64)
    if raise_by.shape not in ((), (10,)):
        raise ValueError(f"brow_raise: one fraction or ten (brow points 17-26), not shape {raise_by.shape}")
    brows = pts[BROWS]
    raised = brows + raise_by[..., None] * (brows.mean(0) - pts[CHIN])
    jaw = pts[JAW]
    if jaw_inset:
        towards = pts[:27].mean(0) - jaw
        jaw = jaw + jaw_inset * np.linalg.norm(pts[16] - pts[0]) * towards / np.linalg.norm(towards, axis=1, keepdims=True)
    return np.vstack([jaw, raised[::-1]])


def mean_outline_at(landmarks5: np.ndarray) -> np.ndarray:
    """``MEAN_OUTLINE_112`` placed in the photo by a face's five detector landmarks (27 points, image pixels)."""
    return apply_affine(invert_affine(alignment_matrix(np.asarray(landmarks5, np.float64), 112, 0.0)), MEAN_OUTLINE_112)


def mean_outline_in_crop(resolution: int, margin: float) -> np.ndarray:
    """``MEAN_OUTLINE_112`` in the pixels of a ``resolution`` crop with ``margin`` (``align.template_points``' frame)."""
    span = 112.0 * (1.0 + 2.0 * margin)
    return (MEAN_OUTLINE_112 + 112.0 * margin) * (resolution / span)
