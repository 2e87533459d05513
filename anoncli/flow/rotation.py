"""FFEM's latent rotation (seed 001; METHODS.md §7), pure numpy.

The flow's latent Z (every level's standard-normal ε, concatenated: D = 3·R² numbers for an R x R
RGB face) is reshaped to an m x 3m matrix with m = R, multiplied on the left by a Haar-random
orthogonal m x m matrix A, and decoded at temperature λ. Restore multiplies by Aᵀ.

A is drawn per face from a generator keyed by the face's key (METHODS.md §7 decision): with one
A shared by all faces, orthogonal Procrustes on a single leaked (original, anonymized) pair gives
A exactly; with one A per face, a leaked pair says nothing about any other face's A. A is
re-derived from the key at restore, never stored.
"""
from __future__ import annotations

import numpy as np


def haar_orthogonal(rng: np.random.Generator, m: int) -> np.ndarray:
    """A Haar-distributed m x m orthogonal matrix: QR of a Gaussian matrix with the signs of R's
    diagonal moved into Q (Mezzadri, Notices AMS 2007; without it Q is not Haar)."""
    q, r = np.linalg.qr(rng.standard_normal((m, m)))
    return q * np.sign(np.diag(r))


def latent_matrix(latents: list[np.ndarray], m: int) -> np.ndarray:
    """The per-level latents of one face (any shapes) as one m x (D/m) matrix, level after level."""
    flat = np.concatenate([np.asarray(z, np.float64).ravel() for z in latents])
    if flat.size % m:
        raise ValueError(f"{flat.size} latent numbers do not fill rows of {m}")
    return flat.reshape(m, flat.size // m)


def split_latents(matrix: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Inverse of ``latent_matrix``: the matrix back into per-level arrays of ``shapes``."""
    flat = np.asarray(matrix).ravel()
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) != flat.size:
        raise ValueError(f"shapes hold {sum(sizes)} numbers, the matrix {flat.size}")
    return [part.reshape(s) for part, s in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes)]


def rotate_latent(matrix: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Z_enc = A·Z."""
    return rotation @ matrix


def unrotate_latent(matrix: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Z = Aᵀ·Z_enc."""
    return rotation.T @ matrix


def procrustes_rotation(original: np.ndarray, rotated: np.ndarray) -> np.ndarray:
    """The orthogonal A minimising ‖A·original − rotated‖ (Schönemann 1966): what an attacker
    computes from one leaked (latent, rotated latent) pair."""
    u, _, vt = np.linalg.svd(rotated @ original.T)
    return u @ vt
