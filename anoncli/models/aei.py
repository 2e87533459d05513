"""The disentangling generator of IdentityDP and identity rotation: FaceShifter's AEI-Net layout
as the book gives it (Wen et al., ch. 5.3.5 "Fusion Network", ch. 8 Table 8.3; Li et al.,
FaceShifter, 2020), at a width this project can train.

- ``AttributeEncoder`` g(X): a U-Net. Encoder Conv 4x4/2/1 + BN + LeakyReLU(0.1) down to 2 x 2;
  decoder ConvTranspose 4x4/2/1 + BN + LeakyReLU(0.1), each output concatenated (CON) with the
  encoder map of the same size. Its decoder maps, coarse to fine, are the multilevel attributes
  r_att = {r_att^1..r_att^n} (eq. 5.8); the last is the finest map bilinearly upsampled to the
  input size, as in FaceShifter. At 128 px that gives n = 7 levels (2 ... 128), one per octave; the
  book's n = 8 is the same rule at 256 px. With ``full_res_channels`` > 0 (not in the book) the
  last level also carries a 3 x 3 convolution of the input itself at full resolution, so the
  finest AAD block sees the pixels, not only 64 px features upsampled (the 3 -> 8 channel first
  layer at half resolution is the narrowest point of the reconstruction path).
- ``AEIGenerator`` h(r_id, r_att): the identity vector through ConvTranspose to 2 x 2, then one
  AAD ResBlk per level, bilinear upsampling x2 between them (eq. 5.9).
- ``AADLayer``: Adaptive Attentional Denormalization. The normalised activation h̄ is
  denormalised twice, by the attributes (γ_att, β_att: 3x3 convolutions of r_att^k) and by the
  identity (γ_id, β_id: linear maps of r_id), and mixed by a learned attention mask
  M = σ(conv(h̄)): out = (1 − M)·A + M·I.
- ``MultiScaleDiscriminator``: pix2pixHD's PatchGAN at several scales of the image (book eq. 5.14,
  [63]).

Widths are the book's divided by ``width_divisor`` (the book's are 1024 ... 64); the default 8
keeps the weights under 25 MB and a face under 0.1 s on two CPU cores. Normalisation inside AAD is
instance normalisation without affine parameters, so inference matches training at any batch size.
Networks only: the losses and the training loop are in ``anoncli.train.aei``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.1   # "All LeakyReLUs have α = 0.1" (book Fig. 5.3, Table 8.3)


@dataclass(frozen=True)
class AEIConfig:
    """Everything that fixes the shapes of the networks (saved with the weights)."""

    resolution: int = 128
    id_dim: int = 128
    base_channels: int = 8         # encoder width at resolution/2; doubles per level up to max_channels
    max_channels: int = 64
    generator_channels: tuple[int, ...] = (128, 128, 128, 64, 32, 16)   # AAD ResBlk outputs at 2, 4, ..., res/2; the last block outputs 3
    disc_channels: int = 32
    disc_layers: int = 3
    disc_scales: int = 2
    full_res_channels: int = 0     # channels of a full-resolution input convolution joined to r_att^n (0: FaceShifter's upsampling only)

    @property
    def levels(self) -> int:
        """n, the number of attribute levels: one per octave from 2 x 2 to the input size."""
        return int(round(torch.log2(torch.tensor(float(self.resolution))).item()))

    def encoder_channels(self) -> list[int]:
        """Channels of the encoder maps at resolution/2, /4, ..., 2."""
        return [min(self.base_channels * 2 ** i, self.max_channels) for i in range(self.levels - 1)]

    def attribute_channels(self) -> list[int]:
        """Channels of r_att^1 (2 x 2) ... r_att^n (full size)."""
        enc = self.encoder_channels()[::-1]          # 2x2 first
        chans = [enc[0]]
        for skip in enc[1:]:
            chans.append(2 * skip)                      # ConvT output (as wide as the skip) + skip
        chans.append(chans[-1] + self.full_res_channels)   # finest map upsampled to the input size (+ the full-size input convolution)
        return chans

    @classmethod
    def for_resolution(cls, resolution: int, **overrides) -> "AEIConfig":
        """The default widths fitted to another resolution: one generator width per level, the
        coarsest repeated (larger inputs) or dropped (smaller ones)."""
        base = cls().generator_channels
        levels = max(1, round(math.log2(resolution))) - 1
        chans = (base[:1] * max(0, levels - len(base)) + base)[-levels:] if levels > 0 else ()
        return cls(resolution=resolution, generator_channels=tuple(chans), **overrides)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generator_channels"] = list(self.generator_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AEIConfig":
        d = dict(d)
        d["generator_channels"] = tuple(d["generator_channels"])
        return cls(**d)

    def check(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if len(self.generator_channels) != self.levels - 1:
            raise ValueError(f"generator_channels needs {self.levels - 1} entries at {self.resolution} px")
        if min(self.generator_channels) < 1 or self.base_channels < 1 or self.max_channels < 1 or self.full_res_channels < 0:
            raise ValueError("channel counts must be positive (full_res_channels may be 0)")


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(LEAKY_SLOPE))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(LEAKY_SLOPE))


class AttributeEncoder(nn.Module):
    """g(X): the U-Net whose decoder maps are the multilevel attributes (book eq. 5.8, Table 8.3)."""

    def __init__(self, config: AEIConfig):
        super().__init__()
        enc = config.encoder_channels()
        self.down = nn.ModuleList(_down(cin, cout) for cin, cout in zip([3, *enc[:-1]], enc))
        skips = enc[::-1][1:]                           # encoder maps at 4 x 4 ... res/2
        att = config.attribute_channels()
        self.up = nn.ModuleList(_up(att[i], skips[i]) for i in range(len(skips)))
        self.full = None
        if config.full_res_channels:
            self.full = nn.Sequential(nn.Conv2d(3, config.full_res_channels, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(config.full_res_channels), nn.LeakyReLU(LEAKY_SLOPE))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        h = x
        for layer in self.down:
            h = layer(h)
            feats.append(h)
        maps = [feats[-1]]
        for layer, skip in zip(self.up, feats[-2::-1]):
            maps.append(torch.cat([layer(maps[-1]), skip], dim=1))
        finest = F.interpolate(maps[-1], scale_factor=2, mode="bilinear", align_corners=True)
        maps.append(finest if self.full is None else torch.cat([finest, self.full(x)], dim=1))
        return maps


@dataclass(frozen=True)
class Modulation:
    """γ_att and β_att of one AAD layer for given attribute maps. They do not depend on the
    identity, so the identity fit, which renders the same attributes hundreds of times, computes
    them once (``AEIGenerator.modulations``): two thirds of the generator's convolutions."""

    gamma: torch.Tensor
    beta: torch.Tensor


