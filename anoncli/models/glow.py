"""Glow (Kingma & Dhariwal, 2018), the flow FFEM rotates the latent of (seed 001; METHODS.md §7).

- ``ActNorm``: per-channel affine y = (x + b)·e^s, initialised from the first batch so that its
  output has zero mean and unit variance per channel; log|det| = H·W·Σ s.
- ``InvConv2dLU``: invertible 1x1 convolution with W = P·L·(U + diag(sign · e^{log|s|})), P a fixed
  permutation, L unit lower triangular, U strictly upper triangular; log|det| = H·W·Σ log|s|.
- ``AffineCoupling``: x = (x_a, x_b); (t, s_raw) = NN(x_a); y_b = (x_b + t)·σ(s_raw + 2), y_a = x_a;
  NN = Conv3x3, ReLU, Conv1x1, ReLU, ZeroConv3x3 (last layer zero-initialised with a learned
  log-scale factor 3, as in the official code), so every step starts as the identity.
- Levels: squeeze (C, H, W) -> (4C, H/2, W/2), K steps, then split off half the channels as z_i
  with a learned conditional prior N(μ, σ) = ZeroConv(h) of the half that goes on; the last
  level's prior is learned (a ZeroConv of zeros, "learn_top").

``encode`` returns the standard-normal ε_i = (z_i − μ_i)/σ_i of every level (the latent FFEM
rotates, with the learned prior divided out) and log p(x); ``decode`` maps ε back at temperature
T (z_i = μ_i + T·σ_i·ε_i). Encode then decode returns the input to float precision. Networks only:
training is in ``anoncli.train``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class GlowConfig:
    resolution: int = 128
    levels: int = 5
    steps: int = 32
    hidden: int = 512
    n_bits: int = 5       # Glow's CelebA-HQ setting: 5-bit colour, the NLL counts 2^5 bins per sample

    def check(self) -> None:
        if self.resolution % (2 ** self.levels):
            raise ValueError(f"resolution {self.resolution} is not divisible by 2^levels = {2 ** self.levels}")

    def to_dict(self) -> dict:
        return asdict(self)


def gaussian_log_p(x: torch.Tensor, mean: torch.Tensor, log_sd: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, e^{log_sd})."""
    return -0.5 * LOG_2PI - log_sd - 0.5 * (x - mean) ** 2 * torch.exp(-2 * log_sd)


