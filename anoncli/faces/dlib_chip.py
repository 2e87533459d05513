"""dlib's face chip (``dlib.get_face_chip(image, shape5, size, padding)``) in numpy, pixel for pixel.

The chip dlib's face recognition ResNet reads is cut by ``get_face_chip_details`` (a similarity
from the chip to the image fitted to the 5-point shape predictor's landmarks: outer and inner
eye corners, base of the nose, placed on dlib's template padded by ``padding``) and
``extract_image_chip`` (``dlib/image_transforms/interpolation.h``): the extraction rectangle is
the chip scaled by the similarity's scale around where it maps the chip's centre; when that
rectangle holds more than four times the chip's pixels, the image (cropped to the rectangle's
rotated bounding box grown by a border) is first halved with dlib's 5 x 5 Gaussian pyramid
(``pyramid_down<2>``, ``image_pyramid.h``) until it does not; the chip is then sampled
bilinearly (values truncated to integers, black outside the image).

Geometry follows dlib's rectangle conventions: inclusive right and bottom edges (a width is
right − left + 1), a floating rectangle rounds to an integer one half up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..models.dlib_shape_predictor import umeyama

DLIB_FACE_TEMPLATE_5 = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
"""dlib's 5-point face template on the unit square (``get_face_chip_details``), in the order of
the 5-point predictor's parts: the eyes' outer and inner corners, then the base of the nose."""

FACE_CHIP_SIZE = 150
FACE_CHIP_PADDING = 0.25
"""The chip dlib's face recognition ResNet was trained on (``dnn_face_recognition_ex.cpp``)."""


@dataclass(frozen=True)
class ChipDetails:
    rect: tuple[float, float, float, float]   # left, top, right, bottom (inclusive), in image pixels
    angle: float
    rows: int
    cols: int

    @property
    def size(self) -> int:
        return self.rows * self.cols


def face_chip_details(parts: np.ndarray, size: int = FACE_CHIP_SIZE, padding: float = FACE_CHIP_PADDING) -> ChipDetails:
    """``get_face_chip_details`` of a 5-point detection: where the chip lies in the image."""
    parts = np.asarray(parts, np.float64)
    if parts.shape != (5, 2):
        raise ValueError(f"a face chip needs the 5-point predictor's landmarks, got shape {parts.shape}")
    if size <= 0 or padding < 0:
        raise ValueError(f"chip size must be positive and padding >= 0, got {size} and {padding}")
    chip_points = (padding + DLIB_FACE_TEMPLATE_5) / (2 * padding + 1) * size
    m, t = umeyama(chip_points, parts)
    p = m[:, 0]
    angle = math.atan2(p[1], p[0])
    scale = math.sqrt(p[0] * p[0] + p[1] * p[1])
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    half = (size * scale - 1) / 2   # centered_drect: width − 1 between the inclusive edges
    return ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size, size)


