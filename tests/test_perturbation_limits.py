"""FSAP's perturbation limits (anoncli.latent.perturbation) against what each rule promises."""
from __future__ import annotations

import pytest
import torch

from anoncli.latent.perturbation import PerturbationLimits, gaussian_blur, limit_perturbation, soft_bound


def test_soft_bound_is_bounded_and_gentle_near_zero():
    x = torch.linspace(-5, 5, 1001)
    y = soft_bound(x, 0.2)
    assert float(y.abs().max()) <= 0.2 + 1e-6
    assert torch.allclose(soft_bound(torch.tensor([1e-3]), 0.2), torch.tensor([1e-3]), rtol=1e-4)
    assert torch.equal(soft_bound(x, 0.0), x)


def test_gaussian_blur_keeps_constants_and_mean():
    const = torch.full((1, 3, 32, 32), 0.7)
    assert torch.allclose(gaussian_blur(const, 3.0), const, atol=1e-6)
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(noise, 2.0)
    assert float(blurred.std()) < 0.3 * float(noise.std())


def test_a_colour_cast_loses_its_colour_and_keeps_bounded_luminance():
    cast = torch.zeros(1, 3, 64, 64)
    cast[:, 0], cast[:, 1], cast[:, 2] = 0.5, 0.2, -0.1          # broad orange: the wild-photo stain
    out = limit_perturbation(cast, PerturbationLimits(low_sigma=3.0, low_luminance=0.06))
    assert float((out - out.mean(1, keepdim=True)).abs().max()) < 1e-5   # grey: no colour left
    assert float(out.abs().max()) < 0.06
    assert float(out.mean()) > 0.05                                     # the brightening kept, bounded


def test_fine_detail_passes_and_every_pixel_is_bounded():
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = (((xx + yy) % 2) * 2 - 1).float().expand(1, 3, 64, 64) * 0.02
    out = limit_perturbation(checker, PerturbationLimits(low_sigma=3.0, low_luminance=0.06, amplitude=0.25))
    assert torch.allclose(out, checker, atol=2e-3)
    big = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 3
    assert float(limit_perturbation(big, PerturbationLimits(amplitude=0.25)).abs().max()) <= 0.25 + 1e-6


def test_no_limits_is_the_identity_and_negative_limits_are_refused():
    d = torch.randn(1, 3, 16, 16)
    assert torch.equal(limit_perturbation(d, PerturbationLimits()), d)
    assert not PerturbationLimits().active
    with pytest.raises(ValueError, match="amplitude"):
        PerturbationLimits(amplitude=-1)