def squeeze2d(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze2d(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


class ActNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.bias.data.copy_(-mean)
        self.log_scale.data.copy_(torch.log(1.0 / (std + 1e-6)))
        self.initialized.fill_(1)

    def forward(self, x):
        if not self.initialized:
            self._initialize(x)
        logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return (x + self.bias) * torch.exp(self.log_scale), logdet

    def reverse(self, y):
        return y * torch.exp(-self.log_scale) - self.bias


class InvConv2dLU(nn.Module):
    def __init__(self, channels: int, generator: torch.Generator | None = None):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def inverse(self) -> torch.Tensor:
        return torch.linalg.inv(self.weight().double()).to(self.lower.dtype)

    @torch.no_grad()
    def freeze(self) -> None:
        """Compute W and W⁻¹ once (frozen inference: each decode otherwise inverts every step's W)."""
        self.register_buffer("frozen_weight", self.weight(), persistent=False)
        self.register_buffer("frozen_inverse", self.inverse(), persistent=False)

    # Always in the weights' precision, also under autocast: in bfloat16 the mixing of a decode's 32 steps
    # loses the inverse (FSAP's bfloat16 search decoded a face to NaN; README, FSAP speed).
    def forward(self, x):
        w = self.frozen_weight if hasattr(self, "frozen_weight") else self.weight()
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(x.to(w.dtype), w[:, :, None, None]), x.shape[2] * x.shape[3] * self.log_s.sum()

    def reverse(self, y):
        w_inv = self.frozen_inverse if hasattr(self, "frozen_inverse") else self.inverse()
        with torch.autocast(y.device.type, enabled=False):
            return F.conv2d(y.to(w_inv.dtype), w_inv[:, :, None, None])


class ZeroConv2d(nn.Module):
    """3x3 convolution initialised to zero, output scaled by e^{3·logs} (the official Glow code)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x):
        return self.conv(x) * torch.exp(self.logs * 3)


class AffineCoupling(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels // 2, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            ZeroConv2d(hidden, channels),
        )
        self.net_dtype: torch.dtype | None = None   # Glow.coupling_precision

    def _shift_scale(self, x_a):
        if self.net_dtype is None:
            h = self.net(x_a)
        else:
            with torch.autocast(x_a.device.type, dtype=self.net_dtype):
                h = self.net(x_a)
            h = h.to(x_a.dtype)
        shift, raw = h[:, 0::2], h[:, 1::2]
        return shift, torch.sigmoid(raw + 2.0)

    def forward(self, x):
        x_a, x_b = x.chunk(2, 1)
        shift, scale = self._shift_scale(x_a)
        y_b = (x_b + shift) * scale
        return torch.cat([x_a, y_b], 1), torch.log(scale).flatten(1).sum(1)

    def reverse(self, y):
        y_a, y_b = y.chunk(2, 1)
        shift, scale = self._shift_scale(y_a)
        return torch.cat([y_a, y_b / scale - shift], 1)


class FlowStep(nn.Module):
    def __init__(self, channels: int, hidden: int, generator=None):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv2dLU(channels, generator)
        self.coupling = AffineCoupling(channels, hidden)

    def forward(self, x):
        x, ld1 = self.actnorm(x)
        x, ld2 = self.invconv(x)
        x, ld3 = self.coupling(x)
        return x, ld1 + ld2 + ld3

    def reverse(self, y):
        return self.actnorm.reverse(self.invconv.reverse(self.coupling.reverse(y)))


class Glow(nn.Module):
    def __init__(self, config: GlowConfig = GlowConfig(), seed: int = 0):
        super().__init__()
        config.check()
        self.config = config
        generator = torch.Generator().manual_seed(seed)   # the fixed permutations of the 1x1 convolutions
        self.levels = nn.ModuleList()
        self.priors = nn.ModuleList()
        c, size = 3, config.resolution
        for i in range(config.levels):
            c, size = c * 4, size // 2
            self.levels.append(nn.ModuleList(FlowStep(c, config.hidden, generator) for _ in range(config.steps)))
            if i < config.levels - 1:
                self.priors.append(ZeroConv2d(c // 2, c))      # μ, log σ of the split-off half
                c //= 2
            else:
                self.priors.append(ZeroConv2d(c, 2 * c))       # learned top prior, from zeros
        self.top_shape = (c, size, size)

    def freeze(self) -> "Glow":
        """Inference only from here on: no gradients for the parameters, every 1 x 1 convolution's
        W and W⁻¹ computed once."""
        self.eval().requires_grad_(False)
        for module in self.modules():
            if isinstance(module, InvConv2dLU):
                module.freeze()
        return self

    @contextmanager
    def coupling_precision(self, dtype: torch.dtype | None):
        """Within the block, the coupling networks (nearly all of the flow's multiply-adds) compute
        under autocast to ``dtype``; their outputs, every transform and log-determinant, and the
        weights stay in the input's precision. None: no autocast."""
        couplings = [m for m in self.modules() if isinstance(m, AffineCoupling)]
        before = [c.net_dtype for c in couplings]
        for c in couplings:
            c.net_dtype = dtype
        try:
            yield self
        finally:
            for c, d in zip(couplings, before):
                c.net_dtype = d

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        shapes, c, size = [], 3, self.config.resolution
        for i in range(self.config.levels):
            c, size = c * 4, size // 2
            if i < self.config.levels - 1:
                c //= 2
            shapes.append((c, size, size))
        return shapes

    def _prior(self, i: int, h: torch.Tensor | None, batch: int, like: torch.Tensor):
        if i < self.config.levels - 1:
            out = self.priors[i](h)
        else:
            out = self.priors[i](torch.zeros(batch, *self.top_shape, device=like.device, dtype=like.dtype))
        return out[:, 0::2], out[:, 1::2]

    def preprocess(self, images_01: torch.Tensor, dequantize: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """[0, 1] RGB -> Glow's input: n_bits colour, centred, plus uniform dequantisation noise."""
        bins = 2 ** self.config.n_bits
        x = torch.floor(images_01.clamp(0, 1) * 255 / 2 ** (8 - self.config.n_bits)) / bins - 0.5
        if dequantize:
            x = x + torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) / bins
        return x

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(ε per level, log p(x) per sample) for preprocessed x."""
        batch = x.shape[0]
        logdet = torch.zeros(batch, device=x.device, dtype=x.dtype)
        log_p = torch.zeros_like(logdet)
        eps = []
        h = x
        for i, steps in enumerate(self.levels):
            h = squeeze2d(h)
            for step in steps:
                h, ld = step(h)
                logdet = logdet + ld
            if i < self.config.levels - 1:
                h, z = h.chunk(2, 1)
                mean, log_sd = self._prior(i, h, batch, x)
            else:
                z = h
                mean, log_sd = self._prior(i, None, batch, x)
            log_p = log_p + gaussian_log_p(z, mean, log_sd).flatten(1).sum(1)
            eps.append((z - mean) * torch.exp(-log_sd))
        return eps, log_p + logdet

    def decode(self, eps: list[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
        batch = eps[0].shape[0]
        h = None
        for i in reversed(range(self.config.levels)):
            if i == self.config.levels - 1:
                mean, log_sd = self._prior(i, None, batch, eps[i])
                h = mean + temperature * torch.exp(log_sd) * eps[i]
            else:
                mean, log_sd = self._prior(i, h, batch, eps[i])
                h = torch.cat([h, mean + temperature * torch.exp(log_sd) * eps[i]], 1)
            for step in reversed(self.levels[i]):
                h = step.reverse(h)
            h = unsqueeze2d(h)
        return h

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """Glow's objective: −log p(x) plus the discretisation term D·log(2^n_bits), per dimension, in bits."""
        _, log_p = self.encode(x)
        dims = x[0].numel()
        nll = -log_p + dims * math.log(2 ** self.config.n_bits)
        return nll / (dims * math.log(2))
