"""Similarity alignment of five landmarks to a template crop (pure functions).

The template is the ArcFace five-point layout (eyes, nose tip, mouth corners) for a
112x112 crop, placed inside a larger square so the crop holds the whole face, forehead and
chin included; this is the "similarity warp to a template at the method's working
resolution" of METHODS.md (common frame).
"""
from __future__ import annotations

import numpy as np

ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_CROP_SIZE = 112.0
DEFAULT_MARGIN = 0.3
"""Extra border on each side of the 112-unit ArcFace crop, as a fraction of it."""


def template_points(resolution: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Five template landmarks in pixel coordinates of a ``resolution`` x ``resolution`` crop."""
    span = ARCFACE_CROP_SIZE * (1.0 + 2.0 * margin)
    offset = ARCFACE_CROP_SIZE * margin
    return (ARCFACE_TEMPLATE_112 + offset) * (resolution / span)


def face_ellipse(resolution: int, margin: float = DEFAULT_MARGIN) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centre and semi-axes (x, y) of the face region in crop pixels.

    Measured on the ArcFace layout: cheek to cheek is about 2.1 inter-ocular distances,
    hairline to chin about 3.1, centred a little below the eyes' midpoint.
    """
    pts = template_points(resolution, margin)
    eye_mid = (pts[0] + pts[1]) / 2.0
    mouth_mid = (pts[3] + pts[4]) / 2.0
    iod = float(np.linalg.norm(pts[1] - pts[0]))
    centre = (float(eye_mid[0]), float(eye_mid[1] + 0.35 * (mouth_mid[1] - eye_mid[1])))
    return centre, (1.08 * iod, 1.55 * iod)


def face_width(resolution: int, margin: float = DEFAULT_MARGIN) -> float:
    """Width of the face region (cheek to cheek) in crop pixels: the unit of relative strengths."""
    return 2.0 * face_ellipse(resolution, margin)[1][0]


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst.

    Umeyama (1991), closed form. Returns the 2x3 matrix M with dst ~ M @ [x, y, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError("need matching (N, 2) point arrays with N >= 2")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("source points are degenerate")
    cov = d_c.T @ s_c / len(src)
    u, sing, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sing * d).sum() / var_s)
    trans = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, trans[:, None]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def affine_scale(m: np.ndarray) -> float:
    """Uniform scale of a similarity matrix (crop pixels per image pixel)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m)[:, :2]))))


def alignment_matrix(landmarks: np.ndarray, resolution: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Image -> crop similarity for one face's five landmarks."""
    return estimate_similarity(landmarks, template_points(resolution, margin))
