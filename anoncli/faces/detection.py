"""Detection records and the RetinaFace prior/decoding maths shared by both backends (pure numpy)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RETINAFACE_STEPS = (8, 16, 32)
RETINAFACE_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
RETINAFACE_VARIANCE = (0.1, 0.2)
RETINAFACE_BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)


@dataclass
class Detection:
    box: np.ndarray        # x0, y0, x1, y1 in image pixels
    score: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth, right mouth (image left to right)

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def to_record(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


@lru_cache(maxsize=32)
def retinaface_priors(height: int, width: int) -> np.ndarray:
    """Anchor centres and sizes (cx, cy, w, h), normalised, in the order RetinaFace emits them."""
    out = []
    for step, sizes in zip(RETINAFACE_STEPS, RETINAFACE_MIN_SIZES):
        ny, nx = int(np.ceil(height / step)), int(np.ceil(width / step))
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        cx = ((xs.ravel() + 0.5) * step / width).repeat(len(sizes))
        cy = ((ys.ravel() + 0.5) * step / height).repeat(len(sizes))
        sw = np.tile(np.array(sizes, np.float64) / width, nx * ny)
        sh = np.tile(np.array(sizes, np.float64) / height, nx * ny)
        out.append(np.stack([cx, cy, sw, sh], 1))
    return np.concatenate(out).astype(np.float32)


def decode_retinaface(loc: np.ndarray, landm: np.ndarray, priors: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x0, y0, x1, y1) and landmarks (N, 5, 2) in input pixels (biubug6 box_utils.decode)."""
    v0, v1 = RETINAFACE_VARIANCE
    centre = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    wh = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], 1) * np.array([width, height] * 2, np.float32)
    pts = priors[:, None, :2] + landm.reshape(-1, 5, 2) * v0 * priors[:, None, 2:]
    return boxes, pts * np.array([width, height], np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = scores.argsort()[::-1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx0 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy0 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx1 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy1 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        iou = inter / (areas[i] + areas[order[1:]] - inter + 1e-9)
        order = order[1:][iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def select_detections(boxes, scores, landmarks, threshold: float, nms_iou: float, scale: float) -> list[Detection]:
    """Threshold, NMS, and map from the resized input back to image pixels (divide by ``scale``)."""
    idx = np.nonzero(scores > threshold)[0]
    if idx.size == 0:
        return []
    boxes, scores, landmarks = boxes[idx], scores[idx], landmarks[idx]
    keep = nms(boxes, scores, nms_iou)
    return [Detection(boxes[k] / scale, float(scores[k]), landmarks[k] / scale) for k in keep]


def resize_factor(height: int, width: int, max_side: int) -> float:
    """Scale that brings the longer side down to ``max_side`` (never enlarges; 0 = full size)."""
    if max_side <= 0:
        return 1.0
    return min(1.0, max_side / max(height, width))
