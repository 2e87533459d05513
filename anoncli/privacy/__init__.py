"""Differential-privacy building blocks: secure randomness, noise mechanisms, RDP accounting.

Sources: METHODS.md §2 (DP-Pix, Laplace), §4 (DP k-anonymity attributes: exponential mechanism,
τ-approximation, Poisson subsampling), §5 (IdentityDP, Laplace), §8 (DP-Image RDP accounting).
DP noise is drawn only from `rng.secure_uniform` (OS entropy; never seeded, never stored).
"""
