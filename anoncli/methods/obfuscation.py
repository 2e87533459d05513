"""Obfuscation baselines on the aligned crop (METHODS.md §1; book ch. 3.1.1).

Pure array functions do the work; the classes adapt them to the FaceMethod interface.
"""
from __future__ import annotations

import secrets

import cv2
import numpy as np

from ..faces.align import face_width
from .base import ShapedMaskMethod


def gaussian_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return img.copy()
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_REFLECT)


def downsample_blur(img: np.ndarray, cell_px: float) -> np.ndarray:
    """Ryoo et al.'s extreme low resolution: area-shrink so one sample covers ``cell_px``, enlarge back."""
    h, w = img.shape[:2]
    small = (max(1, round(w / cell_px)), max(1, round(h / cell_px)))
    low = cv2.resize(img, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)


def cell_means(img: np.ndarray, cell_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means of the ``cell_px`` x ``cell_px`` cells (last row/column cells may be smaller), with
    the cells' row heights and column widths."""
    cell_px = max(1, int(cell_px))
    h, w = img.shape[:2]
    rows, cols = np.arange(0, h, cell_px), np.arange(0, w, cell_px)
    sums = np.add.reduceat(np.add.reduceat(img.astype(np.float64), rows, axis=0), cols, axis=1)
    row_sizes, col_sizes = np.diff(np.append(rows, h)), np.diff(np.append(cols, w))
    return sums / np.outer(row_sizes, col_sizes)[..., None], row_sizes, col_sizes


def fill_cells(means: np.ndarray, row_sizes: np.ndarray, col_sizes: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(means, row_sizes, axis=0), col_sizes, axis=1)


def pixelate(img: np.ndarray, cell_px: int) -> np.ndarray:
    """Replace each ``cell_px`` x ``cell_px`` cell by its mean (last row/column cells may be smaller)."""
    return fill_cells(*cell_means(img, cell_px)).astype(img.dtype)


def add_gaussian_noise(img: np.ndarray, sigma: float, grain_px: float, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, sigma^2) noise; with ``grain_px`` > 1 the noise is drawn on a coarser grid and enlarged."""
    h, w = img.shape[:2]
    if grain_px > 1:
        gh, gw = max(1, round(h / grain_px)), max(1, round(w / grain_px))
        field = rng.normal(0.0, sigma, (gh, gw, img.shape[2])).astype(np.float32)
        field = cv2.resize(field, (w, h), interpolation=cv2.INTER_NEAREST)
    else:
        field = rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(img + field, 0.0, 255.0)


def parse_colour(text: str) -> tuple[float, float, float]:
    t = text.strip().lstrip("#")
    if len(t) != 6 or any(c not in "0123456789abcdefABCDEF" for c in t):
        raise ValueError(f"colour must be #rrggbb, got {text!r}")
    return tuple(float(int(t[i:i + 2], 16)) for i in (0, 2, 4))  # type: ignore[return-value]


class _ShapedMethod(ShapedMaskMethod):
    def __init__(self, **params):
        super().__init__(**params)
        self.resolution = int(params["resolution"])
        self.face_width_px = face_width(self.resolution, self.margin)


class Blur(_ShapedMethod):
    def _strength_px(self) -> float:
        if self.params["kind"] == "gaussian":
            return self.params["sigma"] * self.face_width_px
        return self.face_width_px / self.params["cells"]

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        if self.params["kind"] == "gaussian":
            return gaussian_blur(crop, self._strength_px())
        return downsample_blur(crop, self._strength_px())

    def absolute_params(self, crop_pixels_per_image_pixel):
        key = "sigma_px" if self.params["kind"] == "gaussian" else "cell_px"
        return {key: self._strength_px() / crop_pixels_per_image_pixel}


class Pixelate(_ShapedMethod):
    def _cell_px(self) -> int:
        return max(1, round(self.face_width_px / self.params["cells"]))

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        return pixelate(crop, self._cell_px())

    def absolute_params(self, crop_pixels_per_image_pixel):
        return {"cell_px": self._cell_px() / crop_pixels_per_image_pixel}


class Mask(_ShapedMethod):
    def __init__(self, **params):
        super().__init__(**params)
        self.colour = np.array(parse_colour(params["color"]), np.float32)

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        return np.broadcast_to(self.colour, crop.shape).copy()


class Noise(_ShapedMethod):
    def __init__(self, **params):
        super().__init__(**params)
        # Fresh OS entropy, never stored: the noise cannot be replayed to undo it.
        self.rng = np.random.default_rng(secrets.randbits(128))

    def _grain_px(self) -> float:
        return self.params["grain"] * self.face_width_px

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        return add_gaussian_noise(crop, self.params["sigma"], self._grain_px(), self.rng)

    def absolute_params(self, crop_pixels_per_image_pixel):
        return {"grain_px": max(1.0, self._grain_px()) / crop_pixels_per_image_pixel}
