"""Glow (seed 001, METHODS.md §7): exact inverse, the log-determinant against a brute-force
Jacobian, and the closed forms of its layers."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from anoncli.models.glow import (ActNorm, Glow, GlowConfig, InvConv2dLU, gaussian_log_p, squeeze2d,  # noqa: E402
                                 unsqueeze2d)

TINY = GlowConfig(resolution=8, levels=2, steps=2, hidden=8, n_bits=5)


def _perturbed(model, scale=0.05, seed=0):
    """Every parameter moved off its identity initialisation, so the test sees a general flow."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _model():
    torch.manual_seed(0)
    model = Glow(TINY).double()
    x = torch.rand(6, 3, 8, 8, dtype=torch.float64) - 0.5
    model.encode(x)                     # actnorm's data-dependent initialisation
    return _perturbed(model), x


def test_squeeze_is_a_permutation():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    s = squeeze2d(x)
    assert s.shape == (2, 12, 2, 3)
    assert torch.equal(unsqueeze2d(s), x)
    assert torch.equal(torch.sort(s.flatten()).values, torch.sort(x.flatten()).values)


def test_actnorm_initialises_to_zero_mean_unit_variance():
    layer = ActNorm(4)
    x = torch.randn(64, 4, 5, 5) * torch.tensor([1.0, 3.0, 0.5, 2.0])[None, :, None, None] + 7
    y, logdet = layer(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(y.std((0, 2, 3)), torch.ones(4), atol=1e-3)
    assert float(logdet.detach()) == pytest.approx(25 * float(layer.log_scale.detach().sum()))
    assert torch.allclose(layer.reverse(y), x, atol=1e-4)


def test_invertible_1x1_conv_logdet_is_hw_times_log_det_w():
    layer = _perturbed(InvConv2dLU(6, torch.Generator().manual_seed(1)).double())
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    y, logdet = layer(x)
    assert float(logdet.detach()) == pytest.approx(12 * float(torch.linalg.slogdet(layer.weight().detach())[1]), rel=1e-9)
    assert torch.allclose(layer.reverse(y), x, atol=1e-10)


def test_encode_then_decode_returns_the_input():
    model, x = _model()
    eps, _ = model.encode(x)
    assert [e.shape[1:] for e in eps] == [torch.Size(s) for s in model.latent_shapes()]
    assert sum(e[0].numel() for e in eps) == x[0].numel()
    assert torch.max(torch.abs(model.decode(eps) - x)) < 1e-10
    model32 = model.float()
    eps32, _ = model32.encode(x.float())
    assert torch.max(torch.abs(model32.decode(eps32) - x.float())) < 1e-4


def test_log_likelihood_is_the_change_of_variables():
    model, x = _model()
    one = x[:1]

    def flat_eps(v):
        eps, _ = model.encode(v.view(1, 3, 8, 8))
        return torch.cat([e.flatten() for e in eps])

    jac = torch.autograd.functional.jacobian(flat_eps, one.flatten())
    eps = flat_eps(one.flatten())
    expected = float(gaussian_log_p(eps, torch.zeros_like(eps), torch.zeros_like(eps)).sum() + torch.linalg.slogdet(jac)[1])
    _, log_p = model.encode(one)
    assert float(log_p[0]) == pytest.approx(expected, rel=1e-8)


def test_bits_per_dim_and_temperature():
    model, x = _model()
    bpd = model.bits_per_dim(x)
    _, log_p = model.encode(x)
    dims = 3 * 8 * 8
    assert torch.allclose(bpd, (-log_p + dims * math.log(32)) / (dims * math.log(2)))
    eps, _ = model.encode(x)
    cold = model.decode(eps, temperature=0.0)   # every level at its prior mean
    assert torch.allclose(cold, model.decode([torch.zeros_like(e) for e in eps]))
    pre = Glow(TINY).preprocess(torch.rand(2, 3, 8, 8), dequantize=False)
    assert torch.all((pre + 0.5) * 32 == torch.round((pre + 0.5) * 32)) and pre.min() >= -0.5 and pre.max() < 0.5


def test_default_config_matches_ffem():
    c = GlowConfig()
    assert (c.resolution, c.levels, c.steps) == (128, 5, 32)
    with pytest.raises(ValueError):
        GlowConfig(resolution=100, levels=5).check()


def test_frozen_flow_computes_the_same_codes_and_faces():
    model, x = _model()
    eps, log_p = model.encode(x)
    faces = model.decode(eps)
    model.freeze()
    assert not any(p.requires_grad for p in model.parameters())
    frozen_eps, frozen_log_p = model.encode(x)
    for a, b in zip(eps, frozen_eps):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.allclose(log_p, frozen_log_p, atol=1e-8)
    assert torch.allclose(model.decode(frozen_eps), faces, atol=1e-10)
    assert torch.allclose(faces, x, atol=1e-8)
    assert "frozen_inverse" not in "".join(model.state_dict())   # the weights file keeps its layout


def test_coupling_precision_computes_only_the_coupling_networks_in_bfloat16():
    """Under ``coupling_precision(bfloat16)`` the likelihood stays close to float32's (the log-determinants
    and transforms are float32), differs from it (the networks did run in bfloat16), and the setting is
    undone on leaving the block."""
    model, x = _model()
    model, x = model.float(), x.float()
    exact = model.encode(x)[1]
    with model.coupling_precision(torch.bfloat16):
        eps, approximate = model.encode(x)
        assert all(e.dtype == torch.float32 for e in eps)
        round_trip = model.decode(eps)
    assert not torch.equal(approximate, exact)
    torch.testing.assert_close(approximate, exact, rtol=0.02, atol=0.02)
    assert torch.max(torch.abs(round_trip - x)) < 1e-4   # forward and reverse see the same networks
    torch.testing.assert_close(model.encode(x)[1], exact, rtol=0, atol=0)
