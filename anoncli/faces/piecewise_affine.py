"""Piecewise-affine warps of a crop between two landmark shapes (pure functions).

The shape-free texture of an Active Appearance Model (Cootes, Edwards, Taylor, "Active
appearance models", IEEE TPAMI 23(6), 2001, §3) is the image warped so that its landmarks
land on the mean shape: the mean shape is triangulated (Delaunay), and every output pixel
inside a triangle takes the image value at the same barycentric position of the corresponding
triangle of the source shape. k-Same-M (Gross, Sweeney, De la Torre, Baker, CVPRW 2006; book
ch. 3.1.2; METHODS.md §3b) averages such textures, so features line up instead of ghosting.

Fixed points on the crop's border join the triangulation, so the warp covers the whole crop
and leaves its edge where it is.
"""
from __future__ import annotations

import cv2
import numpy as np


def crop_border_points(resolution: int, per_side: int = 4) -> np.ndarray:
    """``4 * per_side`` points evenly spaced along the outer edge of a ``resolution`` crop
    (pixel centres run from 0 to resolution − 1, so the edge is at −0.5 and resolution − 0.5),
    corners included."""
    if per_side < 1:
        raise ValueError("per_side must be >= 1")
    lo, hi = -0.5, resolution - 0.5
    steps = np.linspace(lo, hi, per_side + 1)[:-1]
    top = np.stack([steps, np.full(per_side, lo)], 1)
    right = np.stack([np.full(per_side, hi), steps], 1)
    bottom = np.stack([hi + lo - steps, np.full(per_side, hi)], 1)
    left = np.stack([np.full(per_side, lo), hi + lo - steps], 1)
    return np.concatenate([top, right, bottom, left]).astype(np.float64)


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of ``points`` as (T, 3) int64 vertex indices, each counter-clockwise
    in image coordinates (y down: positive signed area)."""
    from scipy.spatial import Delaunay

    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise ValueError(f"need (N, 2) points with N >= 3, got shape {points.shape}")
    tri = Delaunay(points).simplices.astype(np.int64)
    a, b, c = (points[tri[:, i]] for i in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    flip = area < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


def triangle_affines(src_points: np.ndarray, dst_points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T, 2, 3) matrices mapping each triangle of ``dst_points`` onto the same triangle of
    ``src_points`` (dst -> src, the direction a backward warp samples in). A triangle that is
    degenerate in ``dst_points`` gets the least-squares solution."""
    src = np.asarray(src_points, np.float64)[triangles]       # (T, 3, 2)
    dst = np.asarray(dst_points, np.float64)[triangles]
    dst_h = np.concatenate([dst, np.ones((*dst.shape[:2], 1))], 2)   # (T, 3, 3): rows [x, y, 1]
    # dst_h @ Mᵀ = src for each triangle
    solved = np.empty((len(triangles), 3, 2))
    regular = np.abs(np.linalg.det(dst_h)) > 1e-9
    if regular.any():
        solved[regular] = np.linalg.solve(dst_h[regular], src[regular])
    for t in np.flatnonzero(~regular):
        solved[t] = np.linalg.lstsq(dst_h[t], src[t], rcond=None)[0]
    return solved.transpose(0, 2, 1)


def _global_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    dst_h = np.concatenate([dst, np.ones((len(dst), 1))], 1)
    sol, *_ = np.linalg.lstsq(dst_h, src, rcond=None)
    return sol.T


SUBPIXEL_BITS = 4


def triangle_labels(points: np.ndarray, triangles: np.ndarray, height: int, width: int) -> np.ndarray:
    """int32 (height, width): the index of the triangle of ``points`` each pixel lies in, −1 where
    none. Triangles are rasterised in order at 1/16 px precision, so a pixel on a shared edge (or
    in an overlap of folded triangles) goes to the later one; the warp is continuous across
    shared edges, so that choice moves its sample by rounding error only."""
    labels = np.full((height, width), -1, np.int32)
    fixed = np.round(np.asarray(points, np.float64) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    for t, tri in enumerate(triangles):
        cv2.fillConvexPoly(labels, fixed[tri], int(t), cv2.LINE_8, SUBPIXEL_BITS)
    return labels


def sampling_maps(src_points: np.ndarray, dst_points: np.ndarray, triangles: np.ndarray,
                  height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Backward maps (map_x, map_y), float32 (height, width): where in the source image each
    output pixel samples so that ``src_points`` land on ``dst_points``. Each pixel follows the
    affine map of its triangle of ``dst_points`` (``triangle_labels``); pixels in no triangle
    (outside the shape's hull) follow the least-squares affine map of all points."""
    src = np.asarray(src_points, np.float64)
    dst = np.asarray(dst_points, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise ValueError(f"src and dst must be matching (N, 2) arrays, got {src.shape} and {dst.shape}")
    affines = np.concatenate([triangle_affines(src, dst, triangles), _global_affine(src, dst)[None]])
    labels = triangle_labels(dst, triangles, height, width)   # −1 picks the global map (last row)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    m = affines[labels]                                         # (H, W, 2, 3)
    map_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
    map_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def warp_piecewise_affine(image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray,
                          triangles: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """``image`` warped piecewise-affinely so that its ``src_points`` move to ``dst_points``
    (bilinear sampling, edge pixels replicated). ``size`` = (height, width) of the output,
    the image's own by default. The triangles index both point sets alike."""
    height, width = size if size is not None else image.shape[:2]
    map_x, map_y = sampling_maps(src_points, dst_points, triangles, height, width)
    return cv2.remap(np.ascontiguousarray(image), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
