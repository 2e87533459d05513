"""The Glow as a latent backbone: z = every level's ε (the flow's prior divided out), flattened and
concatenated; f_D decodes at temperature 1, so f_E(f_D(z)) = z up to float rounding."""
from __future__ import annotations

from . import BackboneSpec, LatentBackbone


class GlowBackbone(LatentBackbone):
    def __init__(self, spec: BackboneSpec, weights_dir=None, flow=None):
        """``flow``: a ``flow.model.FlowModel`` already built (tests); otherwise the spec's weights."""
        from ..flow.model import FlowModel

        self.flow = flow or FlowModel(weights_dir, name=spec.weights[0])
        self.net = self.flow.net
        self.margin = self.flow.margin
        self.shapes = [tuple(s) for s in self.flow.shapes]
        size = sum(c * h * w for c, h, w in self.shapes)
        if flow is None and (self.flow.resolution, (size,)) != (spec.resolution, spec.latent_shape):
            raise ValueError(f"{spec.weights[0]} is a {self.flow.resolution} px flow with {size} latent values; the "
                             f"backbone {spec.name} is registered for {spec.resolution} px and {spec.latent_shape}")
        self.spec = spec if flow is None else spec_for(spec, self.flow.resolution, size)

    def encode(self, images):
        eps, _ = self.net.encode(images / 2.0)   # the flow's input is x/255 − 0.5 = [-1, 1] / 2
        return flatten_levels(eps)

    def decode(self, latents):
        return self.net.decode(split_levels(latents, self.shapes), 1.0) * 2.0

    def to(self, device, memory_format=None) -> "GlowBackbone":
        self.net.to(device)
        if memory_format is not None:
            self.net.to(memory_format=memory_format)
        return self


def flatten_levels(eps):
    """Per-level N x C x H x W tensors -> N x d, level by level."""
    import torch

    return torch.cat([e.reshape(e.shape[0], -1) for e in eps], dim=1)


def split_levels(latents, shapes):
    """``flatten_levels``' inverse for the levels' (C, H, W) ``shapes``."""
    out, start = [], 0
    for c, h, w in shapes:
        out.append(latents[:, start:start + c * h * w].reshape(-1, c, h, w))
        start += c * h * w
    return out


def spec_for(spec: BackboneSpec, resolution: int, size: int) -> BackboneSpec:
    """``spec`` for a network built in memory (tests) at another resolution and latent size."""
    from dataclasses import replace

    return replace(spec, resolution=resolution, latent_shape=(size,))
