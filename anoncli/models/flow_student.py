"""The tiny CNN student of a Glow teacher (seed 000, MCKD, Sec. 4; METHODS.md §7): an encoder from
the R x R face to the teacher's per-level latents ε and a decoder back. Networks only: the
distillation is in ``anoncli.train.flow_student``.

Seed 000 leaves the student's layers to an appendix it does not include; this one mirrors the
teacher's multi-scale latent. The encoder halves the resolution once per teacher level with a
strided 3x3 convolution and a residual block, and a 3x3 head at each scale writes that level's ε
(the teacher's split-off half at R/2, R/4, ...; all channels at the last level). The decoder runs
the other way: from the last level's ε, upsample, concatenate the next level's ε, convolve, and
finally one more upsampling to RGB in [−0.5, 0.5].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class StudentConfig:
    resolution: int = 64
    latent_channels: tuple[int, ...] = (6, 12, 24, 96)   # the teacher's per-level ε channels (Glow.latent_shapes)
    widths: tuple[int, ...] = (32, 48, 64, 80)           # feature channels at R/2, R/4, ...

    def check(self) -> None:
        if len(self.latent_channels) != len(self.widths):
            raise ValueError("one width per latent level")
        if self.resolution % (2 ** len(self.widths)):
            raise ValueError(f"resolution {self.resolution} is not divisible by 2^levels")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def for_teacher(cls, teacher, widths: tuple[int, ...] | None = None) -> "StudentConfig":
        channels = tuple(c for c, _, _ in teacher.latent_shapes())
        return cls(teacher.config.resolution, channels, widths or tuple(min(32 + 16 * i, 128) for i in range(len(channels))))


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), _act(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return F.leaky_relu(x + self.body(x), 0.2)


class StudentEncoder(nn.Module):
    """N x 3 x R x R in [−0.5, 0.5] -> the list of per-level ε (the teacher's shapes)."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        config.check()
        self.stem = nn.Sequential(nn.Conv2d(3, config.widths[0], 3, padding=1), _act())
        self.downs, self.heads = nn.ModuleList(), nn.ModuleList()
        cin = config.widths[0]
        for width, channels in zip(config.widths, config.latent_channels):
            self.downs.append(nn.Sequential(nn.Conv2d(cin, width, 3, stride=2, padding=1), _act(), ResBlock(width)))
            self.heads.append(nn.Conv2d(width, channels, 3, padding=1))
            cin = width

    def forward(self, x):
        h = self.stem(x)
        out = []
        for down, head in zip(self.downs, self.heads):
            h = down(h)
            out.append(head(h))
        return out


class StudentDecoder(nn.Module):
    """The per-level ε -> N x 3 x R x R in [−0.5, 0.5]."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        config.check()
        w, c = config.widths, config.latent_channels
        self.top = nn.Sequential(nn.Conv2d(c[-1], w[-1], 3, padding=1), _act(), ResBlock(w[-1]))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w[i + 1] + c[i], w[i], 3, padding=1), _act(), ResBlock(w[i]))
            for i in range(len(w) - 1))
        self.to_rgb = nn.Conv2d(w[0], 3, 3, padding=1)

    def forward(self, eps: list):
        h = self.top(eps[-1])
        for i in reversed(range(len(self.ups))):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = self.ups[i](torch.cat([h, eps[i]], 1))
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        return 0.5 * torch.tanh(self.to_rgb(h))


class FlowStudent(nn.Module):
    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.encoder = StudentEncoder(config)
        self.decoder = StudentDecoder(config)
