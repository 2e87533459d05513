"""Soft masks in crop space and compositing back into the frame.

Pixels where the warped mask is exactly zero are copied from the input, so everything
outside the blend masks stays bit-identical.
"""
from __future__ import annotations

import cv2
import numpy as np

from .align import DEFAULT_MARGIN, face_ellipse, invert_affine, template_points
from .outline import mean_outline_in_crop, outline_polygon

MASK_SHAPES = ("ellipse", "box", "hull", "crop", "landmarks")
DEFAULT_BROW_RAISE = 0.25


def face_mask(resolution: int, shape: str = "ellipse", feather: float = 0.0,
              margin: float = DEFAULT_MARGIN, landmarks_in_crop: np.ndarray | None = None,
              brow_raise: float = DEFAULT_BROW_RAISE) -> np.ndarray:
    """Face mask in crop space, float32 in [0, 1].

    ``landmarks``: the brows-to-chin outline (``outline.outline_polygon``) of 68 landmarks when
    ``landmarks_in_crop`` holds them, else of the mean outline (the shape ``anoncli.faces.compositing``
    replaces, for a method that sees only the crop).

    ``feather`` is the Gaussian sigma of the soft edge as a fraction of the resolution; the
    hard shape is first shrunk by two sigmas so the soft edge stays inside the face region
    rather than spilling its half-transparent rim onto the background.
    """
    if shape not in MASK_SHAPES:
        raise ValueError(f"unknown mask shape {shape!r}; choose from {', '.join(MASK_SHAPES)}")
    if shape == "crop":   # the whole aligned crop, no soft edge: the image then holds the method's output itself
        return np.ones((resolution, resolution), np.float32)
    (cx, cy), (ax, ay) = face_ellipse(resolution, margin)
    sigma = feather * resolution
    shrink = 2.0 * sigma
    hard = np.zeros((resolution, resolution), np.uint8)
    if shape == "ellipse":
        cv2.ellipse(hard, (round(cx * 16), round(cy * 16)),
                    (max(1, round((ax - shrink) * 16)), max(1, round((ay - shrink) * 16))),
                    0, 0, 360, 255, -1, cv2.LINE_AA, 4)
    elif shape == "landmarks":
        pts = landmarks_in_crop if landmarks_in_crop is not None and len(landmarks_in_crop) >= 27 else \
            mean_outline_in_crop(resolution, margin)
        poly = outline_polygon(pts, brow_raise)
        cv2.fillPoly(hard, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        if shrink > 0:
            hard = cv2.erode(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * round(shrink) + 1,) * 2))
    elif shape == "box":
        x0, y0 = round(cx - ax + shrink), round(cy - ay + shrink)
        x1, y1 = round(cx + ax - shrink), round(cy + ay - shrink)
        hard[max(0, y0):y1, max(0, x0):x1] = 255
    else:
        pts = template_points(resolution, margin) if landmarks_in_crop is None else landmarks_in_crop
        # The five landmarks span eyes to mouth; grow their hull about its centre so it
        # reaches brows, cheeks and chin.
        centre = pts.mean(0)
        grown = centre + (pts - centre) * np.array([1.9, 2.2])
        grown[:, 1] += 0.08 * resolution
        hull = cv2.convexHull(np.round(grown * 16).astype(np.int32))
        cv2.fillConvexPoly(hard, hull, 255, cv2.LINE_AA, 4)
    mask = hard.astype(np.float32) / 255.0
    if sigma > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1.0 / 512.0] = 0.0
    return np.clip(mask, 0.0, 1.0, out=mask)


def crop_bounds_in_image(m_image_to_crop: np.ndarray, resolution: int, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) in the image covering the warped crop, clipped; None if outside."""
    inv = invert_affine(m_image_to_crop)
    corners = np.array([[0, 0], [resolution, 0], [0, resolution], [resolution, resolution]], np.float64)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    x0 = max(0, int(np.floor(pts[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(pts[:, 1].min())) - 1)
    x1 = min(width, int(np.ceil(pts[:, 0].max())) + 2)
    y1 = min(height, int(np.ceil(pts[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def warp_crop_to_roi(crop: np.ndarray, m_image_to_crop: np.ndarray, roi: tuple[int, int, int, int],
                     interpolation: int = cv2.INTER_LINEAR, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """Resample a crop-space array onto the image region ``roi`` (inverse warp); outside the crop,
    0 (``border`` constant) or the crop's edge (replicate)."""
    x0, y0, x1, y1 = roi
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])
    # crop <- roi pixel: M @ (p_roi + offset)
    m = np.asarray(m_image_to_crop, np.float64)
    m_roi = np.hstack([m[:, :2], (m[:, :2] @ shift[:, 2] + m[:, 2])[:, None]])
    return cv2.warpAffine(crop, m_roi, (x1 - x0, y1 - y0), flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=border, borderValue=0)


def image_mask(mask_crop: np.ndarray, m_image_to_crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """The crop-space mask warped into a full-size image mask (float32)."""
    out = np.zeros((height, width), np.float32)
    roi = crop_bounds_in_image(m_image_to_crop, mask_crop.shape[0], height, width)
    if roi is not None:
        x0, y0, x1, y1 = roi
        out[y0:y1, x0:x1] = warp_crop_to_roi(mask_crop, m_image_to_crop, roi)
    return out


def composite(base_roi: np.ndarray, anon_roi: np.ndarray, mask_roi: np.ndarray) -> np.ndarray:
    """Blend ``anon`` over ``base`` (float arrays, same shape, channels last) with ``mask``.

    Where the mask is 0 the base value is returned exactly.
    """
    m = mask_roi[..., None] if base_roi.ndim == 3 else mask_roi
    out = base_roi + m * (anon_roi - base_roi)
    return np.where(m > 0, out, base_roi)
