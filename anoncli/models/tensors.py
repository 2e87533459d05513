"""uint8 images <-> the [-1, 1] float tensors the generators work in."""
from __future__ import annotations

import numpy as np


def to_tensor(images: np.ndarray):
    """N x H x W x 3 uint8 (or float 0..255) -> N x 3 x H x W float32 in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0


def to_images(tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> N x H x W x 3 float32 0..255."""
    return ((tensor.detach().clamp(-1, 1) + 1.0) * 127.5).permute(0, 2, 3, 1).cpu().numpy()