def extract_image_chip(rgb: np.ndarray, details: ChipDetails) -> np.ndarray:
    """``extract_image_chip``: the rows x cols x 3 uint8 chip."""
    rgb = np.ascontiguousarray(np.asarray(rgb)[..., :3], np.uint8)
    height, width = rgb.shape[:2]
    rect = details.rect
    if details.size == 0 or _empty(rect):
        raise ValueError(f"an empty face chip: {details}")
    if details.angle == 0 and details.rows == _height(rect) and details.cols == _width(rect):
        return _copy_chip(rgb, _rounded(rect))
    depth, grow = 0, 2.0
    down = _rect_down(rect)
    while _area(down) > details.size:
        down = _rect_down(down)
        depth += 1
        grow = grow * 2 + 2
    centre = _centre(rect)
    corners = [_rotate(centre, c, details.angle) for c in ((rect[0], rect[1]), (rect[2], rect[1]), (rect[0], rect[3]), (rect[2], rect[3]))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    grown = (min(xs) - grow, min(ys) - grow, max(xs) + grow, max(ys) + grow)
    clipped = (max(grown[0], 0.0), max(grown[1], 0.0), min(grown[2], width - 1.0), min(grown[3], height - 1.0))
    box = (0, 0, -1, -1) if _empty(clipped) else _rounded(clipped)
    source = rgb[max(box[1], 0):max(box[3] + 1, 0), max(box[0], 0):max(box[2] + 1, 0)] if not _empty(box) else rgb[:0, :0]

    local = (rect[0] - box[0], rect[1] - box[1], rect[2] - box[0], rect[3] - box[1])
    level = -1
    while _area(_rect_down(local)) > details.size:
        level += 1
        local = _rect_down(local)
    for _ in range(level + 1):
        source = pyramid_down(source)
    centre = _centre(local)
    to = np.array([_rotate(centre, c, details.angle) for c in ((local[0], local[1]), (local[2], local[1]), (local[0], local[3]))])
    # The affine map chip (0,0), (cols−1,0), (0,rows−1) -> those three corners.
    a = np.column_stack([(to[1] - to[0]) / max(details.cols - 1, 1), (to[2] - to[0]) / max(details.rows - 1, 1)])
    return _bilinear(source, a, to[0], details.rows, details.cols)


def get_face_chip(rgb: np.ndarray, parts: np.ndarray, size: int = FACE_CHIP_SIZE, padding: float = FACE_CHIP_PADDING) -> np.ndarray:
    """``dlib.get_face_chip(rgb, shape5, size, padding)``."""
    return extract_image_chip(rgb, face_chip_details(parts, size, padding))


def pyramid_down(rgb: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>`` of an RGB image: a separable [1 4 6 4 1] filter on every other
    column then every other row, integer sums divided by 256 (truncated); (n − 3) // 2 pixels a side."""
    rows, cols = rgb.shape[:2]
    out_rows, out_cols = (rows - 3) // 2, (cols - 3) // 2
    if out_rows <= 0 or out_cols <= 0:
        return np.zeros((0, 0, 3), np.uint8)
    v = rgb.astype(np.int32)
    taps = (1, 4, 6, 4, 1)
    horizontal = sum(w * v[:, k:k + 2 * out_cols:2] for k, w in enumerate(taps))
    vertical = sum(w * horizontal[k:k + 2 * out_rows:2] for k, w in enumerate(taps))
    return (vertical // 256).astype(np.uint8)


def _bilinear(source: np.ndarray, a: np.ndarray, b: np.ndarray, rows: int, cols: int) -> np.ndarray:
    chip = np.zeros((rows, cols, 3), np.uint8)
    if source.size == 0:
        return chip
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float64)
    x = a[0, 0] * c + a[0, 1] * r + b[0]
    y = a[1, 0] * c + a[1, 1] * r + b[1]
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < source.shape[1]) & (top + 1 < source.shape[0])
    fx, fy = (x - left)[inside][:, None], (y - top)[inside][:, None]
    lt, tp = left[inside], top[inside]
    s = source.astype(np.float64)
    value = (1 - fy) * ((1 - fx) * s[tp, lt] + fx * s[tp, lt + 1]) + fy * ((1 - fx) * s[tp + 1, lt] + fx * s[tp + 1, lt + 1])
    chip[inside] = np.clip(value, 0, 255).astype(np.uint8)   # truncated, as dlib assigns a double to a byte
    return chip


def _copy_chip(rgb: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = rect
    chip = np.zeros((max(bottom - top + 1, 0), max(right - left + 1, 0), 3), np.uint8)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, rgb.shape[1] - 1), min(bottom, rgb.shape[0] - 1)
    if x0 <= x1 and y0 <= y1:
        chip[y0 - top:y1 - top + 1, x0 - left:x1 - left + 1] = rgb[y0:y1 + 1, x0:x1 + 1]
    return chip


def _empty(r) -> bool:
    return r[1] > r[3] or r[0] > r[2]


def _width(r) -> float:
    return 0.0 if _empty(r) else r[2] - r[0] + 1


def _height(r) -> float:
    return 0.0 if _empty(r) else r[3] - r[1] + 1


def _area(r) -> float:
    return _width(r) * _height(r)


def _centre(r) -> tuple[float, float]:
    return (r[0] + r[2]) / 2, (r[1] + r[3]) / 2


def _rect_down(r) -> tuple[float, float, float, float]:
    """``pyramid_down<2>::rect_down``: each corner p -> p / 2 − (1.25, 0.75)."""
    return (r[0] / 2.0 - 1.25, r[1] / 2.0 - 0.75, r[2] / 2.0 - 1.25, r[3] / 2.0 - 0.75)


def _rounded(r) -> tuple[int, int, int, int]:
    return tuple(int(math.floor(v + 0.5)) for v in r)  # type: ignore[return-value]


def _rotate(centre, point, angle: float) -> tuple[float, float]:
    s, c = math.sin(angle), math.cos(angle)
    dx, dy = point[0] - centre[0], point[1] - centre[1]
    return (c * dx - s * dy + centre[0], s * dx + c * dy + centre[1])
