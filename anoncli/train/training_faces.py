"""The aligned training crops as the trainers read them: resized to the network's side, mirrored on
request, as float N x 3 x R x R tensors in [0, 1].

``ResidentFaces`` resizes every crop once and keeps them on the training device, so that a step
only gathers its batch there. On a lent H200 the diffusion autoencoder's steps at batch 128 spent
more time resizing crops on the CPU (about 150 ms a batch on this project's 2 cores) than in the
network; ``face_batch`` is the same batch made on the CPU from the crops each time.
"""
from __future__ import annotations

import numpy as np


def resize_faces(crops: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 N x R x R x 3 crops at ``resolution`` (area-averaged when smaller)."""
    import cv2

    if crops.shape[1] == resolution:
        return np.asarray(crops)
    return np.stack([cv2.resize(np.asarray(c), (resolution, resolution), interpolation=cv2.INTER_AREA) for c in crops])


def face_batch(crops, indices: np.ndarray, resolution: int, device, flips: np.ndarray | None = None):
    """N x 3 x R x R float faces in [0, 1] of a CropSet, resized, the ``flips`` ones mirrored."""
    import torch

    faces = resize_faces(crops.crops[indices], resolution)
    if flips is not None:
        faces = np.stack([f[:, ::-1] if flip else f for f, flip in zip(faces, flips)])
    return (torch.from_numpy(np.ascontiguousarray(faces, dtype=np.float32)).permute(0, 3, 1, 2) / 255.0).to(device)


class ResidentFaces:
    """Every crop of a CropSet at ``resolution``, held as uint8 on ``device``; ``batch`` gives what
    ``face_batch`` gives for the same indices and flips."""

    def __init__(self, crops, resolution: int, device, chunk: int = 1024):
        import torch

        resized = np.concatenate([resize_faces(crops.crops[start:start + chunk], resolution)
                                  for start in range(0, len(crops.crops), chunk)])
        self.faces = torch.from_numpy(resized).to(device)   # N x R x R x 3

    def __len__(self) -> int:
        return len(self.faces)

    def batch(self, indices: np.ndarray, flips: np.ndarray | None = None):
        import torch

        device = self.faces.device
        faces = self.faces[torch.as_tensor(np.asarray(indices, np.int64), device=device)]
        if flips is not None:
            mirrored = torch.as_tensor(np.asarray(flips, bool), device=device)[:, None, None, None]
            faces = torch.where(mirrored, faces.flip(2), faces)
        return faces.permute(0, 3, 1, 2).float() / 255.0
