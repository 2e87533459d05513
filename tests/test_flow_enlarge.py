"""Enlarging the flow's fake face (anoncli.flow.enlarge): the crosshatch notch removes the grid's
period-2 patterns and leaves smooth content, unsharp masking is its closed form, and the enlarged
face is sharper than bicubic alone without the grid coming back."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from anoncli.flow.enlarge import enlarge_fake, grid_patterns, remove_crosshatch, unsharp

N = 64


def smooth_face(seed=0) -> np.ndarray:
    """Smooth content (low frequencies only), 0-255 float, N x N x 3."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (N, N, 3)).astype(np.float32)
    return 128 + 25 * cv2.GaussianBlur(noise, (0, 0), 4.0) / cv2.GaussianBlur(noise, (0, 0), 4.0).std()


def crosshatch(amplitude=6.0) -> np.ndarray:
    """The three period-2 patterns with amplitudes that vary slowly over the grid."""
    yy, xx = np.mgrid[0:N, 0:N].astype(np.float32)
    slow = [1 + 0.5 * np.sin(xx / 9), 1 + 0.5 * np.cos(yy / 11), 0.7 + 0.3 * np.sin((xx + yy) / 13)]
    return sum(amplitude * s[..., None] * p for s, p in zip(slow, grid_patterns(N)))


def test_the_patterns_are_the_grids_period_two_signs():
    px, py, pxy = (p[..., 0] for p in grid_patterns(4))
    np.testing.assert_array_equal(px[0], [1, -1, 1, -1])
    np.testing.assert_array_equal(py[:, 0], [1, -1, 1, -1])
    np.testing.assert_array_equal(pxy[1, :2], [-1, 1])


def test_the_notch_removes_a_crosshatch_and_keeps_smooth_content():
    face = smooth_face()
    hatched = face + crosshatch()
    cleaned = remove_crosshatch(hatched, 1.5)
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(hatched - face)[inner].mean() > 5.0
    assert np.abs(cleaned - face)[inner].mean() < 0.6
    assert np.abs(remove_crosshatch(face, 1.5) - face)[inner].mean() < 0.3
    np.testing.assert_array_equal(remove_crosshatch(hatched, 0.0), hatched)
    with pytest.raises(ValueError):
        remove_crosshatch(np.zeros((8, 6, 3), np.float32), 1.0)


def test_unsharp_is_its_closed_form():
    x = smooth_face(1)
    blurred = cv2.GaussianBlur(x, (0, 0), 2.0, borderType=cv2.BORDER_REFLECT)
    np.testing.assert_allclose(unsharp(x, 1.5, 2.0), x + 1.5 * (x - blurred), rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(unsharp(x, 0.0, 2.0), x)
    np.testing.assert_allclose(unsharp(np.full((N, N, 3), 90.0, np.float32), 2.0, 2.0), 90.0, atol=1e-4)


def test_the_enlarged_face_is_sharper_than_bicubic_and_shows_no_grid():
    def detail(img):   # mean squared difference-of-Gaussians response (fine detail)
        return float(np.mean((cv2.GaussianBlur(img, (0, 0), 1.0) - cv2.GaussianBlur(img, (0, 0), 3.0)) ** 2))

    def grid(img, size):   # what is left at the flow grid's period-2 frequency, in the enlarged face
        small = cv2.resize(img, (N, N), interpolation=cv2.INTER_AREA)
        return float(np.abs(remove_crosshatch(small, 1.5) - small).mean())

    face = smooth_face(2) + crosshatch()
    plain = cv2.resize(face, (256, 256), interpolation=cv2.INTER_CUBIC).clip(0, 255)
    sharpened_as_is = enlarge_fake(face, 256, 0.0, 2.0, 1.0)
    ours = enlarge_fake(face, 256, 1.5, 2.0, 1.0)
    assert ours.shape == (256, 256, 3) and ours.min() >= 0 and ours.max() <= 255
    assert detail(ours) > 1.5 * detail(cv2.resize(remove_crosshatch(face, 1.5), (256, 256), interpolation=cv2.INTER_CUBIC))
    assert grid(sharpened_as_is, 256) > 1.5 * grid(plain, 256)
    assert grid(ours, 256) < 0.2 * grid(plain, 256)
