"""Latent backbones (issue 22's layer): the registry's one door, and the Glow's exact inverse."""
from __future__ import annotations

import pytest
import torch

from anoncli.flow.model import FlowModel
from anoncli.latent import create_backbone, get_backbone_spec, list_backbones
from anoncli.latent.glow import GlowBackbone
from anoncli.models.glow import Glow, GlowConfig


def test_the_registry_lists_the_glow_as_an_exact_backbone():
    assert [s.name for s in list_backbones()] == ["glow", "stylegan2-psp", "stylegan2-e4e"]
    spec = get_backbone_spec("glow")
    assert spec.exact_inverse and spec.resolution == 64 and spec.latent_size == 64 * 64 * 3 and spec.clip > 0
    with pytest.raises(KeyError, match="unknown backbone 'stylegan9'; available: glow, stylegan2-psp, stylegan2-e4e"):
        get_backbone_spec("stylegan9")


def test_glow_backbone_round_trip_is_exact_and_differentiable():
    torch.manual_seed(0)
    net = Glow(GlowConfig(resolution=16, levels=2, steps=2, hidden=8))
    backbone = GlowBackbone(get_backbone_spec("glow"), flow=FlowModel.from_network(net, 0.3))
    assert backbone.spec.latent_shape == (16 * 16 * 3,) and backbone.spec.resolution == 16
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    z = backbone.encode(images)
    assert z.shape == (3, 16 * 16 * 3)
    assert torch.allclose(backbone.decode(z), images, atol=1e-4)
    assert torch.allclose(backbone.encode(backbone.decode(z)), z, atol=1e-3)
    w = z.clone().requires_grad_(True)
    backbone.decode(w).square().mean().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_the_committed_glow_loads_through_the_registry():
    try:
        backbone = create_backbone("glow")
    except Exception as e:   # weights missing on this machine
        pytest.skip(f"the Glow's weights are not here: {e}")
    faces = torch.zeros(1, 3, 64, 64)
    z = backbone.encode(faces)
    assert z.shape == (1, backbone.spec.latent_size)
    assert torch.allclose(backbone.decode(z), faces, atol=1e-3)
