"""MobileFaceNet (Chen et al. 2018, arXiv:1804.07573) for 112x96 (height x width) face crops.

The layer layout and parameter names follow Xiaoccer/MobileFaceNet_Pytorch (core/model.py),
so that repository's checkpoint ``model/best/068.ckpt`` (``ckpt["net_state_dict"]``) loads
with ``strict=True``. Input: N x 3 x 112 x 96 float, output: N x 128 (not normalised).
Definitions only: no file or network access here.
"""
from __future__ import annotations

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s), per the paper's Table 1.
BOTTLENECK_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)
INPUT_SIZE = (112, 96)
"""Height, width of the aligned crop the network expects."""
EMBEDDING_DIM = 128


class ConvBNAct(nn.Module):
    """Convolution (no bias), batch norm, then PReLU unless ``linear``.

    Submodule names ``conv``, ``bn``, ``prelu`` match the checkpoint's keys.
    """

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0,
                 depthwise: bool = False, linear: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=cin if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.linear = linear
        if not linear:
            self.prelu = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.linear else self.prelu(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand, 3x3 depthwise, 1x1 linear projection.

    The residual connection is used when the stride is 1 and the channel count is unchanged.
    The layers sit in one ``nn.Sequential`` called ``conv`` (indices 0-7, as in the checkpoint).
    """

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """112x96 RGB crop (normalised as (x - 127.5) / 128) -> 128-d face embedding."""

    def __init__(self, setting=BOTTLENECK_SETTING, embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.conv1 = ConvBNAct(3, 64, 3, 2, 1)
        self.dw_conv1 = ConvBNAct(64, 64, 3, 1, 1, depthwise=True)
        layers, cin = [], 64
        for t, c, n, s in setting:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*layers)
        self.conv2 = ConvBNAct(cin, 512, 1)
        # Global depthwise convolution: its 7x6 kernel covers the whole 7x6 map of a 112x96 input.
        self.linear7 = ConvBNAct(512, 512, (INPUT_SIZE[0] // 16, INPUT_SIZE[1] // 16), depthwise=True, linear=True)
        self.linear1 = ConvBNAct(512, embedding_dim, 1, linear=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_conv1(self.conv1(x))
        x = self.conv2(self.blocks(x))
        x = self.linear1(self.linear7(x))
        return x.flatten(1)
