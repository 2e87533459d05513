"""LPIPS perceptual distance (Zhang et al. 2018, arXiv:1801.03924), AlexNet trunk, v0.1: the
default of the official ``lpips`` package (``lpips.LPIPS(net="alex")``); network in
anoncli.models.lpips_alexnet.

Two files, both in their official formats (registry names):

* ``lpips-alexnet-backbone``: torchvision's ImageNet AlexNet, ``alexnet-owt-7be5be79.pth``;
* ``lpips-alex-linear-v0.1``: lpips's ``weights/v0.1/alex.pth`` (also found inside an
  installed ``lpips`` wheel).

Images are uint8 RGB, scaled to [-1, 1] by ``x / 127.5 - 1`` (lpips's ``im2tensor``), no resize.
0 for identical images, larger for perceptually more different ones.
Runs on CPU under ``torch.no_grad()``.
"""
from __future__ import annotations

import os

import numpy as np

NAME = "lpips-alex-v0.1"
BACKBONE_WEIGHTS = "lpips-alexnet-backbone"
LINEAR_WEIGHTS = "lpips-alex-linear-v0.1"
WEIGHTS = (BACKBONE_WEIGHTS, LINEAR_WEIGHTS)
"""Registry names (anoncli.weights.REGISTRY) of the files this metric needs."""
BATCH_SIZE = 16


def available(weights_dir=None) -> tuple[bool, str | None]:
    from ..weights import weights_available

    return weights_available(WEIGHTS, weights_dir)


def _as_images(images) -> list[np.ndarray]:
    out = [np.asarray(im) for im in images]
    for i, im in enumerate(out):
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"image {i}: expected H x W x 3 uint8 RGB, got {im.dtype} {im.shape}")
    return out


def to_network_input(images: list[np.ndarray]):
    """Same-size H x W x 3 uint8 RGB images -> N x 3 x H x W float32 tensor in [-1, 1]."""
    import torch

    x = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


class LPIPS:
    """``distance(images_a, images_b)``: LPIPS of each pair (a[i], b[i])."""

    name = NAME

    def __init__(self, alexnet_path: str | os.PathLike, linear_path: str | os.PathLike):
        import torch
        import torchvision

        from ..models.checkpoint import load_state_dict_exactly
        from ..models.lpips_alexnet import LPIPSAlexNet

        with torch.device("meta"):
            alexnet = torchvision.models.alexnet(weights=None)
        load_state_dict_exactly(alexnet, alexnet_path, "torchvision AlexNet")
        self.net = LPIPSAlexNet(alexnet.features)
        load_state_dict_exactly(self.net.linear, linear_path, "LPIPS v0.1 AlexNet linear-layer")
        self.net.eval()
        self.torch = torch

    @classmethod
    def from_registry(cls, weights_dir=None) -> "LPIPS":
        """Load the files found (and sha256-checked) through anoncli.weights; WeightsMissing says how to get them."""
        from ..weights import resolve_weights

        return cls(resolve_weights(BACKBONE_WEIGHTS, weights_dir).path, resolve_weights(LINEAR_WEIGHTS, weights_dir).path)

    def distance(self, images_a, images_b) -> np.ndarray:
        """N float64 distances for two sequences of H x W x 3 uint8 RGB images (or N x H x W x 3
        arrays); the two images of a pair have the same size, different pairs may differ."""
        from ..models.lpips_alexnet import MIN_SIDE

        a, b = _as_images(images_a), _as_images(images_b)
        if len(a) != len(b):
            raise ValueError(f"{len(a)} images against {len(b)}: LPIPS compares pairs")
        for i, (x, y) in enumerate(zip(a, b)):
            if x.shape != y.shape:
                raise ValueError(f"pair {i}: sizes differ, {x.shape} vs {y.shape}")
            if min(x.shape[:2]) < MIN_SIDE:
                raise ValueError(f"pair {i}: {x.shape[0]} x {x.shape[1]} is below AlexNet's {MIN_SIDE} x {MIN_SIDE}")
        out = np.zeros(len(a), np.float64)
        start = 0
        with self.torch.no_grad():
            while start < len(a):
                stop = start + 1
                while stop < len(a) and stop - start < BATCH_SIZE and a[stop].shape == a[start].shape:
                    stop += 1
                d = self.net(to_network_input(a[start:stop]), to_network_input(b[start:stop]))
                out[start:stop] = d.numpy()
                start = stop
        return out