class AADLayer(nn.Module):
    """out = (1 − M)·(γ_att·h̄ + β_att) + M·(γ_id·h̄ + β_id), M = σ(conv(h̄)) (FaceShifter eq. 1-3)."""

    def __init__(self, channels: int, att_channels: int, id_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.att_gamma = nn.Conv2d(att_channels, channels, 3, 1, 1)
        self.att_beta = nn.Conv2d(att_channels, channels, 3, 1, 1)
        self.id_gamma = nn.Linear(id_dim, channels)
        self.id_beta = nn.Linear(id_dim, channels)
        self.mask = nn.Conv2d(channels, 1, 3, 1, 1)

    def modulation(self, att: torch.Tensor) -> Modulation:
        return Modulation(self.att_gamma(att), self.att_beta(att))

    def forward(self, h: torch.Tensor, att: torch.Tensor | Modulation, identity: torch.Tensor) -> torch.Tensor:
        """``att``: the attribute map, or its ``modulation``."""
        h_bar = self.norm(h)
        m_att = att if isinstance(att, Modulation) else self.modulation(att)
        a = m_att.gamma * h_bar + m_att.beta
        i = self.id_gamma(identity)[:, :, None, None] * h_bar + self.id_beta(identity)[:, :, None, None]
        m = torch.sigmoid(self.mask(h_bar))
        return (1 - m) * a + m * i


class AADResBlock(nn.Module):
    """Two (AAD, ReLU, Conv 3x3) units with a residual; the shortcut gets its own unit when the width changes."""

    def __init__(self, cin: int, cout: int, att_channels: int, id_dim: int):
        super().__init__()
        self.aad1 = AADLayer(cin, att_channels, id_dim)
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.aad2 = AADLayer(cin, att_channels, id_dim)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.shortcut = None
        if cin != cout:
            self.aad_s = AADLayer(cin, att_channels, id_dim)
            self.shortcut = nn.Conv2d(cin, cout, 3, 1, 1)

    def modulations(self, att: torch.Tensor) -> tuple[Modulation, ...]:
        """Each AAD layer's ``Modulation`` (aad1, aad2, and aad_s when the block has a shortcut unit);
        ``att`` may already be them (as ``forward`` takes either)."""
        if isinstance(att, tuple):
            return att
        layers = (self.aad1, self.aad2) if self.shortcut is None else (self.aad1, self.aad2, self.aad_s)
        return tuple(layer.modulation(att) for layer in layers)

    def forward(self, h, att, identity):
        """``att``: the attribute map, or the block's ``modulations``."""
        mods = att if isinstance(att, tuple) else (att, att, att)
        out = self.conv1(F.relu(self.aad1(h, mods[0], identity)))
        out = self.conv2(F.relu(self.aad2(out, mods[1], identity)))
        skip = h if self.shortcut is None else self.shortcut(F.relu(self.aad_s(h, mods[2], identity)))
        return out + skip


class AEIGenerator(nn.Module):
    """h(r_id, r_att) (book eq. 5.9): ConvT of the identity to 2 x 2, then one AAD ResBlk per level."""

    def __init__(self, config: AEIConfig):
        super().__init__()
        chans = list(config.generator_channels)
        att = config.attribute_channels()
        self.stem = nn.ConvTranspose2d(config.id_dim, chans[0], 2, 1, 0)
        ins, outs = [chans[0], *chans], [*chans, 3]
        self.blocks = nn.ModuleList(AADResBlock(cin, cout, a, config.id_dim) for cin, cout, a in zip(ins, outs, att))

    @property
    def identity_inputs(self) -> int:
        """How many places read the identity: the stem and each block."""
        return len(self.blocks) + 1

    def modulations(self, attributes: list[torch.Tensor]) -> list[tuple[Modulation, ...]]:
        """What the attribute maps contribute to every AAD layer; ``forward`` takes it in their place
        (and so does this: modulations pass through unchanged)."""
        return [block.modulations(att) for block, att in zip(self.blocks, attributes)]

    def forward(self, identity: torch.Tensor, attributes: list) -> torch.Tensor:
        """``identity``: N x d unit vectors, or N x identity_inputs x d, one per place (refinement).
        ``attributes``: r_att, the maps coarse to fine, or their ``modulations``."""
        # r_id is a unit vector, so its entries are ~1/√d while the attribute maps' are ~1: scaled by √d
        # the identity starts on the same footing (with unit-norm inputs the identity layers barely
        # moved from their initial weights in 1,000 steps, and the generator ignored the identity).
        identity = identity * math.sqrt(identity.shape[-1])
        per_input = identity if identity.ndim == 3 else identity[:, None].expand(-1, self.identity_inputs, -1)
        h = self.stem(per_input[:, 0, :, None, None])
        for i, (block, att) in enumerate(zip(self.blocks, attributes)):
            h = block(h, att, per_input[:, i + 1])
            if i < len(self.blocks) - 1:
                h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
        return torch.tanh(h)


class AEINet(nn.Module):
    """The attribute encoder and the generator together: X̂ = h(r_id, g(X)) in [-1, 1]."""

    def __init__(self, config: AEIConfig = AEIConfig()):
        super().__init__()
        config.check()
        self.config = config
        self.encoder = AttributeEncoder(config)
        self.generator = AEIGenerator(config)

    def forward(self, identity: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        attributes = self.encoder(target)
        return self.generator(identity, attributes), attributes


class PatchDiscriminator(nn.Module):
    """pix2pixHD's PatchGAN: Conv 4x4/2 + LeakyReLU(0.2) layers, a 1-channel map of logits."""

    def __init__(self, channels: int, layers: int):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(1, layers):
            seq += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.InstanceNorm2d(c * 2), nn.LeakyReLU(0.2)]
            c *= 2
        seq += [nn.Conv2d(c, c, 4, 1, 1), nn.InstanceNorm2d(c), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 4, 1, 1)]
        self.net = nn.Sequential(*seq)

    def forward(self, x):
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """The same PatchGAN on the image and on its 2x, 4x ... average-pooled copies (book eq. 5.14)."""

    def __init__(self, config: AEIConfig = AEIConfig()):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(config.disc_channels, config.disc_layers) for _ in range(config.disc_scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            outs.append(d(x))
        return outs
