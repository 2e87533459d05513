"""The Diffusion Autoencoder of Preechakul et al., "Diffusion Autoencoders: Toward a Meaningful and
Decodable Representation" (CVPR 2022), in the parameter layout of the official code
(phizaz/diffae: ``BeatGANsAutoencModel`` of model/unet_autoenc.py, model/unet.py, model/blocks.py).

Two halves (paper §3):
- the semantic encoder z_sem = Enc(x_0) (``encoder.*``, the official ``BeatGANsEncoderModel``): the
  first half of a UNet without time conditioning, then GroupNorm, SiLU, global average pooling and
  a 1 x 1 convolution to a non-spatial code (``enc_out_channels``, 512);
- the conditional DDIM decoder ε_θ(x_t, t, z_sem) (``time_embed.*``, ``input_blocks.*``,
  ``middle_block.*``, ``output_blocks.*``, ``out.*``): a BeatGANs / ADM UNet whose ResBlocks apply
  the paper's AdaGN, z_s (t_s GroupNorm(h) + t_b), in the code's form (GroupNorm(h) (1 + t_s) + t_b)
  (1 + z_s), where (t_s, t_b) is an affine map of the timestep embedding and z_s one of z_sem.

Only the network: the forward diffusion, DDIM sampling and training loss live elsewhere. A
PyTorch Lightning checkpoint of the official code (``ffhq256_autoenc/last.ckpt``) holds this
network twice, as ``model.*`` and ``ema_model.*``, next to a ``x_T`` buffer, optimizer states and
hyper-parameters; ``load_official`` reads one half, by default the EMA weights the authors sample
with.
"""
from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DiffAEConfig:
    """Every field of the official ``BeatGANsAutoencConfig`` that shapes the network or its forward.

    Fixed by the official autoencoder and so not fields: 2-D convolutions, two conditions per
    ResBlock (``resnet_two_cond=True``, time then z_sem), the time embedding of width
    ``model_channels`` (``time_embed_channels`` is unused by the autoencoder), no class labels.
    The defaults are the official dataclass defaults; the presets below are the trained models'.
    Every width above 32, skip concatenations included, must be a multiple of 32: the official
    normalization is GroupNorm(min(32, channels)).
    """

    image_size: int = 64
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_res_blocks: int = 2                       # per level on the input side; the output side has one more
    num_input_res_blocks: int | None = None       # None: num_res_blocks
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 1
    num_head_channels: int = -1                   # > 0: heads = channels // num_head_channels
    use_new_attention_order: bool = False
    resblock_updown: bool = True                  # down/upsample with a ResBlock, else Downsample/Upsample
    conv_resample: bool = True                    # Downsample/Upsample with a convolution (resblock_updown False)
    embed_channels: int = 512                     # width of the time embedding fed to every ResBlock
    resnet_cond_channels: int | None = None       # width of z_sem as the ResBlocks read it; None: embed_channels
    enc_out_channels: int = 512                   # width of z_sem
    enc_channel_mult: tuple[int, ...] | None = None       # None: channel_mult
    enc_attn_resolutions: tuple[int, ...] | None = None   # None: attention_resolutions
    enc_num_res_block: int = 2
    enc_pool: str = "adaptivenonzero"             # the only pooling the official encoder implements
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):   # lists from JSON become tuples, so the config stays hashable
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        if self.enc_pool != "adaptivenonzero":
            raise ValueError(f"enc_pool {self.enc_pool!r}: the official encoder implements only 'adaptivenonzero'")
        if self.cond_channels != self.enc_out_channels:
            raise ValueError(f"the ResBlocks read a {self.cond_channels}-wide code (resnet_cond_channels or "
                             f"embed_channels) but the encoder writes {self.enc_out_channels}")
        for name, mult in (("channel_mult", self.channel_mult), ("enc_channel_mult", self.encoder_channel_mult)):
            if self.image_size % 2 ** (len(mult) - 1):
                raise ValueError(f"image_size {self.image_size} is not divisible by 2^{len(mult) - 1} ({name})")

    @property
    def cond_channels(self) -> int:
        return self.resnet_cond_channels or self.embed_channels

    @property
    def encoder_channel_mult(self) -> tuple[int, ...]:
        return self.enc_channel_mult or self.channel_mult

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "DiffAEConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown DiffAEConfig fields: {', '.join(unknown)}")
        return cls(**d)


