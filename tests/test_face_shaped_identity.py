"""The maths behind IdentityDP's face-shaped noisy identity: real faces' covariance in the whitened
space from the whitening alone (closed form), its root, and the shaping (the method itself:
tests/test_aei.py, which has a trained generator)."""
from __future__ import annotations

import numpy as np
import pytest

from anoncli.identity.representation import face_code_covariance, fit_whitening, shaped_like_faces, symmetric_root


def _descriptors(n=400, d=16, used=10, seed=0):
    """Embeddings that vary in ``used`` of ``d`` directions only (as dlib's barely use 50 of 128)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :used]
    return rng.standard_normal((n, used)) * np.linspace(3, 0.5, used) @ basis.T + rng.standard_normal(d)


@pytest.mark.parametrize("shrinkage", [0.1, 0.5])
def test_the_covariance_of_whitened_faces_follows_from_the_whitening_alone(shrinkage):
    e = _descriptors()
    mu, w = fit_whitening(e, shrinkage)
    whitened = (e - mu) @ w.T.astype(np.float64)
    c = face_code_covariance(w, shrinkage)
    np.testing.assert_allclose(c, np.cov(whitened, rowvar=False), atol=2e-4)
    vals = np.linalg.eigvalsh(c)
    assert np.sum(vals < 1e-3) == 6 and vals.max() < 1    # the unused directions, and shrinkage keeps every one below 1


def test_the_root_squares_back_and_shaping_keeps_directions_faces_use():
    e = _descriptors()
    mu, w = fit_whitening(e, 0.1)
    c = face_code_covariance(w, 0.1)
    root = symmetric_root(c)
    np.testing.assert_allclose(root @ root, c, atol=1e-6)
    np.testing.assert_allclose(root, root.T, atol=1e-12)
    vals, vecs = np.linalg.eigh(c)
    top = vecs[:, -1]
    np.testing.assert_allclose(shaped_like_faces(top, root), top, atol=1e-9)    # an eigenvector keeps its direction
    shaped = shaped_like_faces(np.random.default_rng(1).standard_normal(16), root)
    assert np.linalg.norm(shaped) == pytest.approx(1)
    assert np.linalg.norm(vecs[:, vals < 1e-3].T @ shaped) < 0.02
