"""Latent backbones: an encoder f_E (image -> latent) and a decoder f_D (latent -> image) that the
latent-space methods move a face's code in (thesis ch. 4 DP-Image, Algorithm 6; ch. 5 FSAP,
Algorithm 7; METHODS.md §8-9). One door, as for methods and weights: ``list_backbones``,
``get_backbone_spec``, ``create_backbone``.

Every backbone works on N x 3 x R x R float tensors in [-1, 1] at its ``resolution`` (the
``models.tensors`` convention) and on N x ``latent_shape`` latents, differentiably (FSAP follows
gradients through f_D). ``exact_inverse`` says whether f_E(f_D(z)) = z holds by construction (an
invertible flow) rather than only approximately (an encoder trained to invert a generator): what
DP-Image's guarantee may rely on. ``clip`` is the latent range that holds more than 99 % of the
values of real faces, the clipping bound DP-Image's sensitivity is computed from (thesis §4.5.2.1).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    summary: str
    citation: str
    resolution: int
    latent_shape: tuple[int, ...]
    clip: float
    exact_inverse: bool
    weights: tuple[str, ...]     # registry names (``anoncli weights``) the backbone loads
    module: str                  # where its class lives, imported only when it is created
    cls: str
    squeeze_grid: bool = False   # its decodes carry the 2-pixel crosshatch of Glow's squeeze (``flow.enlarge``)

    @property
    def latent_size(self) -> int:
        """d, the number of latent coordinates (DP-Image's Δf = 2·clip·√d)."""
        size = 1
        for s in self.latent_shape:
            size *= int(s)
        return size


class LatentBackbone:
    """f_E and f_D of one backbone, frozen, in eval mode. ``margin``: the alignment of the crops it
    reads (``faces.align.template_points``), from its weights."""

    spec: BackboneSpec
    margin: float

    def encode(self, images):
        """N x 3 x R x R in [-1, 1] -> N x latent_shape."""
        raise NotImplementedError

    def decode(self, latents):
        """N x latent_shape -> N x 3 x R x R in [-1, 1] (not clamped: the caller decides)."""
        raise NotImplementedError

    def to(self, device, memory_format=None) -> "LatentBackbone":
        """Its networks on ``device``; with ``memory_format`` (``torch.channels_last``) their 4-D weights
        in that layout too (faster convolutions on the CPU for a search that runs them many times)."""
        raise NotImplementedError


_BACKBONES: dict[str, BackboneSpec] = {}


def _register(spec: BackboneSpec) -> None:
    _BACKBONES[spec.name] = spec


_register(BackboneSpec(
    name="glow",
    summary="the project's Glow at 3,273 steps (weights/glow_celeba_utk_64_3273; flowrot's flow has since trained on, and "
            "on it FSAP needs more iterations: README, FSAP): every level's ε with the learned prior divided out, "
            "concatenated; an invertible flow, so f_E(f_D(z)) = z to float precision; offline, the default",
    citation="Kingma & Dhariwal, Glow, NeurIPS 2018; trained here (`anoncli train glow`, model card beside the weights)",
    resolution=64, latent_shape=(64 * 64 * 3,), clip=3.0, exact_inverse=True,
    weights=("glow-celeba-utk-64-3273",), module="anoncli.latent.glow", cls="GlowBackbone", squeeze_grid=True,
))
_register(BackboneSpec(
    name="flow-student",
    summary="flowrot's distilled student of that Glow (weights/flow_student_celeba_utk_64): a CNN encoder and decoder on "
            "the same ε, about nine times cheaper than the Glow but lossy, so f_E(f_D(z)) ≈ z only; offline",
    citation="seed 000 (MCKD distillation; METHODS.md §7); trained here (`anoncli train student`, model card beside the weights)",
    resolution=64, latent_shape=(64 * 64 * 3,), clip=3.0, exact_inverse=False,
    weights=("flow-student-celeba-utk-64",), module="anoncli.latent.flow_student", cls="FlowStudentBackbone",
    squeeze_grid=True,
))
_register(BackboneSpec(
    name="stylegan2-psp",
    summary="StyleGAN2 FFHQ 1024 px (config-f) with pSp's encoder: W+ codes, 18 x 512, decoded and pooled to 256 px; "
            "an encoder trained to invert the generator, so f_E(f_D(w)) ≈ w only; the thesis' backbone (needs the "
            "1.2 GB pSp checkpoint: `anoncli weights fetch psp-ffhq-encode`)",
    citation="Karras et al., StyleGAN2, CVPR 2020; Richardson et al., pSp (Encoding in Style), CVPR 2021; "
             "Xue, PhD thesis (seed 003), ch. 4-5 (pSp + StyleGAN2, W+ within ±20, §4.5.1.3)",
    resolution=256, latent_shape=(18, 512), clip=20.0, exact_inverse=False,
    weights=("psp-ffhq-encode",), module="anoncli.latent.stylegan2", cls="StyleGAN2Backbone",
))
_register(BackboneSpec(
    name="stylegan2-e4e",
    summary="StyleGAN2 FFHQ 1024 px (config-f) with e4e's encoder: one w plus per-style deltas, codes that stay near "
            "W (easier to edit, slightly worse reconstruction than pSp); 18 x 512, pooled to 256 px; approximate "
            "inverse (needs the 1.2 GB e4e checkpoint: `anoncli weights fetch e4e-ffhq-encode`)",
    citation="Karras et al., StyleGAN2, CVPR 2020; Tov et al., Designing an Encoder for StyleGAN Image Manipulation "
             "(e4e), SIGGRAPH 2021; Xue, PhD thesis (seed 003), ch. 4-5",
    resolution=256, latent_shape=(18, 512), clip=20.0, exact_inverse=False,
    weights=("e4e-ffhq-encode",), module="anoncli.latent.stylegan2", cls="StyleGAN2Backbone",
))


def list_backbones() -> list[BackboneSpec]:
    return list(_BACKBONES.values())


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(_BACKBONES)}") from None


def create_backbone(name: str, weights_dir=None, device: str = "cpu") -> LatentBackbone:
    """The backbone with its weights loaded (``weights.WeightsMissing`` names the command that gets them)."""
    spec = get_backbone_spec(name)
    return getattr(importlib.import_module(spec.module), spec.cls)(spec, weights_dir).to(device)
