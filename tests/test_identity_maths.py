"""Closed forms of the identity methods' maths: rotation (book eq. 6.16-6.20), level -> angle,
the unit-vector L1 bound of IdentityDP (METHODS.md §5), whitening and the crop -> chip warp."""
from __future__ import annotations

import math

import numpy as np
import pytest

from anoncli.identity.representation import (DLIB_CHIP_POINTS, crop_to_chip_matrix, fit_whitening, identity_codes,
                                             sampling_theta)
from anoncli.identity.rotation import level_to_degrees, reference_vector, rotate_identity, unrotate_identity
from anoncli.faces.align import apply_affine, template_points
from anoncli.methods.identity import unit_vector_l1_bound


def test_levels_follow_the_book_and_skip_90_degrees():
    assert [level_to_degrees(d) for d in range(10)] == [70, 75, 80, 85, 95, 100, 105, 110, 115, 120]
    for bad in (-1, 10, 2.5):
        with pytest.raises(ValueError):
            level_to_degrees(bad)


def _unit(rng, d=128, n=None):
    v = rng.standard_normal((n, d) if n else d)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.mark.parametrize("level", range(10))
def test_rotation_keeps_the_angle_and_inverts_exactly(level):
    rng = np.random.default_rng(level)
    z, ref = _unit(rng, n=50), _unit(rng)
    theta = level_to_degrees(level)
    new = rotate_identity(3.0 * z, ref, theta)          # any length in, normalised first
    a = z @ ref
    # z̄·z_new = cos θ exactly, and ‖z_new‖² = cos²θ + (1 − A²) sin²θ (z_90 not normalised, eq. 6.17)
    np.testing.assert_allclose(np.sum(new * z, axis=1), math.cos(math.radians(theta)), atol=1e-12)
    np.testing.assert_allclose(np.sum(new ** 2, axis=1),
                               math.cos(math.radians(theta)) ** 2 + (1 - a ** 2) * math.sin(math.radians(theta)) ** 2, atol=1e-12)
    np.testing.assert_allclose(unrotate_identity(new, ref, theta), z, atol=1e-10)


def test_a_wrong_reference_does_not_invert():
    rng = np.random.default_rng(1)
    z, ref, wrong = _unit(rng, n=200), _unit(rng), _unit(rng)
    back = unrotate_identity(rotate_identity(z, ref, 120.0), wrong, 120.0)
    assert np.max(np.sum(back * z, axis=1)) < 0.9


def test_reference_vector_is_unit_and_keyed():
    a = reference_vector(np.random.default_rng(5), 128)
    assert abs(np.linalg.norm(a) - 1) < 1e-12
    np.testing.assert_array_equal(a, reference_vector(np.random.default_rng(5), 128))
    assert abs(a @ reference_vector(np.random.default_rng(6), 128)) < 0.5


def test_unit_vector_l1_bound_is_attained_and_never_exceeded():
    d = 128
    assert unit_vector_l1_bound(d) == pytest.approx(2 * math.sqrt(d))
    a = np.ones(d) / math.sqrt(d)
    assert np.abs(a - (-a)).sum() == pytest.approx(unit_vector_l1_bound(d))
    rng = np.random.default_rng(0)
    x, y = _unit(rng, d, 2000), _unit(rng, d, 2000)
    assert np.abs(x - y).sum(1).max() <= unit_vector_l1_bound(d)


def test_whitening_has_the_closed_form_spectrum():
    rng = np.random.default_rng(0)
    scales = np.linspace(0.1, 3.0, 16)
    e = rng.standard_normal((20000, 16)) * scales + 5.0
    mu, w = fit_whitening(e, shrinkage=0.1)
    cov = np.cov(e - mu, rowvar=False)
    vals = np.linalg.eigvalsh(cov)
    lam = 0.1 * vals.mean()
    got = np.sort(np.linalg.eigvalsh(w @ cov @ w.T))
    np.testing.assert_allclose(got, np.sort(vals / (vals + lam)), rtol=1e-4)
    codes = identity_codes(e[:10], mu, w)
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, rtol=1e-6)


def test_crop_to_chip_warp_puts_the_template_on_dlibs_chip_points():
    torch = pytest.importorskip("torch")
    res, margin = 128, 0.2
    m = crop_to_chip_matrix(res, margin)
    assert np.abs(apply_affine(m, template_points(res, margin)) - DLIB_CHIP_POINTS).max() < 6.0
    # a bright dot at each template point of the crop lands at the matrix's image of it in the chip
    crop = torch.zeros(1, 1, res, res)
    pts = template_points(res, margin)
    for x, y in np.rint(pts).astype(int):
        crop[0, 0, y, x] = 1.0
    theta = torch.tensor(sampling_theta(m, res, 150), dtype=torch.float32)[None]
    grid = torch.nn.functional.affine_grid(theta, (1, 1, 150, 150), align_corners=False)
    chip = torch.nn.functional.grid_sample(crop, grid, align_corners=False)[0, 0].numpy()
    expected = apply_affine(m, np.rint(pts))
    for ex, ey in expected:
        yy, xx = np.mgrid[int(ey) - 3:int(ey) + 4, int(ex) - 3:int(ex) + 4]
        patch = chip[yy, xx]
        cy, cx = (patch * yy).sum() / patch.sum(), (patch * xx).sum() / patch.sum()
        assert abs(cx - ex) < 0.5 and abs(cy - ey) < 0.5


@pytest.mark.parametrize("level", [0, 9])
def test_the_tensor_inverse_rotation_is_the_numpy_one(level):
    torch = pytest.importorskip("torch")
    from anoncli.identity.rotation import unrotate_identity_tensor

    rng = np.random.default_rng(7)
    z, ref = _unit(rng, n=20), _unit(rng)
    theta = level_to_degrees(level)
    noisy = rotate_identity(z, ref, theta) + 0.05 * rng.standard_normal((20, z.shape[1]))
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)            # as r_id reads it back: unit, not exact
    got = unrotate_identity_tensor(torch.from_numpy(noisy), torch.from_numpy(ref)[None], theta).numpy()
    np.testing.assert_allclose(got, unrotate_identity(noisy, ref, theta), atol=1e-12)


def test_haar_orthogonal_is_orthogonal_keyed_and_spreads_evenly():
    from anoncli.identity.rotation import haar_orthogonal

    a = haar_orthogonal(np.random.default_rng(1), 16)
    np.testing.assert_allclose(a.T @ a, np.eye(16), atol=1e-12)
    np.testing.assert_array_equal(a, haar_orthogonal(np.random.default_rng(1), 16))
    assert not np.allclose(a, haar_orthogonal(np.random.default_rng(2), 16))
    # Haar: every entry has mean 0 and variance 1/d, and a fixed vector lands uniformly on the sphere
    samples = np.stack([haar_orthogonal(np.random.default_rng(s), 8) for s in range(3000)])
    assert abs(samples[:, 0, 0].mean()) < 0.02 and abs((samples[:, 0, 0] ** 2).mean() - 1 / 8) < 0.01
    assert abs(samples[:, 3, 5].mean()) < 0.02 and abs((samples[:, 3, 5] ** 2).mean() - 1 / 8) < 0.01
