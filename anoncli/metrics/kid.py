"""Kernel Inception Distance (Bińkowski, Sutherland, Arbel, Gretton, "Demystifying MMD GANs",
ICLR 2018, §4 and App. D): the squared maximum mean discrepancy between two feature sets under
the cubic polynomial kernel

    k(x, y) = (x·y / d + 1)^3            (d: the features' dimension)

with the unbiased estimator (the paper's eq. 2, a U-statistic):

    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j)

Its expected value is exactly the population MMD², which is 0 when both sets come from the same
distribution, so single estimates scatter around 0 and can be negative.

How a report uses it (``kid_against_floor``): the faces of a run are split into two disjoint
halves A and B (whole identities, or whole images, on one side), and KID compares the anonymized
faces of A with the original faces of B, so that no anonymized face meets its own original. The
same split gives the real-versus-real value (original A against original B). Because that value
averages to 0, it cannot serve as a divisor: the *floor* is its root mean square over the
splits, the typical size of a KID between two real sets of this size (the estimator's noise at
this sample size). ``ratio`` = KID / floor: near or below 1, this feature space cannot tell the
anonymized faces from real ones at this sample size; 10 means ten times what real faces score.
The floor shrinks as runs grow (about 1/n), so compare ratios of runs of the same size.

As in the paper's code, a half larger than ``subset_size`` (1000) is subsampled to that size in
each split; smaller halves are used whole (the full U-statistic, the lowest-variance estimate).
Splits: 500 when every kernel value fits in memory (runs up to 2 x subset_size faces: one kernel
matrix, each split only picks entries, about 1 s for 300 faces), else 100 as the paper's 100
subsets. The floor is a root mean square of heavy-tailed values: on 300 CelebA crops of 40
identities it moved by +-20 % between seeds at 50 splits and by +-8 % at 500, while the KID itself
moved by 1 %. The seed is fixed, so runs over the same original faces share the same splits and
the same floor, and their ratios compare as their KIDs do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEGREE = 3
COEF0 = 1.0
SPLITS = 500
SPLITS_LARGE = 100      # when the halves are subsampled (runs of more than 2 x SUBSET_SIZE faces)
SUBSET_SIZE = 1000
SEED = 0


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = DEGREE, gamma: float | None = None,
                      coef0: float = COEF0) -> np.ndarray:
    """k(x_i, y_j) = (gamma x_i·y_j + coef0)^degree for all rows; gamma defaults to 1/d."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected N x d and M x d features, got {x.shape} and {y.shape}")
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return (g * (x @ y.T) + coef0) ** degree


def mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """The unbiased MMD² from the three kernel blocks (k(X, X), k(Y, Y), k(X, Y))."""
    m, n = kxx.shape[0], kyy.shape[0]
    if m < 2 or n < 2:
        raise ValueError("the unbiased MMD² needs at least two samples on each side")
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = DEGREE, gamma: float | None = None,
                  coef0: float = COEF0) -> float:
    """Unbiased MMD² between the rows of ``x`` and of ``y`` under the polynomial kernel (KID)."""
    def k(a, b):
        return polynomial_kernel(a, b, degree, gamma, coef0)

    return mmd2_from_kernels(k(x, x), k(y, y), k(x, y))


