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


POSE_REFERENCE = (-0.0053, 0.6183)
OUTLINE_ACROSS_112 = np.array([
    [-56.0, -3.3], [-51.9, 3.6], [-49.3, 9.2], [-47.1, 14.3], [-40.2, 15.9], [-29.6, 14.2], [-17.6, 10.1], [-5.9, 4.6],
    [-1.6, 0.4], [-6.0, -4.0], [-18.1, -10.1], [-30.8, -15.5], [-42.2, -17.9], [-49.5, -16.5], [-52.3, -11.7], [-54.5, -6.0],
    [-58.2, 0.4],
    [-20.1, 3.5], [-12.5, 2.1], [-5.7, -0.2], [0.5, -1.0], [6.3, -0.4], [7.2, 1.6], [1.5, 2.4], [-4.8, 1.8], [-11.4, -1.2],
    [-19.4, -2.5],
])
OUTLINE_DOWN_112 = np.array([
    [7.1, -35.8], [7.8, -34.0], [8.9, -32.2], [10.5, -30.3], [13.0, -28.9], [13.5, -25.9], [10.2, -20.3], [6.0, -12.6],
    [1.1, -10.9], [-2.7, -12.5], [-7.0, -19.5], [-9.5, -25.1], [-8.6, -28.0], [-6.0, -29.2], [-3.8, -30.9], [-2.7, -32.9],
    [-2.7, -34.6],
    [3.2, -11.1], [5.8, -4.5], [5.4, 2.9], [2.8, 7.0], [1.4, 8.1], [1.7, 7.8], [0.4, 7.6], [-2.1, 3.6], [-2.7, -3.9],
    [0.1, -10.8],
])
"""How the outline's points move (112 px frame) per eye distance the nose tip sits right of / below
the eyes' midpoint, beyond ``POSE_REFERENCE`` (the median face): least squares on the faces whose 68
points agree with the detector, ``python benchmarks/fit_pose_outline.py`` (2026-12-07; 739 faces of the
CelebA photos in the wild; held out, the mean point error falls from 5.5 to 3.6 px, on turned faces from
8.5 to 4.2 px)."""
POSE_LIMITS = (0.4, 0.25)   # |s - s0|, |t - t0| used at most: about the fitted faces' 1st-99th percentiles (s: -0.39..0.39, t: -0.25..0.17)


def nose_offsets(landmarks5_112: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s, t: the nose tip's offset from the eyes' midpoint across and down the face, in eye
    distances, of five landmarks (..., 5, 2) in the 112 px frame (where the eyes are level)."""
    pts = np.asarray(landmarks5_112, np.float64)
    mid = (pts[..., 0, :] + pts[..., 1, :]) / 2
    eyes = np.linalg.norm(pts[..., 1, :] - pts[..., 0, :], axis=-1)
    return (pts[..., 2, 0] - mid[..., 0]) / eyes, (pts[..., 2, 1] - mid[..., 1]) / eyes


def posed_mean_outline(landmarks5_112: np.ndarray, s0: float = POSE_REFERENCE[0], t0: float = POSE_REFERENCE[1],
                       across: np.ndarray = OUTLINE_ACROSS_112, down: np.ndarray = OUTLINE_DOWN_112) -> np.ndarray:
    """The mean outline (112 px frame) bent by the face's pose: ``MEAN_OUTLINE_112`` + (s - s0) x
    ``across`` + (t - t0) x ``down``, the offsets clipped to ``POSE_LIMITS``."""
    s, t = nose_offsets(landmarks5_112)
    ds = float(np.clip(s - s0, -POSE_LIMITS[0], POSE_LIMITS[0]))
    dt = float(np.clip(t - t0, -POSE_LIMITS[1], POSE_LIMITS[1]))
    return MEAN_OUTLINE_112 + ds * np.asarray(across) + dt * np.asarray(down)


def mean_outline_at(landmarks5: np.ndarray, pose: bool = True) -> np.ndarray:
    """The mean outline placed in the photo by a face's five detector landmarks (27 points, image
    pixels): ``posed_mean_outline``, or with ``pose`` False the frontal ``MEAN_OUTLINE_112``."""
    m = alignment_matrix(np.asarray(landmarks5, np.float64), 112, 0.0)
    outline = posed_mean_outline(apply_affine(m, np.asarray(landmarks5, np.float64))) if pose else MEAN_OUTLINE_112
    return apply_affine(invert_affine(m), outline)


def mean_outline_in_crop(resolution: int, margin: float) -> np.ndarray:
    """``MEAN_OUTLINE_112`` in the pixels of a ``resolution`` crop with ``margin`` (``align.template_points``' frame)."""
    span = 112.0 * (1.0 + 2.0 * margin)
    return (MEAN_OUTLINE_112 + 112.0 * margin) * (resolution / span)
