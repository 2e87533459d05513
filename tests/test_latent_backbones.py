"""Latent backbones (issue 22's layer): the registry's one door, and the Glow's exact inverse."""
from __future__ import annotations

import pytest
import torch

from anoncli.flow.model import FlowModel
from anoncli.latent import create_backbone, get_backbone_spec, list_backbones
from anoncli.latent.glow import GlowBackbone
from anoncli.models.glow import Glow, GlowConfig


def test_the_registry_lists_the_glow_as_an_exact_backbone():
    assert [s.name for s in list_backbones()] == ["glow", "flow-student", "stylegan2-psp", "stylegan2-e4e"]
    spec = get_backbone_spec("glow")
    assert spec.exact_inverse and spec.resolution == 64 and spec.latent_size == 64 * 64 * 3 and spec.clip > 0
    with pytest.raises(KeyError, match="unknown backbone 'stylegan9'; available: glow, flow-student, stylegan2-psp, stylegan2-e4e"):
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


def test_flow_student_backbone_is_the_students_halves_on_the_glows_latent_layout():
    from anoncli.flow.student import FlowStudentModel
    from anoncli.latent.flow_student import FlowStudentBackbone
    from anoncli.models.flow_student import FlowStudent, StudentConfig

    torch.manual_seed(0)
    net = FlowStudent(StudentConfig(resolution=16, latent_channels=(6, 24), widths=(8, 8)))
    backbone = FlowStudentBackbone(get_backbone_spec("flow-student"), student=FlowStudentModel.from_network(net, 0.3, gamma=2.0))
    assert not backbone.spec.exact_inverse and backbone.spec.latent_shape == (16 * 16 * 3,)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    z = backbone.encode(images)
    levels = net.encoder(images / 2.0)   # the student reads [-0.5, 0.5] and gives γ·ε per level
    assert torch.allclose(z, torch.cat([level.flatten(1) / 2.0 for level in levels], 1))
    assert torch.allclose(backbone.decode(z), net.decoder([level / 2.0 for level in levels]) * 2.0)
    w = z.clone().requires_grad_(True)
    backbone.decode(w).square().mean().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_the_committed_flow_student_loads_and_codes_a_face_near_the_glow():
    try:
        student, glow = create_backbone("flow-student"), create_backbone("glow")
    except Exception as e:   # weights missing on this machine
        pytest.skip(f"the flow's weights are not here: {e}")
    torch.manual_seed(0)
    z = torch.randn(4, glow.spec.latent_size) * 0.5
    faces = glow.decode(z).clamp(-1, 1)   # faces the Glow draws, whose ε are known exactly
    relative = ((student.encode(faces) - z) ** 2).sum() / (z ** 2).sum()
    assert relative < 0.8, relative   # model card: 0.57 on held-out real faces
