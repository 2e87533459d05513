"""Feature spaces for the realism KID of ``anoncli report`` (anoncli.metrics.kid): a registry.

Each entry turns every face of an image (its box and five landmarks, from the manifest) into one
vector per feature *space*; maps are mean- and standard-deviation-pooled over space (per channel:
the first and second moments, the texture statistics of style transfer, Huang & Belongie 2017).
The networks are already on the machine:

- ``dlib``: the PyTorch port of dlib's face recognition ResNet (anoncli.models.dlib_resnet; its
  weights ship in face_recognition_models, so no dlib is needed) on its 150 x 150 chip.
  ``last``: the last convolutional block (256 x 2 x 2, the input of the final average pool,
  after its ReLU), 512-d. ``mid``: the last block of the 64-channel stage (64 x 17 x 17, after
  ReLU), 128-d.
- ``mobilefacenet``: on its aligned 112 x 96 crop. ``last``: conv2 (512 x 7 x 6), 1024-d.
  ``mid``: the last bottleneck of the 64-channel stage (64 x 28 x 24), 128-d. Needs its weights.
- ``inception``: the 2048-d pool3 features of the FID Inception (the KID paper's own feature
  space) on the face's square crop; the report computes them for FID already. Needs its weights.

Why two depths: a recognizer's last block is trained to ignore everything but identity, blur
included. On 300 CelebA crops (identity-disjoint halves, anoncli.metrics.kid) a Gaussian blur of
the face scored a KID ratio of 7.3 in dlib's last block and 399 in its mid block; flowrot 3.1 and
50, k-Same 2.5 and 38, IdentityDP 1.5 and 5.6 (MobileFaceNet: blur 23 and 134). Deeper mid blocks
(128 and 256 channels) and spatial grids instead of mean/std pooling separated less. The mid blocks see
what a smeared, ghosted or pasted face lacks; the last blocks say whether it still reads as a face.

``load(weights_dir)`` returns an object with ``features(rgb, faces) -> (len(faces), dim)``: the
spaces' vectors side by side, in ``spaces`` order (``split_spaces`` takes them apart).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class FeatureNetworkSpec:
    name: str
    summary: str
    weights: tuple[str, ...]              # anoncli.weights registry names
    spaces: tuple[tuple[str, str, int], ...]      # (name, what it is, dimension), in vector order
    load: Callable[[str | None], object] | None   # None: computed elsewhere (inception: the FID features)

    @property
    def dimension(self) -> int:
        return sum(d for _, _, d in self.spaces)


def split_spaces(spec: FeatureNetworkSpec, vectors: np.ndarray) -> dict[str, np.ndarray]:
    """N x spec.dimension -> {space: N x its dimension}."""
    out, start = {}, 0
    for name, _, dim in spec.spaces:
        out[name] = vectors[:, start:start + dim]
        start += dim
    return out


def mean_std_pool(maps) -> np.ndarray:
    """N x C x H x W feature maps -> N x 2C: per channel the spatial mean, then the spatial
    standard deviation (population, 1/(HW))."""
    import torch

    flat = maps.flatten(2)
    return torch.cat([flat.mean(2), flat.std(2, unbiased=False)], 1).double().numpy()


class DlibBlockFeatures:
    """The last block of the dlib ResNet port, on chips cut from the five landmarks."""

    MID_BLOCK = 6   # residual sums 0-2: 32 x 35 x 35; 3-6: 64 x 17 x 17; 7-9: 128 x 8 x 8; 10-12: 256 x 4 x 4; 13: 256 x 2 x 2

    def __init__(self, weights_dir=None):
        import torch

        from ..identity.encoders import load_identity_encoder

        self.torch = torch
        self.net = load_identity_encoder("dlib-resnet", weights_dir)
        self.blocks = sum(1 for kind, _ in self.net.steps if kind == "add_prev")

    @staticmethod
    def chip(rgb: np.ndarray, landmarks5) -> np.ndarray:
        """The 150 x 150 chip ``dlib.get_face_chip(img, shape5, 150, 0.25)`` would cut, placed by
        RetinaFace's five points (anoncli.identity.representation.DLIB_CHIP_POINTS)."""
        import cv2

        from ..faces.align import estimate_similarity
        from ..identity.representation import DLIB_CHIP_POINTS, DLIB_CHIP_SIZE

        m = estimate_similarity(np.asarray(landmarks5, np.float64), DLIB_CHIP_POINTS)
        return cv2.warpAffine(np.ascontiguousarray(rgb[..., :3]), m, (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

    def features(self, rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
        from ..models.dlib_resnet import chips_to_tensor

        if not faces:
            return np.zeros((0, NETWORKS["dlib"].dimension))
        x = chips_to_tensor([self.chip(rgb, f["landmarks"]) for f in faces])
        with self.torch.no_grad():
            blocks = self.net.block_features(x, self.blocks)
        return np.concatenate([mean_std_pool(self.torch.relu(blocks[self.MID_BLOCK])),
                               mean_std_pool(self.torch.relu(blocks[-1]))], 1)


class MobileFaceNetMapFeatures:
    """MobileFaceNet's maps on the aligned crop its evaluator uses (not mirrored)."""

    MID_BLOCK = 4   # bottlenecks 0-4: 64 x 28 x 24 (the first stage); conv2: 512 x 7 x 6

    def __init__(self, weights_dir=None):
        import torch

        from .mobilefacenet_identity import MobileFaceNetIdentity

        self.torch = torch
        self.model = MobileFaceNetIdentity.from_registry(weights_dir)

    def features(self, rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
        from .mobilefacenet_identity import align_face, to_network_input

        if not faces:
            return np.zeros((0, NETWORKS["mobilefacenet"].dimension))
        net = self.model.net
        crops = np.stack([align_face(rgb, np.asarray(f["landmarks"], np.float64)) for f in faces])
        with self.torch.no_grad():
            x = net.dw_conv1(net.conv1(self.torch.from_numpy(to_network_input(crops))))
            mid = net.blocks[:self.MID_BLOCK + 1](x)
            last = net.conv2(net.blocks[self.MID_BLOCK + 1:](mid))
        return np.concatenate([mean_std_pool(mid), mean_std_pool(last)], 1)


NETWORKS: dict[str, FeatureNetworkSpec] = {spec.name: spec for spec in (
    FeatureNetworkSpec("dlib", "dlib ResNet port (face_recognition_models), 150 px chip",
                       ("dlib-face-recognition-resnet",),
                       (("mid", "64-channel stage, 17 x 17, mean+std pooled", 128),
                        ("last", "last conv block, 2 x 2, mean+std pooled", 512)), lambda w: DlibBlockFeatures(w)),
    FeatureNetworkSpec("mobilefacenet", "MobileFaceNet (CASIA-WebFace), 112 x 96 aligned crop",
                       ("mobilefacenet-arcface-casia",),
                       (("mid", "64-channel stage, 28 x 24, mean+std pooled", 128),
                        ("last", "conv2, 7 x 6, mean+std pooled", 1024)), lambda w: MobileFaceNetMapFeatures(w)),
    FeatureNetworkSpec("inception", "FID Inception-v3 on the face's square crop (the KID paper's space)",
                       ("fid-inception-2015-12-05",), (("pool3", "pool3, 2048-d", 2048),), None),
)}


def list_networks() -> list[str]:
    return list(NETWORKS)


def get_network(name: str) -> FeatureNetworkSpec:
    try:
        return NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown realism feature network {name!r}; known: {', '.join(NETWORKS)}") from None


def network_available(name: str, weights_dir=None) -> tuple[bool, str | None]:
    """(True, None), or (False, what is missing and the command that gets it)."""
    from ..weights import weights_available

    return weights_available(get_network(name).weights, weights_dir)
