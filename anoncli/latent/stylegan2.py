"""StyleGAN2 (FFHQ, config-f, 1024 px) as a latent backbone, with pSp's or e4e's encoder as f_E:
the backbone of the thesis' ch. 4-5 experiments (pSp + StyleGAN2; §4.5.1.3 W+).

f_E(x) = encoder(x) + w̄ (pSp's ``start_from_latent_avg``), N x 18 x 512 in W+; f_D(w) = the
generator's synthesis with its stored noise maps (pSp's ``randomize_noise=False``), area-pooled from
1024 to 256 px (pSp's ``face_pool``), not clamped. The encoder only approximates the inverse, so
``exact_inverse`` is False and DP-Image re-encodes every step.

The checkpoints are the official pSp / e4e files: a torch pickle holding ``state_dict`` (keys
``encoder.*`` and ``decoder.*``), ``latent_avg`` and ``opts``. They are read with
``torch.load(weights_only=True)``, which refuses any pickled object other than tensors and plain
containers, after ``weights.resolve_weights`` has checked their sha256; every key and shape must
match the networks (``anoncli.models.stylegan2``, ``anoncli.models.psp_encoders``).
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, replace

from . import BackboneSpec, LatentBackbone

# FFHQ's crops (NVlabs/ffhq-dataset, recreate_aligned_images) are squares of side 2·max(2·|eye-eye|,
# 1.8·|eye-mouth|) centred at eye_mid + 0.1·(mouth_mid - eye_mid), eyes = mean of dlib's eye
# contours, mouth = outer mouth corners. On the ArcFace template (faces.align) |eye-eye| = 35.24 and
# |eye-mouth| = 40.69 units, so the mouth term rules: side 146.47 units = 112·(1 + 2m), m = 0.154.
# Its centre lies 0.33 units (0.2 % of the side) above the template crop's; the eyes then fall at
# y ≈ 483 and the mouth at y ≈ 768 of 1024, FFHQ's usual layout.
FFHQ_MARGIN = 0.154

ENCODER_TYPES = {"stylegan2-psp": "GradualStyleEncoder", "stylegan2-e4e": "Encoder4Editing"}


@dataclass(frozen=True)
class StyleGAN2Config:
    """The networks' shapes; the defaults are the official FFHQ pSp / e4e checkpoints'."""

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channels: dict[int, int] | None = None
    encoder_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    resolution: int = 256                     # f_E's input and f_D's output (pSp's face_pool)

    @property
    def n_styles(self) -> int:
        return 2 * int(math.log2(self.size)) - 2


OFFICIAL = StyleGAN2Config()


def build_networks(encoder_type: str, config: StyleGAN2Config = OFFICIAL):
    """Encoder and generator of the given shapes, with random weights."""
    from ..models import psp_encoders
    from ..models.stylegan2 import Generator

    if encoder_type not in ("GradualStyleEncoder", "Encoder4Editing"):
        raise ValueError(f"unknown encoder type {encoder_type!r}")
    encoder = getattr(psp_encoders, encoder_type)(n_styles=config.n_styles, style_dim=config.style_dim,
                                                   widths=config.encoder_widths)
    generator = Generator(config.size, config.style_dim, config.n_mlp, config.channel_multiplier, config.channels)
    return encoder, generator


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The pickle at ``path``, read without running any code it might hold (weights_only)."""
    import torch

    try:
        # memory-mapped when in torch's zip format: the networks adopt these tensors (assign=True), no second copy
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:   # torch raises UnpicklingError, RuntimeError, EOFError, ... for unreadable files
        raise ValueError(f"{path}: not readable as a pSp / e4e checkpoint with torch.load(weights_only=True) "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def load_checkpoint(path: str | os.PathLike, encoder_type: str, config: StyleGAN2Config = OFFICIAL):
    """(encoder, generator, latent_avg or None, opts) from an official-layout checkpoint; raises
    ValueError naming the file when a key is missing, unexpected or of another shape."""
    import torch

    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path}: not a pSp / e4e checkpoint (expected a dict with 'state_dict')")
    opts = ckpt.get("opts") or {}
    if not isinstance(opts, dict):
        raise ValueError(f"{path}: 'opts' is a {type(opts).__name__}, expected a dict")
    if opts.get("encoder_type", encoder_type) != encoder_type:
        raise ValueError(f"{path}: holds a {opts['encoder_type']} encoder, expected {encoder_type}")
    with torch.device("meta"):
        encoder, generator = build_networks(encoder_type, config)
    parts: dict[str, dict] = {"encoder": {}, "decoder": {}}
    unexpected = []
    for key, value in ckpt["state_dict"].items():
        prefix, _, rest = key.partition(".")
        if prefix in parts and rest:
            parts[prefix][rest] = value
        else:
            unexpected.append(key)
    missing = []
    for prefix, module in (("encoder", encoder), ("decoder", generator)):
        try:
            result = module.load_state_dict(parts[prefix], strict=False, assign=True)
        except RuntimeError as e:   # shape mismatches
            raise ValueError(f"{path}: not a {encoder_type} + StyleGAN2 {config.size} px checkpoint: {e}") from None
        missing += [f"{prefix}.{k}" for k in result.missing_keys]
        unexpected += [f"{prefix}.{k}" for k in result.unexpected_keys]
    if missing or unexpected:
        def some(keys):
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

        raise ValueError(f"{path}: not a {encoder_type} + StyleGAN2 {config.size} px checkpoint: missing keys "
                         f"[{some(missing)}], unexpected keys [{some(unexpected)}]")
    latent_avg = None
    if opts.get("start_from_latent_avg", True):
        latent_avg = _latent_avg(ckpt.get("latent_avg"), config, path)
    return encoder.eval().requires_grad_(False), generator.eval().requires_grad_(False), latent_avg, opts


