"""r_id(X): the identity representation the identity methods perturb and rotate, on the methods'
aligned crops (METHODS.md §5-6).

The frozen encoder (dlib's ResNet by default) reads its own chip, which is cut from the method's
crop by a fixed similarity warp (``crop_to_chip``), differentiably, so training can back-propagate
L_id through it. Its 128-d descriptor e is then centred and whitened with statistics of the
training faces and scaled to unit length:

    r_id(X) = W (e − μ) / ‖W (e − μ)‖,     W = (Σ + λ I)^(−1/2)

The book's ArcFace vectors already spread over their hypersphere (ch. 8.3, "distributed around
each feature centre on a normalized 512-D hypersphere"); dlib's do not (they share a large mean,
so two strangers have cosine ≈ 0.9). Whitening gives dlib's vectors that geometry, so that a
random unit vector, a Laplace-perturbed one or a rotated one is a plausible identity for the
generator. It is a fixed, public map: the DP bound Δf ≤ 2√d of a unit vector holds unchanged.
"""
from __future__ import annotations

import numpy as np

from ..faces.align import estimate_similarity, template_points

DLIB_CHIP_SIZE = 150
DLIB_CHIP_POINTS = np.array([[46.73, 45.30], [100.65, 44.49], [73.90, 78.29], [50.85, 100.26], [97.89, 99.39]])
"""RetinaFace's five points (eyes, nose tip, mouth corners) on ``dlib.get_face_chip(image, shape5,
150, 0.25)`` chips: the mean over 80 CelebA crops (std 2-6 px). Places dlib's chip in any crop
aligned on the ArcFace template."""


def crop_to_chip_matrix(resolution: int, margin: float, chip_size: int = DLIB_CHIP_SIZE) -> np.ndarray:
    """2x3 similarity from crop pixels to dlib chip pixels."""
    return estimate_similarity(template_points(resolution, margin), DLIB_CHIP_POINTS * (chip_size / DLIB_CHIP_SIZE))


def sampling_theta(crop_to_chip: np.ndarray, crop_size: int, chip_size: int) -> np.ndarray:
    """The 2x3 ``theta`` of ``torch.nn.functional.affine_grid`` (align_corners=False) that samples
    the chip from the crop: chip normalised coordinates -> crop normalised coordinates."""
    full = np.vstack([crop_to_chip, [0, 0, 1]])
    chip_to_crop = np.linalg.inv(full)
    # pixel p (centre at p + 0.5) <-> normalised n = (2p + 1)/size − 1
    to_pixels_chip = np.array([[chip_size / 2, 0, (chip_size - 1) / 2], [0, chip_size / 2, (chip_size - 1) / 2], [0, 0, 1]])
    to_norm_crop = np.array([[2 / crop_size, 0, 1 / crop_size - 1], [0, 2 / crop_size, 1 / crop_size - 1], [0, 0, 1]])
    return (to_norm_crop @ chip_to_crop @ to_pixels_chip)[:2]


def fit_whitening(embeddings: np.ndarray, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(μ, W) with W = (Σ + λI)^(−1/2), λ = shrinkage × mean eigenvalue of Σ (keeps the weakest
    directions from being blown up by noise)."""
    e = np.asarray(embeddings, np.float64)
    if e.ndim != 2 or len(e) < 2:
        raise ValueError("need at least two embeddings")
    mu = e.mean(0)
    cov = np.cov(e - mu, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0, None) + shrinkage * float(np.mean(vals))
    w = (vecs / np.sqrt(vals)) @ vecs.T
    return mu.astype(np.float32), w.astype(np.float32)


def face_code_covariance(w: np.ndarray, shrinkage: float) -> np.ndarray:
    """Covariance of real faces' whitened descriptors W (e − μ), from W alone: W Σ W = I − λ W²,
    since ``fit_whitening`` sets W⁻² = Σ + λI with λ = s · mean eig Σ, so λ = s/(1 + s) · tr(W⁻²)/d.

    Shrinkage leaves the directions dlib's descriptors barely use near 0 (50 of 128 for the
    shipped generator), where a uniform unit vector puts as much weight as anywhere else."""
    w = np.asarray(w, np.float64)
    inverse_square = np.linalg.inv(w @ w)
    lam = shrinkage / (1.0 + shrinkage) * float(np.trace(inverse_square)) / len(w)
    return np.eye(len(w)) - lam * (w @ w)


def symmetric_root(covariance: np.ndarray) -> np.ndarray:
    """C^(1/2) of a symmetric positive semi-definite C (eigenvalues below 0, rounding, set to 0)."""
    vals, vecs = np.linalg.eigh(np.asarray(covariance, np.float64))
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def shaped_like_faces(vector: np.ndarray, root: np.ndarray) -> np.ndarray:
    """C^(1/2) v / ‖C^(1/2) v‖: an isotropic direction v given real faces' covariance C (a fixed,
    public map, so applied to a DP-noised vector it is post-processing)."""
    shaped = np.asarray(root, np.float64) @ np.asarray(vector, np.float64)
    return shaped / np.linalg.norm(shaped)


def identity_codes(embeddings: np.ndarray, mu: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Unit rows W (e − μ) / ‖·‖ (numpy form of ``IdentityRepresentation``)."""
    z = (np.asarray(embeddings, np.float64) - mu) @ np.asarray(w, np.float64).T
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def build_representation(encoder, resolution: int, margin: float, mu: np.ndarray, w: np.ndarray):
    """The torch module: crops in [-1, 1] (N x 3 x R x R) -> unit r_id (N x d), differentiable."""
    import torch
    import torch.nn.functional as F

    theta = torch.tensor(sampling_theta(crop_to_chip_matrix(resolution, margin), resolution, DLIB_CHIP_SIZE), dtype=torch.float32)

    class IdentityRepresentation(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.register_buffer("theta", theta)
            self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float32))
            self.register_buffer("w", torch.as_tensor(w, dtype=torch.float32))

        def chips(self, crops: torch.Tensor) -> torch.Tensor:
            return self.to_chip((crops + 1) * 127.5)

        def to_chip(self, maps: torch.Tensor) -> torch.Tensor:
            """Any maps on the crop (N x C x R x R) resampled onto dlib's chip, as ``chips`` does the faces."""
            grid = F.affine_grid(self.theta.expand(len(maps), 2, 3), (len(maps), maps.shape[1], DLIB_CHIP_SIZE, DLIB_CHIP_SIZE),
                                 align_corners=False)
            return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)

        def descriptors(self, crops: torch.Tensor) -> torch.Tensor:
            return self.encoder(self.chips(crops))

        def codes_of(self, descriptors: torch.Tensor) -> torch.Tensor:
            return F.normalize((descriptors - self.mu) @ self.w.T, dim=1)

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            return self.codes_of(self.descriptors(crops))

    return IdentityRepresentation().eval().requires_grad_(False)


def representation_without_code(encoder, resolution: int, margin: float):
    """The same module with μ = 0 and W = I: the raw descriptors and the chips, for the training
    data (which the whitening is fitted on) and for feature losses."""
    return build_representation(encoder, resolution, margin, np.zeros(128, np.float32), np.eye(128, dtype=np.float32))
