"""Fréchet Inception Distance (Heusel et al. 2017, arXiv:1706.08500), computed as pytorch-fid
0.3.0 does (github.com/mseitzer/pytorch-fid, ``pytorch_fid/fid_score.py``, ``inception.py``).

* Features: the 2048-d pool3 output of the TensorFlow-ported Inception
  (anoncli.models.fid_inception), registry name ``fid-inception-2015-12-05``
  (``pt_inception-2015-12-05-6726825d.pth``).
* Preprocessing: RGB scaled to [0, 1] (torchvision ``ToTensor``), bilinear resize to 299 x 299
  (``F.interpolate``, ``align_corners=False``, no antialiasing), then ``2 x - 1``.
* Statistics: the features' mean and ``np.cov(rowvar=False)``; distance
  ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))``.

pytorch-fid's README calls 2048 images per set the "otherwise required" number for pool3
features: with fewer the covariances are rank-deficient and the estimate is biased, so
compare FIDs only between sets of the same size. Runs on CPU under ``torch.no_grad()``.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from ..models.checkpoint import load_state_dict_exactly
from ..weights import weights_available

NAME = "fid-inception-pool3"
WEIGHTS_NAME = "fid-inception-2015-12-05"
"""Registry name (anoncli.weights.REGISTRY) of the Inception checkpoint."""
BATCH_SIZE = 16
SINGULAR_OFFSET = 1e-6
"""Added to both covariances' diagonals when sqrt(S1 S2) is not finite (pytorch-fid's ``eps``)."""
IMAGINARY_TOLERANCE = 1e-3
"""Largest imaginary part tolerated on the diagonal of sqrt(S1 S2) (pytorch-fid's ``atol``)."""


def available(weights_dir=None) -> tuple[bool, str | None]:
    return weights_available((WEIGHTS_NAME,), weights_dir)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), pytorch-fid's
    ``calculate_frechet_distance``: when sqrtm of the product is not finite (near-singular
    covariances) it is retried with ``SINGULAR_OFFSET`` on both diagonals; a small imaginary
    part from rounding is dropped, a large one (diagonal above 1e-3) raises ValueError."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"sqrt(S1 S2) is not finite (singular product); adding {SINGULAR_OFFSET} to the covariances' "
                      "diagonals", RuntimeWarning, stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * SINGULAR_OFFSET
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
            raise ValueError(f"sqrt(S1 S2) has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples, at least 2) of N x D features."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need an N x D feature array with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_features(features_a, features_b) -> float:
    """FID between two feature sets (N_a x D and N_b x D)."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


class InceptionFeatures:
    """``features(images)``: N x 2048 pool3 features of H x W x 3 uint8 RGB images of any sizes."""

    name = NAME

    def __init__(self, weights_path: str | os.PathLike):
        import torch

        from ..models.fid_inception import fid_inception_v3

        with torch.device("meta"):
            self.net = fid_inception_v3()
        load_state_dict_exactly(self.net, weights_path, "pytorch-fid Inception (pt_inception-2015-12-05)")
        self.net.eval()
        self.torch = torch

    @classmethod
    def from_registry(cls, weights_dir=None) -> "InceptionFeatures":
        """Load the checkpoint found (and sha256-checked) through anoncli.weights; WeightsMissing says how to get it."""
        from ..weights import resolve_weights

        return cls(resolve_weights(WEIGHTS_NAME, weights_dir).path)

    def network_input(self, image: np.ndarray):
        """One H x W x 3 uint8 RGB image -> 1 x 3 x 299 x 299 float32 in [-1, 1]."""
        from ..models.fid_inception import INPUT_SIZE

        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
        x = self.torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
        x = self.torch.nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                                 align_corners=False)
        return 2 * x - 1

    def features(self, images) -> np.ndarray:
        from ..models.fid_inception import FEATURE_DIM, pool3_features

        images = list(images)
        out = np.zeros((len(images), FEATURE_DIM), np.float64)
        with self.torch.no_grad():
            for start in range(0, len(images), BATCH_SIZE):
                batch = self.torch.cat([self.network_input(im) for im in images[start:start + BATCH_SIZE]])
                out[start:start + len(batch)] = pool3_features(self.net, batch).numpy()
        return out