def _latent_avg(value, config: StyleGAN2Config, path):
    """w̄ as n_styles x style_dim (the files store it repeated per style; a single w is accepted)."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{path}: 'latent_avg' is missing, but its opts start from the average latent")
    value = value.detach().float().clone()
    if value.shape in ((config.style_dim,), (1, config.style_dim)):
        value = value.reshape(1, -1).expand(config.n_styles, -1).clone()
    if value.shape != (config.n_styles, config.style_dim):
        raise ValueError(f"{path}: 'latent_avg' has shape {tuple(value.shape)}, expected "
                         f"{config.n_styles} x {config.style_dim}")
    return value


class StyleGAN2Backbone(LatentBackbone):
    def __init__(self, spec: BackboneSpec, weights_dir=None, checkpoint=None, config: StyleGAN2Config | None = None):
        """``checkpoint`` and ``config``: a file in the official layout with networks of other shapes
        (tests); otherwise the spec's registry file, verified by its sha256, at the official shapes."""
        if spec.name not in ENCODER_TYPES:
            raise ValueError(f"no StyleGAN2 encoder is known for the backbone {spec.name!r}")
        config = config or OFFICIAL
        if checkpoint is None:
            from ..weights import resolve_weights

            checkpoint = resolve_weights(spec.weights[0], weights_dir).path
        self.encoder, self.generator, self.latent_avg, self.opts = load_checkpoint(
            checkpoint, ENCODER_TYPES[spec.name], config)
        self.config = config
        self.margin = FFHQ_MARGIN
        shape = (config.n_styles, config.style_dim)
        if config == OFFICIAL and (spec.resolution, spec.latent_shape) != (config.resolution, shape):
            raise ValueError(f"the backbone {spec.name} is registered for {spec.resolution} px and {spec.latent_shape}, "
                             f"its networks work at {config.resolution} px and {shape}")
        self.spec = spec if config == OFFICIAL else replace(spec, resolution=config.resolution, latent_shape=shape)

    def encode(self, images):
        r = self.config.resolution
        if images.shape[-2:] != (r, r):
            raise ValueError(f"the {self.spec.name} encoder reads {r} x {r} crops, got {tuple(images.shape[-2:])}")
        codes = self.encoder(images)
        return codes if self.latent_avg is None else codes + self.latent_avg

    def decode(self, latents):
        import torch.nn.functional as F

        images = self.generator.synthesis(latents)
        r = self.config.resolution
        return images if images.shape[-1] == r else F.adaptive_avg_pool2d(images, (r, r))

    def to(self, device, memory_format=None) -> "StyleGAN2Backbone":
        for net in (self.encoder, self.generator):
            net.to(device)
            if memory_format is not None:
                net.to(memory_format=memory_format)
        if self.latent_avg is not None:
            self.latent_avg = self.latent_avg.to(device)
        return self
