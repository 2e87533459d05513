"""Cryptographic random source for DP noise (METHODS.md §5: "Noise comes from a cryptographic
RNG and is never stored or seeded").

DP noise must not come from a seedable PRNG: anyone holding the seed could subtract the noise.
Every value here is drawn from the operating system's CSPRNG (`os.urandom`), and nothing is kept.
"""
from __future__ import annotations

import os

import numpy as np

_MANTISSA_BITS = 53
_ULP = 2.0 ** -_MANTISSA_BITS


def _random_53bit_integers(count: int) -> np.ndarray:
    """`count` independent integers uniform on [0, 2**53), from OS entropy."""
    words = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return words >> np.uint64(64 - _MANTISSA_BITS)


def secure_uniform(shape: int | tuple[int, ...] = ()) -> np.ndarray:
    """Float64 uniforms on the OPEN interval (0, 1), 53 random bits each, from `os.urandom`.

    Each value is k·2⁻⁵³ with k uniform on {1, …, 2⁵³−1} (k = 0 is redrawn), so every value is
    exactly representable, never 0 and never 1: safe inside log() of an inverse CDF.
    Returns an array of the given shape (a 0-d array for shape ()).
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    count = int(np.prod(shape, dtype=np.int64))
    if count < 0 or any(int(s) < 0 for s in shape):
        raise ValueError(f"shape must be non-negative, got {shape}")
    k = _random_53bit_integers(count)
    zeros = np.flatnonzero(k == 0)
    while zeros.size:  # probability 2⁻⁵³ per value; redraw rather than bias the distribution
        k[zeros] = _random_53bit_integers(zeros.size)
        zeros = zeros[k[zeros] == 0]
    return (k.astype(np.float64) * _ULP).reshape(shape)


def os_entropy_generator() -> np.random.Generator:
    """A numpy Generator backed by a fresh PCG64 seeded from OS entropy on every call.

    For non-private randomness only (e.g. shuffling display order). It is NOT used for DP
    noise: PCG64 is not a cryptographic generator. DP noise uses `secure_uniform`.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence()))
