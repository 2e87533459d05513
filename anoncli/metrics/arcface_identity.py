"""ArcFace IR-SE50 (facexlib, trained on MS1M) face embeddings, an identity evaluator.

Checkpoint: facexlib's ``recognition_arcface_ir_se50.pth`` (registry name
``facexlib-arcface-ir-se50``), byte for byte TreB1eN/InsightFace_Pytorch's ``model_ir_se50.pth``
(the same sha256 is pinned for both names by third parties), LFW 99.52 % in that repository's
README. The network is facexlib's own ``facexlib.recognition.Backbone(50, 0.6, 'ir_se')``, the
layout ``init_recognition_model('arcface')`` loads this file into with ``strict=True``; its
output is already L2-normalised. Preprocessing reproduces the source's evaluation path
(https://github.com/TreB1eN/InsightFace_Pytorch):

* alignment: least-squares similarity transform of the five landmarks to the ArcFace 112x112
  template (mtcnn.py ``get_reference_facial_points(default_square=True)``, i.e. SphereFace's
  112x96 points moved 8 px right; ``warp_and_crop_face`` -> ``cv2.warpAffine``, bilinear, zero
  fill). These points are used as 0-based OpenCV coordinates there and in insightface's
  ``norm_crop``, so no shift is applied (unlike the MATLAB-derived MobileFaceNet template);
* **BGR** channel order: the training images were decoded by ``mx.recordio.unpack_img`` (OpenCV,
  BGR) and saved through PIL unchanged, and ``load_bin`` converts the LFW/CFP/AgeDB pairs
  RGB -> BGR to match (data/data_pipe.py; issues #13 and #141); face_verify.py and
  infer_on_video.py feed OpenCV frames unswapped (the ``bgr to rgb`` line is commented out).
  Users of facexlib's copy do the same (bytedance/InfiniteYou ``extract_arcface_bgr_embedding``),
  though some ID losses built on this file feed it RGB;
* ``ToTensor`` then ``Normalize([0.5] * 3, [0.5] * 3)``: ``(x / 255 - 0.5) / 0.5`` (config.py
  ``test_transform``), CHW. One pass, no mirror augmentation (the source's ``tta`` is off by
  default). Runs on CPU under ``torch.no_grad()``.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..faces.align import alignment_matrix
from .aligned_embedding import AlignedFaceEmbedder, as_rgb_uint8

NAME = "facexlib-arcface-ir-se50"
WEIGHTS_NAME = NAME
"""Registry name of the checkpoint (anoncli.weights.REGISTRY)."""

# The source's face_verify.py and infer_on_video.py (``--threshold``, default 1.54; config.py's
# inference ``threshold = 1.5`` is overridden by both) call two faces the same person when the
# *squared* L2 distance of the unit embeddings is at most 1.54 (Learner.infer:
# ``torch.sum(torch.pow(diff, 2), dim=1)``). For unit vectors |a - b|^2 = 2 (1 - cos), so the
# cosine distance threshold is 1.54 / 2. It is a hand-set demo value for matching camera faces
# against a facebank, not a rate measured on a benchmark; the report also calibrates its own.
SQUARED_L2_THRESHOLD = 1.54
LITERATURE_THRESHOLD: float | None = SQUARED_L2_THRESHOLD / 2

CROP_SIZE = 112
EMBEDDING_DIM = 512
BATCH_SIZE = 16
"""Faces per forward pass; bounds the activations held at once (not tuned: CPU timings on the shared
2-core development machine varied several-fold between runs)."""


def align_face(image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    """The 112 x 112 RGB uint8 crop with the five landmarks on the ArcFace template (bilinear, zero outside)."""
    image = as_rgb_uint8(image_rgb_uint8)
    pts = np.asarray(landmarks5, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise ValueError(f"expected 5 x 2 finite landmarks, got shape {pts.shape}")
    # margin 0: the template points of a 112-px crop are faces.align.ARCFACE_TEMPLATE_112 unscaled.
    m = alignment_matrix(pts, CROP_SIZE, margin=0.0)
    return cv2.warpAffine(np.ascontiguousarray(image), m, (CROP_SIZE, CROP_SIZE),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def to_network_input(crops_rgb: np.ndarray) -> np.ndarray:
    """N x 112 x 112 x 3 uint8 RGB crops -> N x 3 x 112 x 112 float32, BGR, (x / 255 - 0.5) / 0.5."""
    bgr = np.asarray(crops_rgb, np.float32)[..., ::-1]
    return ((bgr / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2).copy()


class ArcFaceIdentity(AlignedFaceEmbedder):
    """Aligned-face embeddings (512-d, L2-normalised) from facexlib's ArcFace IR-SE50."""

    name = NAME
    weights_name = WEIGHTS_NAME
    literature_threshold = LITERATURE_THRESHOLD
    embedding_dim = EMBEDDING_DIM
    batch_size = BATCH_SIZE
    align_face = staticmethod(align_face)

    def __init__(self, weights_path: str | os.PathLike):
        import torch
        from facexlib.recognition import Backbone

        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{weights_path}: expected a state dict (facexlib's recognition_arcface_ir_se50.pth), "
                             f"got {type(state).__name__}")
        self.net = Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{weights_path} is not facexlib's ArcFace IR-SE50 state dict "
                             f"(recognition_arcface_ir_se50.pth): {' '.join(str(e).split())}") from None
        self.net.eval()
        self.torch = torch

    def features(self, crops: np.ndarray) -> np.ndarray:
        return self.net(self.torch.from_numpy(to_network_input(crops))).numpy().astype(np.float64)
