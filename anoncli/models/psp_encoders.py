"""The pSp and e4e encoders into StyleGAN2's W+, in the parameter layout of their official
checkpoints' ``encoder.*`` half (eladrich/pixel2style2pixel, omertov/encoder4editing).

Both read a 256 x 256 face through an IR-SE50 body (the ArcFace ResNet of Deng et al. 2019, as
TreB1eN's InsightFace_Pytorch lays it out: ``input_layer``, ``body.N``) and a feature pyramid
(``latlayer1``, ``latlayer2``) whose three levels feed one ``GradualStyleBlock`` per style:
- pSp (Richardson et al., "Encoding in Style", CVPR 2021, §3, Fig. 2): every style from its level;
- e4e (Tov et al., "Designing an Encoder for StyleGAN Image Manipulation", SIGGRAPH 2021, §4):
  style 0 predicts a single w, every other style a delta added to it (w_i = w + Δ_i), which keeps
  the codes near W.

``widths`` (the four stages' channels, 64/128/256/512 officially) and ``style_dim`` may be made
smaller for tests; the parameter names stay those of the official files.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import EqualLinear

IR_SE50_UNITS = (3, 4, 14, 3)
OFFICIAL_WIDTHS = (64, 128, 256, 512)
COARSE, MIDDLE = 3, 7   # styles [0, 3) read the 16 px level, [3, 7) the 32 px level, the rest the 64 px level


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018), reduction 16; ``fc1``/``fc2`` are 1 x 1 convolutions."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class BottleneckIRSE(nn.Module):
    """Improved residual unit with SE (ArcFace §3.3): BN, 3x3 conv, PReLU, 3x3 conv (stride), BN, SE."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SqueezeExcite(depth),
        )

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """log2(spatial) stride-2 convolutions with leaky ReLU down to 1 x 1, then an equalized linear
    layer: one style vector (pSp §3, "map2style")."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c)
        self.out_c = out_c

    def forward(self, x):
        return self.linear(self.convs(x).reshape(-1, self.out_c))


class _PyramidEncoder(nn.Module):
    def __init__(self, n_styles: int = 18, style_dim: int = 512, widths: tuple[int, ...] = OFFICIAL_WIDTHS,
                 units: tuple[int, ...] = IR_SE50_UNITS, input_nc: int = 3):
        super().__init__()
        if len(widths) != 4 or len(units) != 4:
            raise ValueError("the IR-SE body has four stages")
        self.n_styles, self.style_dim = n_styles, style_dim
        self.input_layer = nn.Sequential(nn.Conv2d(input_nc, widths[0], 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        body, in_c = [], widths[0]
        for depth, count in zip(widths, units):
            for j in range(count):
                body.append(BottleneckIRSE(in_c, depth, 2 if j == 0 else 1))
                in_c = depth
        self.body = nn.Sequential(*body)
        ends = [sum(units[:k + 1]) - 1 for k in range(4)]
        self.taps = (ends[1], ends[2], ends[3])   # 6, 20, 23 for IR-SE50: strides 4, 8, 16
        self.styles = nn.ModuleList(
            GradualStyleBlock(widths[3], style_dim, 16 if i < COARSE else 32 if i < MIDDLE else 64)
            for i in range(n_styles))
        self.latlayer1 = nn.Conv2d(widths[2], widths[3], 1)
        self.latlayer2 = nn.Conv2d(widths[1], widths[3], 1)

    def features(self, x):
        """c1, c2, c3: the body's outputs at strides 4, 8 and 16."""
        x = self.input_layer(x)
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                taps.append(x)
        return taps

    @staticmethod
    def upsample_add(top, lateral):
        return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class GradualStyleEncoder(_PyramidEncoder):
    """pSp's encoder: N x 3 x 256 x 256 in [-1, 1] -> N x n_styles x style_dim (W+ minus the
    average latent, which the caller adds: pSp's ``start_from_latent_avg``)."""

    def forward(self, x):
        c1, c2, c3 = self.features(x)
        p2 = self.upsample_add(c3, self.latlayer1(c2))
        p1 = self.upsample_add(p2, self.latlayer2(c1))
        levels = [c3] * COARSE + [p2] * (MIDDLE - COARSE) + [p1] * max(self.n_styles - MIDDLE, 0)
        return torch.stack([style(levels[i]) for i, style in enumerate(self.styles)], dim=1)


class Encoder4Editing(_PyramidEncoder):
    """e4e's encoder at its final progressive stage (all deltas on): w_0 from the coarsest level,
    w_i = w_0 + Δ_i(level of i). Same input and output as ``GradualStyleEncoder``."""

    def forward(self, x):
        c1, c2, c3 = self.features(x)
        w0 = self.styles[0](c3)
        out, level = [w0], c3
        for i in range(1, self.n_styles):
            if i == COARSE:
                p2 = level = self.upsample_add(c3, self.latlayer1(c2))
            elif i == MIDDLE:
                level = self.upsample_add(p2, self.latlayer2(c1))
            out.append(w0 + self.styles[i](level))
        return torch.stack(out, dim=1)
