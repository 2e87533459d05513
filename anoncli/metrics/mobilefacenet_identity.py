"""MobileFaceNet (ArcFace loss, CASIA-WebFace) face embeddings, an identity evaluator.

Checkpoint: Xiaoccer/MobileFaceNet_Pytorch ``model/best/068.ckpt`` (registry name
``mobilefacenet-arcface-casia``), LFW 99.3 % in that repository's 10-fold protocol.
Preprocessing reproduces the source's evaluation path:

* alignment: least-squares similarity transform of the five landmarks to SphereFace's
  112x96 template (the source's README: data "preprocessed following SphereFace"; SphereFace
  preprocess/code/face_align_demo.m, ``cp2tform(..., 'similarity')`` + bilinear
  ``imtransform``, zero fill). The template is given in MATLAB's 1-based pixel coordinates
  and is shifted by -1 here for OpenCV's 0-based ones;
* RGB channel order (scipy.misc.imread, the BGR flip is commented out in
  dataloader/LFW_loader.py), ``(x - 127.5) / 128``, CHW;
* the 128-d outputs of the crop and of its horizontal mirror are concatenated (256-d), as
  lfw_eval.py ``getFeatureFromTorch`` does, then L2-normalised.

The source's LFW scoring also subtracts the mean feature of the evaluation folds before
normalising (lfw_eval.py ``evaluation_10_fold``); that mean depends on the evaluated set, so
it is not applied here. Runs on CPU under ``torch.no_grad()``.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..faces.align import estimate_similarity
from .aligned_embedding import AlignedFaceEmbedder, as_rgb_uint8

NAME = "mobilefacenet-arcface-casia"
WEIGHTS_NAME = NAME
"""Registry name of the checkpoint (anoncli.weights.REGISTRY)."""

# No literature threshold: the source's lfw_eval.py picks a cosine threshold per LFW fold
# (getThreshold: the accuracy-maximising value on the other nine folds, after subtracting their
# mean feature) and prints only accuracies; neither its README nor the MobileFaceNets paper
# (arXiv:1804.07573, accuracies only) states a value. METHODS.md's "ArcFace cosine < 0.31"
# belongs to another network (insightface ArcFace) and does not transfer. Derive one with
# anoncli.metrics.verification.threshold_at_far on impostor pairs instead.
LITERATURE_THRESHOLD: float | None = None

CROP_HEIGHT, CROP_WIDTH = 112, 96
# SphereFace's five-point template for a 96 (wide) x 112 (high) crop, MATLAB 1-based (x, y):
# left eye, right eye, nose tip, left mouth corner, right mouth corner (image left to right).
SPHEREFACE_TEMPLATE_1BASED = np.array(
    [
        [30.2946, 51.6963],
        [65.5318, 51.5014],
        [48.0252, 71.7366],
        [33.5493, 92.3655],
        [62.7299, 92.2041],
    ],
    dtype=np.float64,
)
TEMPLATE_112x96 = SPHEREFACE_TEMPLATE_1BASED - 1.0
"""The same points in 0-based pixel coordinates (pixel (0, 0) centred on (0, 0)), for cv2.warpAffine."""

PIXEL_MEAN, PIXEL_SCALE = 127.5, 128.0
BATCH_SIZE = 8
"""Faces per forward pass (each also runs mirrored: 16 crops). Small batches stay in cache: on 2 CPU
cores 8 faces ran at about 7 ms per crop, 64 at about 18 ms (torch 2.14, oneDNN)."""


def alignment_matrix_112x96(landmarks5: np.ndarray) -> np.ndarray:
    """2x3 image -> crop similarity for five landmarks (left eye, right eye, nose, mouth corners)."""
    pts = np.asarray(landmarks5, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise ValueError(f"expected 5 x 2 finite landmarks, got shape {pts.shape}")
    return estimate_similarity(pts, TEMPLATE_112x96)


def align_face(image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    """The 112 x 96 RGB uint8 crop the network expects (bilinear, zero outside the image)."""
    image = as_rgb_uint8(image_rgb_uint8)
    return cv2.warpAffine(np.ascontiguousarray(image), alignment_matrix_112x96(landmarks5), (CROP_WIDTH, CROP_HEIGHT),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def to_network_input(crops: np.ndarray) -> np.ndarray:
    """N x 112 x 96 x 3 uint8 RGB crops -> N x 3 x 112 x 96 float32, (x - 127.5) / 128."""
    return ((np.asarray(crops, np.float32) - PIXEL_MEAN) / PIXEL_SCALE).transpose(0, 3, 1, 2).copy()


class MobileFaceNetIdentity(AlignedFaceEmbedder):
    """Aligned-face embeddings (256-d: crop and mirror features concatenated, L2-normalised)."""

    name = NAME
    weights_name = WEIGHTS_NAME
    literature_threshold = LITERATURE_THRESHOLD
    embedding_dim = 256
    batch_size = BATCH_SIZE
    align_face = staticmethod(align_face)

    def __init__(self, weights_path: str | os.PathLike):
        import torch

        from ..models.mobilefacenet import MobileFaceNet

        ckpt = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = ckpt["net_state_dict"] if isinstance(ckpt, dict) and "net_state_dict" in ckpt else ckpt
        state = {k.removeprefix("module."): v for k, v in state.items()}
        self.net = MobileFaceNet()
        self.net.load_state_dict(state, strict=True)
        self.net.eval()
        self.torch = torch

    def features(self, crops: np.ndarray) -> np.ndarray:
        x = to_network_input(np.concatenate([crops, crops[:, :, ::-1]]))
        feats = self.net(self.torch.from_numpy(x)).numpy().astype(np.float64)
        n = len(crops)
        return np.concatenate([feats[:n], feats[n:]], axis=1)
