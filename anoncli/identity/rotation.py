"""Personalised invertible identity rotation (book ch. 6.3.3-6.3.4, METHODS.md §6): pure maths.

With z̄ the unit identity vector, z_r the unit reference vector of the face's key and θ = g(d):

    z_90  = z_r − (z̄·z_r) z̄                                  (eq. 6.17)
    z_new = z̄ cos θ + z_90 sin θ                              (eq. 6.16)
    z̄     = (z_new − z_r sin θ) / (cos θ − A sin θ)           (eq. 6.19)
    A     = (cos² θ − (z_new − z_r sin θ)·z_new) / (sin θ cos θ)   (eq. 6.20; A = z̄·z_r)

Eq. 6.19-6.20 invert eq. 6.16-6.17 exactly as the book writes them, with z_90 not normalised
(METHODS.md's "normalised" would make them inexact): z̄·z_new = cos θ, so the realised angle
between z̄ and z_new is θ for every face, and ‖z_new‖ = √(cos²θ + (1 − A²) sin²θ) ≤ 1. Recovery
divides by cos θ − A sin θ and fails near 90°, which g skips.
"""
from __future__ import annotations

import math

import numpy as np

LEVELS = tuple(range(10))   # d ∈ [0, 9] (ch. 6.4.1)


def level_to_degrees(level: int) -> float:
    """θ = g(d) = 70 + 5d for d < 4, 70 + 5(d + 1) for 4 ≤ d ≤ 9 (ch. 6.4.1): 70 ... 85, 95 ... 120."""
    if int(level) != level or not 0 <= level <= 9:
        raise ValueError(f"privacy level must be an integer 0-9, got {level!r}")
    return float(70 + 5 * level if level < 4 else 70 + 5 * (level + 1))


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n == 0):
        raise ValueError("zero vector")
    return v / n


def rotate_identity(z_id: np.ndarray, z_ref: np.ndarray, degrees: float) -> np.ndarray:
    """M(z_id, p, d) (eq. 6.16-6.17); rows are faces. z_id is normalised first, z_ref must be unit."""
    z_bar = _unit(z_id)
    z_ref = np.asarray(z_ref, np.float64)
    t = math.radians(degrees)
    a = np.sum(z_bar * z_ref, axis=-1, keepdims=True)
    z_90 = z_ref - a * z_bar
    return z_bar * math.cos(t) + z_90 * math.sin(t)


def unrotate_identity(z_new: np.ndarray, z_ref: np.ndarray, degrees: float) -> np.ndarray:
    """M⁻¹(z_new, p, d) (eq. 6.19-6.20), returned normalised (the book's ẑ_id)."""
    z_new = np.asarray(z_new, np.float64)
    z_ref = np.asarray(z_ref, np.float64)
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    residual = z_new - z_ref * s
    a = (c * c - np.sum(residual * z_new, axis=-1, keepdims=True)) / (s * c)
    return _unit(residual / (c - a * s))


def unrotate_identity_tensor(z_new, z_ref, degrees: float):
    """``unrotate_identity`` on torch tensors (rows are faces), differentiable: what idrotate's
    anonymizing fit reads back through (``anoncli.methods.identity.IdRotate``)."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    residual = z_new - z_ref * s
    a = (c * c - (residual * z_new).sum(-1, keepdim=True)) / (s * c)
    recovered = residual / (c - a * s)
    return recovered / recovered.norm(dim=-1, keepdim=True)


def reference_vector(rng: np.random.Generator, dimension: int) -> np.ndarray:
    """A Haar-uniform unit vector from a keyed generator (METHODS.md §6 decision: a seeded random
    unit vector, never a mix of real identities)."""
    v = rng.standard_normal(dimension)
    return v / np.linalg.norm(v)


def haar_orthogonal(rng: np.random.Generator, dimension: int) -> np.ndarray:
    """A d x d orthogonal matrix distributed by the Haar measure: QR of a Gaussian matrix with the
    signs of R's diagonal moved into Q (Mezzadri, Notices AMS 54(5), 2007), as FFEM draws its
    encryption matrix A (seed 001, Sec. 3.2)."""
    q, r = np.linalg.qr(rng.standard_normal((dimension, dimension)))
    return q * np.sign(np.diag(r))