def random_halves(groups, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask (True: half A) that keeps every group on one side, with face counts as
    even as whole groups allow: groups in random order, each to the half with fewer faces."""
    groups = list(groups)
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    in_a = np.zeros(len(groups), bool)
    size_a = size_b = 0
    blocks = list(members.values())
    for k in rng.permutation(len(blocks)):
        idx = blocks[k]
        if size_a < size_b or (size_a == size_b and rng.random() < 0.5):
            in_a[idx] = True
            size_a += len(idx)
        else:
            size_b += len(idx)
    return in_a


@dataclass(frozen=True)
class KidResult:
    kid: float                 # mean over the splits of MMD²_u(anonymized A, original B)
    kid_std: float             # its spread over the splits (splits overlap: not a standard error)
    floor: float               # root mean square over the same splits of MMD²_u(original A, original B)
    real_vs_real: float        # the mean of those real-versus-real values (expected 0)
    ratio: float | None        # kid / floor; None when the floor is 0
    half_a: float              # mean faces per side actually compared
    half_b: float
    splits: int
    subset_size: int
    degree: int = DEGREE

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def kid_against_floor(anonymized: np.ndarray, original: np.ndarray, groups=None, splits: int | None = None,
                      subset_size: int = SUBSET_SIZE, seed: int = SEED, degree: int = DEGREE) -> KidResult:
    """KID of anonymized faces against real faces, and the real-versus-real floor, over
    ``splits`` random disjoint halves (default SPLITS, or SPLITS_LARGE when halves are
    subsampled; see the module docstring). Row i of ``anonymized`` and of
    ``original`` is the same face; ``groups[i]`` (an identity, or the image) keeps faces that
    belong together on one side; by default every face is its own group."""
    a, o = np.asarray(anonymized, np.float64), np.asarray(original, np.float64)
    if a.shape != o.shape or a.ndim != 2:
        raise ValueError(f"expected two row-aligned N x d feature arrays, got {a.shape} and {o.shape}")
    if not np.isfinite(a).all() or not np.isfinite(o).all():
        raise ValueError("features contain NaN or infinity")
    groups = list(range(len(a))) if groups is None else list(groups)
    if len(groups) != len(a):
        raise ValueError("need one group per face")
    if len(set(groups)) < 2 or len(a) < 4:
        raise ValueError("KID needs at least four faces in at least two groups")
    whole = len(a) <= 2 * subset_size
    if splits is None:
        splits = SPLITS if whole else SPLITS_LARGE
    if splits < 1 or subset_size < 2:
        raise ValueError("need splits >= 1 and subset_size >= 2")
    rng = np.random.default_rng(seed)
    if whole:   # every kernel value the splits need, once
        k_aa = polynomial_kernel(a, a, degree)
        k_oo = polynomial_kernel(o, o, degree)
        k_ao = polynomial_kernel(a, o, degree)
    kids, nulls, sizes = [], [], []
    for _ in range(splits):
        in_a = random_halves(groups, rng)
        ia, ib = np.flatnonzero(in_a), np.flatnonzero(~in_a)
        if len(ia) < 2 or len(ib) < 2:
            continue
        if len(ia) > subset_size:
            ia = rng.choice(ia, subset_size, replace=False)
        if len(ib) > subset_size:
            ib = rng.choice(ib, subset_size, replace=False)
        if whole:
            kbb = k_oo[np.ix_(ib, ib)]
            kids.append(mmd2_from_kernels(k_aa[np.ix_(ia, ia)], kbb, k_ao[np.ix_(ia, ib)]))
            nulls.append(mmd2_from_kernels(k_oo[np.ix_(ia, ia)], kbb, k_oo[np.ix_(ia, ib)]))
        else:
            kbb = polynomial_kernel(o[ib], o[ib], degree)
            kids.append(mmd2_from_kernels(polynomial_kernel(a[ia], a[ia], degree), kbb, polynomial_kernel(a[ia], o[ib], degree)))
            nulls.append(mmd2_from_kernels(polynomial_kernel(o[ia], o[ia], degree), kbb, polynomial_kernel(o[ia], o[ib], degree)))
        sizes.append((len(ia), len(ib)))
    if not kids:
        raise ValueError("no split put two faces on each side (one group holds almost every face)")
    kid, floor = float(np.mean(kids)), float(math.sqrt(np.mean(np.square(nulls))))
    return KidResult(kid=kid, kid_std=float(np.std(kids)), floor=floor, real_vs_real=float(np.mean(nulls)),
                     ratio=kid / floor if floor > 0 else None, half_a=float(np.mean([s[0] for s in sizes])),
                     half_b=float(np.mean([s[1] for s in sizes])), splits=len(kids), subset_size=subset_size,
                     degree=degree)
