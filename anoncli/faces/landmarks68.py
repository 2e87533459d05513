"""68-point landmarks (iBUG 300-W markup) of aligned face crops by dlib's shape predictor.

The predictor starts from a face box like the ones dlib's HOG detector draws. Every crop of
the common frame is aligned to the same five-point template (faces/align.py), so one box in
template units serves every crop: the median HOG box measured on 298 aligned CelebA crops
(anoncli's RetinaFace alignment, margin 0.3, 128 and 256 px; spread ≤ 0.03 of the crop),
in units of the 112-px ArcFace crop.
"""
from __future__ import annotations

import numpy as np

from .align import ARCFACE_CROP_SIZE

HOG_BOX_IN_ARCFACE_112 = (12.0, 31.5, 98.7, 118.3)   # x0, y0, x1, y1
PREDICTOR_WEIGHTS = "dlib-shape-predictor-68"
INSTALL_DLIB = "pip install dlib-bin"


class LandmarksUnavailable(RuntimeError):
    """dlib or its 68-point model is missing; the message names the command that fixes it."""


def predictor_box(resolution: int, margin: float) -> tuple[float, float, float, float]:
    """The HOG-like face box (x0, y0, x1, y1) in pixels of an aligned crop."""
    span = ARCFACE_CROP_SIZE * (1.0 + 2.0 * margin)
    offset = ARCFACE_CROP_SIZE * margin
    scale = resolution / span
    return tuple((v + offset) * scale for v in HOG_BOX_IN_ARCFACE_112)  # type: ignore[return-value]


class CropLandmarks68:
    """dlib's 68-point shape predictor on aligned crops of one resolution and margin.

    dlib returns whole pixels; crops smaller than ``min_side`` are enlarged first (bicubic)
    so that the rounding stays under a quarter pixel of the crop.
    """

    def __init__(self, resolution: int, margin: float, weights_dir=None, min_side: int = 256):
        try:
            import dlib
        except ImportError:
            raise LandmarksUnavailable(f"dlib is not installed (68-point landmarks): {INSTALL_DLIB}") from None
        from ..weights import WeightsMissing, resolve_weights

        try:
            path = resolve_weights(PREDICTOR_WEIGHTS, weights_dir).path
        except WeightsMissing as e:
            raise LandmarksUnavailable(str(e)) from None
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))
        self.resolution = int(resolution)
        self._upscale = max(1, int(np.ceil(min_side / resolution)))
        x0, y0, x1, y1 = (v * self._upscale for v in predictor_box(resolution, margin))
        self._rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """(68, 2) float64 landmarks in pixels of ``crop`` (uint8 or float RGB, 0-255)."""
        import cv2

        if crop.shape[:2] != (self.resolution, self.resolution):
            raise ValueError(f"expected a {self.resolution}-px crop, got {crop.shape[:2]}")
        img = np.clip(np.rint(crop[..., :3]), 0, 255).astype(np.uint8)
        if self._upscale > 1:
            side = self.resolution * self._upscale
            img = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC)
        shape = self._predictor(np.ascontiguousarray(img), self._rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        # pixel centres: x_small = (x_big + 0.5) / s − 0.5
        return (pts + 0.5) / self._upscale - 0.5
