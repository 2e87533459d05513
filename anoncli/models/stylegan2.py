"""StyleGAN2's generator (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN",
CVPR 2020) in the parameter layout of rosinality/stylegan2-pytorch, the layout of
``stylegan2-ffhq-config-f.pt``'s ``g_ema`` and of the ``decoder.*`` half of the pSp and e4e
checkpoints: ``style.*`` (mapping network), ``input.input``, ``conv1``, ``to_rgb1``, ``convs.N``,
``to_rgbs.N``, ``noises.noise_N``.

Plain torch: the FIR up-sampling (``upfirdn2d``) and the fused bias + leaky ReLU of the official
CUDA kernels are written with ``F.pad`` / ``F.conv2d``, so it runs on any device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)


def official_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Feature maps per resolution of config-f (paper Table 1 / appendix: 512 up to 32 px, then halving)."""
    m = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m, 1024: 16 * m}


def fir_kernel(taps=BLUR_KERNEL, gain: float = 1.0) -> torch.Tensor:
    """The separable low-pass filter of §B ("Blur"), normalised to sum to ``gain``."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
    """Upsample by zero insertion, pad (negative values crop), convolve with the FIR ``kernel``,
    keep every ``down``-th sample; per channel, the same padding on both axes."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0):x.shape[2] - max(-p1, 0), max(-p0, 0):x.shape[3] - max(-p1, 0)]
    # a true convolution: conv2d correlates, so the kernel is flipped
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def scaled_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Bias, leaky ReLU (0.2) and the √2 gain that keeps the activations' variance (StyleGAN's "lrelu")."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with the equalized learning rate (ProGAN §4.1): weights stored as N(0, 1/lr_mul²),
    scaled at run time."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x):
        if self.activate:
            return scaled_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(gain=gain))
        self.pad = pad

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """×2 FIR up-sampling of the skip connections (StyleGAN2 Fig. 7b, output skips)."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(gain=factor ** 2))
        p = self.kernel.shape[0] - factor
        self.factor = factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Weight modulation and demodulation (StyleGAN2 §2.2, eq. 1-3): the style scales the input
    channels of the weights, demodulation renormalises every output channel; one grouped
    convolution for the batch. ``upsample``: transposed stride-2 convolution followed by the blur."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            factor = 2
            p = (len(BLUR_KERNEL) - factor) - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + factor - 1, p // 2 + 1), gain=factor ** 2)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(self, x, style):
        n, c, h, w = x.shape
        k = self.kernel_size
        weight = self.scale * self.weight * self.modulation(style).view(n, 1, c, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4)) + 1e-8).view(n, self.out_channel, 1, 1, 1)
        x = x.reshape(1, n * c, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(n * c, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, padding=0, groups=n)
            return self.blur(out.reshape(n, self.out_channel, *out.shape[-2:]))
        out = F.conv2d(x, weight.reshape(n * self.out_channel, c, k, k), padding=self.padding, groups=n)
        return out.reshape(n, self.out_channel, *out.shape[-2:])


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise):
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return scaled_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x, style, noise):
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int):
        return self.input.expand(batch, -1, -1, -1)


class Generator(nn.Module):
    """Config-f StyleGAN2 generator (skip outputs, no residual G): mapping network ``style`` (pixel
    norm, ``n_mlp`` lrelu layers at learning-rate multiplier 0.01) and the synthesis network from a
    learned 4 x 4 constant up to ``size``. ``channels``: feature maps per resolution, by default
    the official table (``official_channels``); smaller tables keep the same parameter names."""

    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channels: dict[int, int] | None = None, lr_mlp: float = 0.01):
        super().__init__()
        self.log_size = int(math.log2(size))
        if 2 ** self.log_size != size or size < 8:
            raise ValueError(f"StyleGAN2 size must be a power of two >= 8, got {size}")
        self.size, self.style_dim = size, style_dim
        self.channels = dict(channels) if channels is not None else official_channels(channel_multiplier)
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True)
                                                  for _ in range(n_mlp)])
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, style_dim)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()   # empty in the official code too; kept for the layout
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_channel = c4
        for log_res in range(3, self.log_size + 1):
            out_channel = self.channels[2 ** log_res]
            self.convs.append(StyledConv(in_channel, out_channel, style_dim, upsample=True))
            self.convs.append(StyledConv(out_channel, out_channel, style_dim))
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (N x style_dim) -> w (N x style_dim)."""
        return self.style(z)

    def synthesis(self, w_plus: torch.Tensor) -> torch.Tensor:
        """W+ (N x n_latent x style_dim) -> N x 3 x size x size, roughly in [-1, 1]. The per-layer noise
        is the stored ``noises.noise_N`` (pSp's ``randomize_noise=False``): a deterministic f_D."""
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"expected W+ of shape N x {self.n_latent} x {self.style_dim}, got {tuple(w_plus.shape)}")
        noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        out = self.conv1(self.input(w_plus.shape[0]), w_plus[:, 0], noise[0])
        skip = self.to_rgb1(out, w_plus[:, 1])
        i = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * k](out, w_plus[:, i], noise[2 * k + 1])
            out = self.convs[2 * k + 1](out, w_plus[:, i + 1], noise[2 * k + 2])
            skip = to_rgb(out, w_plus[:, i + 2], skip)
            i += 2
        return skip
