"""What the landmark-aligned recognizers (MobileFaceNet, ArcFace) share: input checks, the
cosine distance, and batched embedding of aligned crops into unit vectors."""
from __future__ import annotations

import numpy as np


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    return image[..., :3]


def distance(a, b):
    """Cosine distance, 1 - cos(a, b), in [0, 2]: 0 for the same direction, 1 for orthogonal.

    ``a`` and ``b`` are single embeddings (D,) or row-aligned N x D arrays (then N distances).
    Inputs are normalised here, so raw features work too; for ``embed`` output this is
    1 - a . b. A pair is judged the same person when the distance is below a threshold.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    if np.any(na == 0) or np.any(nb == 0):
        raise ValueError("cannot take the cosine of a zero vector")
    d = 1.0 - (a * b).sum(-1) / (na * nb)
    return float(d) if np.ndim(d) == 0 else d


class AlignedFaceEmbedder:
    """``embed(images, landmarks5)``: each face aligned by ``align_face``, run through
    ``features`` in batches of ``batch_size``, L2-normalised. Subclasses load ``self.net``."""

    weights_name: str
    embedding_dim: int
    batch_size: int

    @classmethod
    def from_registry(cls, weights_dir=None):
        """Load the checkpoint found (and sha256-checked) through anoncli.weights."""
        from ..weights import resolve_weights

        return cls(resolve_weights(cls.weights_name, weights_dir).path)

    @staticmethod
    def align_face(image_rgb_uint8: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def features(self, crops: np.ndarray) -> np.ndarray:
        """N aligned uint8 crops -> N x embedding_dim float64 features."""
        raise NotImplementedError

    def embed(self, images_rgb_uint8: list[np.ndarray], landmarks5: list[np.ndarray]) -> np.ndarray:
        """N x embedding_dim float32 unit vectors, one per (image, five landmarks in image pixels)."""
        if len(images_rgb_uint8) != len(landmarks5):
            raise ValueError("need one set of landmarks per image")
        out = np.zeros((len(images_rgb_uint8), self.embedding_dim), np.float32)
        with self.torch.no_grad():
            for start in range(0, len(out), self.batch_size):
                stop = min(start + self.batch_size, len(out))
                crops = np.stack([self.align_face(images_rgb_uint8[i], landmarks5[i]) for i in range(start, stop)])
                feats = self.features(crops)
                out[start:stop] = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        return out

    distance = staticmethod(distance)