# templates.py ffhq256_autoenc(): autoenc_base() -> ffhq128_autoenc_base() -> 256 px, net_ch 128, with
# TrainConfig's defaults for everything the templates leave (dropout 0.1, 2 res blocks, style_ch 512).
FFHQ256_AUTOENC = DiffAEConfig(
    image_size=256, model_channels=128, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
    attention_resolutions=(16,), num_heads=1, embed_channels=512, enc_out_channels=512,
    enc_channel_mult=(1, 1, 2, 2, 4, 4, 4), enc_num_res_block=2, dropout=0.1,
)

# The official 64 px design (ffhq64_autoenc: the UNet down to 8 px, the encoder one level deeper to
# 4 px, attention at 16 px, z_sem 512) made small enough to train on a CPU: base width 32 and one
# block per level in both halves (officially 64 and 2). Measured, one training step (UNet + encoder,
# forward + backward, batch 16, one thread): width 64 with two blocks (16.5 M parameters) 11 s; this
# one (3.4 M) 1.4-1.6 s; with the official two encoder blocks per level 1.6-1.8 s.
ANONCLI_64 = DiffAEConfig(
    image_size=64, model_channels=32, channel_mult=(1, 1, 2, 2), num_res_blocks=1,
    attention_resolutions=(16,), num_heads=1, embed_channels=512, enc_out_channels=512,
    enc_channel_mult=(1, 1, 2, 2, 2), enc_num_res_block=1, dropout=0.1,
)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, N -> N x dim (ADM's order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (ADM's, kept for half-precision inputs)."""

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    if channels > 32 and channels % 32:
        raise ValueError(f"a {channels}-channel feature map: GroupNorm(min(32, channels)) needs widths up to 32 or "
                         "multiples of 32, skip concatenations included")
    return GroupNorm32(min(32, channels), channels)


def _zeroed(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class ResBlock(nn.Module):
    """The official ResBlock: in_layers (norm, SiLU, conv), then, only when conditioned, out_layers
    (norm, AdaGN, SiLU, dropout, zero-initialised conv); a 1 x 1 skip when the width changes.

    The encoder's blocks are unconditioned and so, as in the official code, have no out_layers.
    ``has_lateral``: the input is the concatenation of the trunk and a skip connection.
    """

    def __init__(self, channels: int, out_channels: int | None = None, *, emb_channels: int | None = None,
                 cond_channels: int | None = None, dropout: float = 0.0, up: bool = False, down: bool = False,
                 has_lateral: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.out_channels = out_channels
        self.has_lateral = has_lateral
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.conditioned = emb_channels is not None
        if self.conditioned:
            self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
            self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cond_channels or emb_channels, out_channels))
            self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                            _zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x, emb=None, cond=None, lateral=None):
        if self.has_lateral:
            x = torch.cat([x, lateral], dim=1)
        if self.updown:
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        if self.conditioned:
            scale, shift = self.emb_layers(emb).type(h.dtype)[..., None, None].chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = h * (1 + self.cond_emb_layers(cond).type(h.dtype)[..., None, None])
            h = self.out_layers[1:](h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the spatial positions (ADM's, with the legacy or the new head order)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, new_order: bool = False):
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels are not divisible by num_head_channels {num_head_channels}")
            num_heads = channels // num_head_channels
        self.num_heads = num_heads
        self.new_order = new_order
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length, ch = qkv.shape[-1], c // self.num_heads
        if self.new_order:   # split q, k, v before the heads
            q, k, v = (a.reshape(b * self.num_heads, ch, length) for a in qkv.chunk(3, dim=1))
        else:                # split the heads before q, k, v
            q, k, v = qkv.reshape(b * self.num_heads, 3 * ch, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1).type(q.dtype)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
    """Passes the embeddings and the skip connection to the ResBlocks it holds."""

    def forward(self, x, emb=None, cond=None, lateral=None):
        for layer in self:
            x = layer(x, emb, cond, lateral) if isinstance(layer, ResBlock) else layer(x)
        return x


class TimeStyleEmbed(nn.Module):
    """The official ``TimeStyleSeperateEmbed``: an MLP on the sinusoidal timestep embedding, and
    z_sem passed through unchanged (``style``, an identity)."""

    def __init__(self, time_channels: int, out_channels: int):
        super().__init__()
        self.time_embed = nn.Sequential(nn.Linear(time_channels, out_channels), nn.SiLU(),
                                        nn.Linear(out_channels, out_channels))
        self.style = nn.Identity()


def _attention(config: DiffAEConfig, channels: int) -> AttentionBlock:
    return AttentionBlock(channels, config.num_heads, config.num_head_channels, config.use_new_attention_order)


class SemanticEncoder(nn.Module):
    """The official ``BeatGANsEncoderModel`` without time condition: image in [-1, 1] -> N x enc_out_channels."""

    def __init__(self, config: DiffAEConfig):
        super().__init__()
        mc, mult = config.model_channels, config.encoder_channel_mult
        attn_at = config.enc_attn_resolutions or config.attention_resolutions
        ch = mult[0] * mc
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        resolution = config.image_size
        for level, m in enumerate(mult):
            for _ in range(config.enc_num_res_block):
                layers: list[nn.Module] = [ResBlock(ch, m * mc, dropout=config.dropout)]
                ch = m * mc
                if resolution in attn_at:
                    layers.append(_attention(config, ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
            if level != len(mult) - 1:
                resolution //= 2
                self.input_blocks.append(TimestepEmbedSequential(
                    ResBlock(ch, dropout=config.dropout, down=True) if config.resblock_updown
                    else Downsample(ch, config.conv_resample)))
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, dropout=config.dropout), _attention(config, ch),
                                                    ResBlock(ch, dropout=config.dropout))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                                 nn.Conv2d(ch, config.enc_out_channels, 1), nn.Flatten())

    def forward(self, x):
        for block in self.input_blocks:
            x = block(x)
        return self.out(self.middle_block(x))


class DiffAE(nn.Module):
    """Semantic encoder and conditional noise-prediction UNet of a Diffusion Autoencoder.

    ``encode(x)`` gives z_sem for images x in [-1, 1]; ``forward(x_t, t, cond)`` predicts the noise ε
    of x_t at integer or fractional timesteps t in [0, T) (unscaled, as the official
    ``rescale_timesteps=False``) given z_sem = ``cond``.
    """

    def __init__(self, config: DiffAEConfig):
        super().__init__()
        self.config = config
        mc, mult, emb = config.model_channels, config.channel_mult, config.embed_channels

        def resblock(channels, out=None, **kw):
            return ResBlock(channels, out, emb_channels=emb, cond_channels=config.cond_channels,
                            dropout=config.dropout, **kw)

        def resample(channels, up):
            if config.resblock_updown:
                return resblock(channels, up=up, down=not up)
            return Upsample(channels, config.conv_resample) if up else Downsample(channels, config.conv_resample)

        self.time_embed = TimeStyleEmbed(mc, emb)
        ch = input_ch = mult[0] * mc
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        # the skip connections' widths, one stack per level; the output side pops them in reverse
        skips: list[list[int]] = [[ch]] + [[] for _ in mult[1:]]
        self.input_counts = [1] + [0] * (len(mult) - 1)
        resolution = config.image_size
        for level, m in enumerate(mult):
            for _ in range(config.num_input_res_blocks or config.num_res_blocks):
                layers: list[nn.Module] = [resblock(ch, m * mc)]
                ch = m * mc
                if resolution in config.attention_resolutions:
                    layers.append(_attention(config, ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips[level].append(ch)
                self.input_counts[level] += 1
            if level != len(mult) - 1:
                resolution //= 2
                self.input_blocks.append(TimestepEmbedSequential(resample(ch, up=False)))
                skips[level + 1].append(ch)
                self.input_counts[level + 1] += 1
        self.middle_block = TimestepEmbedSequential(resblock(ch), _attention(config, ch), resblock(ch))
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(config.num_res_blocks + 1):
                # when the input side has fewer blocks, the last output blocks of a level get no skip
                skip = skips[level].pop() if skips[level] else 0
                layers = [resblock(ch + skip, m * mc, has_lateral=skip > 0)]
                ch = m * mc
                if resolution in config.attention_resolutions:
                    layers.append(_attention(config, ch))
                if level and i == config.num_res_blocks:
                    resolution *= 2
                    layers.append(resample(ch, up=True))
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 _zeroed(nn.Conv2d(input_ch, config.out_channels, 3, padding=1)))
        self.encoder = SemanticEncoder(config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_sem, N x enc_out_channels, of images N x C x H x W in [-1, 1]."""
        return self.encoder(x)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ε predicted for x_t (N x C x H x W) at timesteps t (N, or a scalar) given z_sem (N x enc_out_channels)."""
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        emb = self.time_embed.time_embed(timestep_embedding(t, self.config.model_channels))
        cond = self.time_embed.style(cond)
        skips: list[list[torch.Tensor]] = [[] for _ in self.config.channel_mult]
        h, k = x_t, 0
        for level, count in enumerate(self.input_counts):
            for _ in range(count):
                h = self.input_blocks[k](h, emb, cond)
                skips[level].append(h)
                k += 1
        h = self.middle_block(h, emb, cond)
        k = 0
        for level in reversed(range(len(self.config.channel_mult))):
            for _ in range(self.config.num_res_blocks + 1):
                h = self.output_blocks[k](h, emb, cond, skips[level].pop() if skips[level] else None)
                k += 1
        return self.out(h)


class _Opaque(dict):
    """Inert stand-in for a pickled object whose class this reader does not import (a Lightning
    callback class used as a dict key, a hyper-parameter object): it keeps the pickled state as
    data and runs none of the original code."""

    __hash__ = object.__hash__
    __eq__ = object.__eq__

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _refusal(e: Exception) -> str:
    """The reason inside torch's long weights_only message."""
    text = str(e)
    _, found, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest if found else text).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))] or lines
    return lines[0].split(" Please use")[0] if lines else type(e).__name__


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The pickle at ``path`` read with ``torch.load(weights_only=True)``, which never runs code
    from the file. Lightning checkpoints also pickle Python classes (PL 1.4 keys its callback
    states by class); weights_only refuses those, so the file is read a second time with each
    named class replaced by an inert ``_Opaque`` placeholder. Raises ValueError, with a way out,
    when that also fails."""
    import pickle

    kw = dict(map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    try:
        return torch.load(path, **kw)
    except pickle.UnpicklingError as e:
        refused = _refusal(e)
    except Exception as e:   # truncated, or not a torch file at all
        raise ValueError(f"{path}: not readable as a torch checkpoint ({type(e).__name__}: {e})") from None
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        names = []
    if not names:
        raise ValueError(f"{path}: not readable as a torch checkpoint ({refused})")
    stubs = [(type(n.rpartition(".")[2], (_Opaque,), {"__qualname__": f"_Opaque[{n}]"}), n) for n in names]
    try:
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, **kw)
    except Exception as e:
        raise ValueError(
            f"{path}: torch.load(weights_only=True) refused it ({refused}), and reading its Python objects "
            f"({', '.join(names)}) as inert placeholders failed too ({type(e).__name__}: {_refusal(e)}). If you "
            "trust the file (its sha256 is the registry's), keep only its tensors: python -c \"import torch; "
            f"c = torch.load({os.fspath(path)!r}, map_location='cpu', weights_only=False); "
            "torch.save({'state_dict': c['state_dict']}, 'diffae_state.pt')\"") from None


def official_state_dict(checkpoint: Mapping, *, which: str = "ema_model") -> dict[str, torch.Tensor]:
    """The ``which`` network ("ema_model" or "model") of an official Lightning checkpoint, prefix
    stripped; the rest of its state dict (``x_T``, the other network) is dropped. Accepts the
    whole checkpoint, its ``state_dict``, or an unprefixed DiffAE state dict (returned as is)."""
    if which not in ("ema_model", "model"):
        raise ValueError(f"which must be 'ema_model' or 'model', not {which!r}")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError(f"'state_dict' is a {type(state).__name__}, expected a dict of tensors")
    prefix = which + "."
    picked = {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    if picked:
        return picked
    if any(isinstance(k, str) and k.startswith(("model.", "ema_model.")) for k in state):
        raise ValueError(f"the checkpoint holds no {prefix}* keys (its networks: "
                         f"{sorted({k.partition('.')[0] for k in state if isinstance(k, str) and '.' in k})})")
    return dict(state)


def _some(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_official(source: str | os.PathLike | Mapping, config: DiffAEConfig = FFHQ256_AUTOENC, *,
                  which: str = "ema_model") -> DiffAE:
    """A ``DiffAE(config)`` holding the ``which`` weights of an official-layout checkpoint (a path, or
    an already loaded checkpoint / state dict), in eval mode. Every key and shape must match; a
    ValueError names the missing, unexpected and mis-shaped keys. Built on the meta device and
    filled with the loaded tensors themselves (memory-mapped for files; a given dict's tensors are
    adopted, not copied), so no weights are allocated twice."""
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "checkpoint"
    checkpoint = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{name}: expected a checkpoint dict, found a {type(checkpoint).__name__}")
    try:
        state = official_state_dict(checkpoint, which=which)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    with torch.device("meta"):
        model = DiffAE(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(getattr(v, 'shape', ()))} != {tuple(expected[k].shape)}" for k, v in state.items()
                 if k in expected and (not isinstance(v, torch.Tensor) or v.shape != expected[k].shape)]
    if missing or unexpected or misshaped:
        raise ValueError(f"{name}: {which} is not a DiffAE of this config: missing keys [{_some(missing)}], "
                         f"unexpected keys [{_some(unexpected)}], mis-shaped keys (file != model) [{_some(misshaped)}]")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
