"""LPIPS v0.1, AlexNet trunk (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", arXiv:1801.03924): the default of the official ``lpips``
package (github.com/richzhang/PerceptualSimilarity; constants and order of operations from
lpips 0.1.4 on PyPI, ``lpips/lpips.py``, ``lpips/pretrained_networks.py``,
``lpips/__init__.py``):

1. inputs in [-1, 1] go through the scaling layer, ``(x - shift) / scale``;
2. torchvision's AlexNet ``features`` are read after each ReLU: modules [0:2], [2:5], [5:8],
   [8:10], [10:12] (relu1 .. relu5, 64, 192, 384, 256, 256 channels);
3. each feature map is divided by its L2 norm over channels (+ 1e-10);
4. the squared difference of the two images' maps goes through a 1x1 convolution to one
   channel without bias (``lin0`` .. ``lin4``), is averaged over height and width,
   and the five layers are summed.

Submodule names follow the official files: ``backbone`` takes torchvision's AlexNet state dict
(``alexnet-owt-7be5be79.pth``) minus the classifier; ``linear`` takes lpips's
``weights/v0.1/alex.pth`` (keys ``lin{k}.model.1.weight``). Definitions only: no file access.
"""
from __future__ import annotations

import torch
from torch import nn

SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)
RELU_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
"""``[start, stop)`` module indices of torchvision's ``alexnet().features`` ending at relu1 .. relu5."""
CHANNELS = (64, 192, 384, 256, 256)
NORM_EPS = 1e-10
MIN_SIDE = 31
"""Smallest height and width that AlexNet's strides and pools take down to a 1 x 1 relu5."""


class LinearHead(nn.Module):
    """lpips's ``NetLinLayer``: ``model`` = (Dropout, 1x1 conv to one channel, no bias).

    The dropout only keeps the checkpoint's index ``model.1``; it is inert in eval mode.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unit_channels(x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)


class LPIPSAlexNet(nn.Module):
    """``forward(x0, x1)``: N x 3 x H x W RGB in [-1, 1], both the same size -> N distances."""

    def __init__(self, backbone: nn.Sequential):
        super().__init__()
        self.backbone = backbone
        self.linear = nn.ModuleDict({f"lin{k}": LinearHead(c) for k, c in enumerate(CHANNELS)})
        self.register_buffer("shift", torch.tensor(SCALING_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALING_SCALE).view(1, 3, 1, 1))

    def layer_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for start, stop in RELU_SLICES:
            x = self.backbone[start:stop](x)
            out.append(x)
        return out

    def reference_features(self, x0: torch.Tensor) -> list[torch.Tensor]:
        """x0's unit-normalised features, computed once for many ``distance_to`` calls."""
        return [unit_channels(a) for a in self.layer_features(x0)]

    def distance_to(self, reference: list[torch.Tensor], x1: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x1.shape[0], device=x1.device)
        for head, a, b in zip(self.linear.values(), reference, self.layer_features(x1)):
            total = total + head((a - unit_channels(b)) ** 2).mean((1, 2, 3))
        return total

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.distance_to(self.reference_features(x0), x1)
