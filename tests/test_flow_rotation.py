"""FFEM's latent rotation maths (METHODS.md §7): Haar orthogonal matrices, exact inverse, and why
each face needs its own matrix (a leaked pair gives a shared matrix away by Procrustes)."""
from __future__ import annotations

import numpy as np
import pytest

from anoncli.flow.rotation import (haar_orthogonal, latent_matrix, procrustes_rotation, rotate_latent,
                                   split_latents, unrotate_latent)
from anoncli.keys.derive import key_rng


def test_haar_matrix_is_orthogonal_and_keyed():
    a = haar_orthogonal(key_rng(b"\x01" * 32), 64)
    np.testing.assert_allclose(a.T @ a, np.eye(64), atol=1e-12)
    np.testing.assert_array_equal(a, haar_orthogonal(key_rng(b"\x01" * 32), 64))
    assert np.abs(a - haar_orthogonal(key_rng(b"\x02" * 32), 64)).max() > 0.1


def test_haar_moments():
    """Under Haar measure E[A_ij²] = 1/m and E[tr A] = 0; both determinant signs occur equally."""
    rng = np.random.default_rng(0)
    m, n = 8, 4000
    mats = np.stack([haar_orthogonal(rng, m) for _ in range(n)])
    assert abs((mats ** 2).mean() - 1 / m) < 0.003
    assert abs(np.trace(mats, axis1=1, axis2=2).mean()) < 0.06
    assert abs(np.mean(np.linalg.det(mats) > 0) - 0.5) < 0.04
    # without the sign correction the first entry is biased positive; with it, symmetric
    assert abs(np.mean(mats[:, 0, 0] > 0) - 0.5) < 0.04


def test_latent_matrix_round_trip_and_rotation_inverse():
    rng = np.random.default_rng(1)
    shapes = [(6, 8, 8), (12, 4, 4), (48, 2, 2)]   # 3·16² = 768 numbers of a 16 px face
    latents = [rng.standard_normal(s) for s in shapes]
    z = latent_matrix(latents, 16)
    assert z.shape == (16, 48)
    a = haar_orthogonal(rng, 16)
    enc = rotate_latent(z, a)
    assert np.linalg.norm(enc) == pytest.approx(np.linalg.norm(z))      # the Gaussian ball is kept
    back = split_latents(unrotate_latent(enc, a), shapes)
    for x, y in zip(back, latents):
        np.testing.assert_allclose(x, y, atol=1e-12)
    with pytest.raises(ValueError):
        latent_matrix(latents, 7)


def test_a_leaked_pair_restores_nothing_else_only_with_per_face_matrices():
    rng = np.random.default_rng(2)
    m = 32
    faces = [rng.standard_normal((m, 3 * m)) for _ in range(3)]
    shared = haar_orthogonal(rng, m)
    guess = procrustes_rotation(faces[0], rotate_latent(faces[0], shared))
    np.testing.assert_allclose(guess, shared, atol=1e-9)              # one pair gives a shared A away
    per_face = [haar_orthogonal(key_rng(bytes([i]) * 32), m) for i in range(3)]
    guess = procrustes_rotation(faces[0], rotate_latent(faces[0], per_face[0]))
    for face, a in zip(faces[1:], per_face[1:]):
        recovered = unrotate_latent(rotate_latent(face, a), guess)
        assert np.linalg.norm(recovered - face) / np.linalg.norm(face) > 1.0   # no better than a random guess
