"""dlib face_recognition identity distance (book ch. 4-7, thesis ch. 5: same person if < 0.6).

The descriptor is dlib's ResNet (the model face_recognition uses), computed at a known
face box, so the anonymized face is measured where the original was even when dlib's own
detector would no longer find it. Needs dlib (``pip install dlib-bin``, a core dependency).
"""
from __future__ import annotations

import numpy as np

SAME_PERSON_THRESHOLD = 0.6
NEAR_FACE_SIDE = 120   # a face of this size is well inside the HOG detector's range (80 px window, 5/6 pyramid)
NEAR_MARGIN = 0.5


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise RuntimeError("dlib is not installed: pip install dlib-bin") from None
    return dlib


class DlibIdentity:
    def __init__(self, weights_dir=None):
        from ..weights import resolve_weights

        self.dlib = dlib = _import_dlib()
        self.shape = dlib.shape_predictor(str(resolve_weights("dlib-shape-predictor-5", weights_dir).path))
        self.encoder = dlib.face_recognition_model_v1(str(resolve_weights("dlib-face-recognition-resnet", weights_dir).path))

    def descriptor(self, rgb: np.ndarray, box) -> np.ndarray:
        """128-d descriptor of the face in ``box`` (x0, y0, x1, y1) of an RGB uint8 image."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rect = self.dlib.rectangle(max(0, x0), max(0, y0), min(rgb.shape[1], x1), min(rgb.shape[0], y1))  # as face_recognition trims
        img = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
        shape = self.shape(img, rect)
        return np.asarray(self.encoder.compute_face_descriptor(img, shape, 1), np.float64)

    def distance(self, rgb_a: np.ndarray, rgb_b: np.ndarray, box) -> float:
        return float(np.linalg.norm(self.descriptor(rgb_a, box) - self.descriptor(rgb_b, box)))

    def detect(self, rgb: np.ndarray, upsample: int = 1) -> list[tuple[int, int, int, int]]:
        if not hasattr(self, "_hog"):
            self._hog = DlibHog()
        return self._hog.detect(rgb, upsample)


class DlibHog:
    """dlib's HOG face detector, face_recognition's default model."""

    def __init__(self):
        self.detector = _import_dlib().get_frontal_face_detector()

    def detect_near(self, rgb: np.ndarray, box, face_side: int = NEAR_FACE_SIDE, margin: float = NEAR_MARGIN) -> list:
        """Boxes the HOG detector finds in the neighbourhood of one face: the box grown by
        ``margin`` of its size on every side, rescaled so the face is ``face_side`` pixels (the
        detector's 80 px window finds it without upsampling the whole image); image coordinates."""
        from PIL import Image

        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0)
        left, top = max(0, int(x0 - margin * side)), max(0, int(y0 - margin * side))
        right, bottom = min(rgb.shape[1], int(x1 + margin * side) + 1), min(rgb.shape[0], int(y1 + margin * side) + 1)
        if right - left < 2 or bottom - top < 2:
            return []
        scale = face_side / max(side, 1.0)
        size = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
        patch = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[top:bottom, left:right, :3])).resize(size, Image.BILINEAR))
        return [(left + a / scale, top + b / scale, left + c / scale, top + d / scale) for a, b, c, d in self.detect(patch, 0)]

    def detect(self, rgb: np.ndarray, upsample: int = 1) -> list[tuple[int, int, int, int]]:
        """Boxes dlib's HOG detector (face_recognition's default model; one upsampling, as it does) finds."""
        found = self.detector(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8), upsample)
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in found]


class DlibLandmarks68:
    """dlib's 68-point shape predictor (iBUG 300-W markup) at a given face box."""

    def __init__(self, weights_dir=None):
        from ..weights import resolve_weights

        self.dlib = dlib = _import_dlib()
        self.predictor = dlib.shape_predictor(str(resolve_weights("dlib-shape-predictor-68", weights_dir).path))

    def predict(self, rgb: np.ndarray, box) -> np.ndarray:
        """(68, 2) points in image pixels."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self.predictor(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8), self.dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


def matching_box(candidates, box, min_iou: float = 0.3):
    """The candidate overlapping ``box`` most (IoU >= min_iou), else None."""
    best, best_iou = None, min_iou
    for cand in candidates:
        iou = box_iou(cand, box)
        if iou >= best_iou:
            best, best_iou = cand, iou
    return best


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def deidentification_distances(input_root, output_root, manifest, scorer: DlibIdentity) -> tuple[list[float], list[float]]:
    """Original-vs-anonymized distances from a run's manifest.

    Returns the distances for every anonymized face (at the detector's box) and for the
    faces dlib detects in the original (at dlib's box, as face_recognition.face_encodings
    with known locations does): the faces face_recognition can encode at all.
    """
    import json
    from pathlib import Path

    from PIL import Image

    every, recognizable = [], []
    # Originals are the same for every method: their dlib detections and descriptors are kept on the scorer.
    cache = getattr(scorer, "_originals", None)
    if cache is None:
        cache = scorer._originals = {}
    for row in manifest.itertuples():
        if row.status != "ok":
            continue
        src = Path(input_root) / row.input
        a = np.asarray(Image.open(src).convert("RGB"))
        b = np.asarray(Image.open(Path(output_root) / row.output).convert("RGB"))
        if str(src) not in cache:
            cache[str(src)] = scorer.detect(a)

        def distance(box):
            key = (str(src), tuple(round(v, 2) for v in box))
            if key not in cache:
                cache[key] = scorer.descriptor(a, box)
            return float(np.linalg.norm(cache[key] - scorer.descriptor(b, box)))

        for face in json.loads(row.faces):
            every.append(distance(face["box"]))
            # face_recognition can only encode faces its detector finds; profiles and tiny faces fall outside.
            dlib_box = matching_box(cache[str(src)], face["box"])
            if dlib_box is not None:
                recognizable.append(distance(dlib_box))
    return every, recognizable
