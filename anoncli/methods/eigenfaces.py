"""Eigenfaces (Turk & Pentland 1991) for k-Same-Eigen (Newton, Sweeney, Malin 2005;
METHODS.md §3): PCA of the aligned face crops; k-Same-Eigen clusters the coefficients with
MDAV and outputs the reconstruction of each cluster's mean coefficients.

With n faces of d pixels and n <= d (the usual case: 5000 crops of 49152 values) the
components come from the n×n centred Gram matrix G = X_c X_cᵀ (the "snapshot" trick):
if G u = λ u then X_cᵀ u / √λ is a unit eigenvector of the scatter X_cᵀ X_c with the same λ,
and the coefficients of the faces on it are u·√λ. With n > d the d×d scatter is
diagonalised directly. Variances are λ/(n−1): the unbiased sample variance along each
component, equal to s²/(n−1) for the singular values s of X_c.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.sparse import linalg as sparse_linalg

from .microaggregation import as_rows, centred_block, centred_gram, column_mean

# Eigenvalues below this fraction of the largest are rounding noise of the float32 products
# (relative error ~1e-6), not directions of the data.
EIGENVALUE_RTOL = 1e-5


@dataclass(frozen=True)
class Eigenfaces:
    """mean (d,), components (C, d) with orthonormal rows, variances (C,) in decreasing order."""
    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray

    @property
    def n_components(self) -> int:
        return len(self.components)


def _largest_eigenpairs(symmetric: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The count largest eigenvalues (increasing) and eigenvectors of a symmetric matrix.

    A few of many (100 of 5000) come from Lanczos (ARPACK) in ~400 matrix-vector products,
    2-3 times faster than LAPACK, whose Householder tridiagonalisation of all n rows dominates.
    The start vector is fixed, so the result is deterministic; it is not the vector of ones,
    which spans the null space of a centred Gram matrix.
    """
    size = len(symmetric)
    if 0 < count <= size // 10:
        start = np.random.default_rng(0).standard_normal(size)
        try:
            return sparse_linalg.eigsh(symmetric, k=count, which="LA", v0=start, tol=0)
        except sparse_linalg.ArpackNoConvergence:
            pass
    return linalg.eigh(symmetric, subset_by_index=[size - count, size - 1])


def _top_eigenpairs(symmetric: np.ndarray, count: int, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """The largest min(count, rank) eigenvalues (decreasing) and their eigenvectors (columns),
    where the rank counts eigenvalues above rtol times the largest."""
    count = min(count, len(symmetric))
    values, vectors = _largest_eigenpairs(symmetric, count)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    if count == 0 or values[0] <= 0:
        return values[:0], vectors[:, :0]
    keep = values > rtol * values[0]
    return values[keep], vectors[:, keep]


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """+1 or −1 per component so that its largest-magnitude loading (first one on ties) is
    positive: eigenvectors are only defined up to sign."""
    if components.size == 0:
        return np.ones(len(components))
    largest = np.abs(components).argmax(axis=1)
    return np.where(components[np.arange(len(components)), largest] < 0, -1.0, 1.0)


def _components_from_gram(x: np.ndarray, mean32: np.ndarray, vectors: np.ndarray,
                          values: np.ndarray, chunk_rows: int) -> np.ndarray:
    """X_cᵀ U / √λ as (C, d) rows, accumulated over row blocks of x."""
    weights = (vectors / np.sqrt(values)).astype(np.float32)
    components = np.zeros((len(values), x.shape[1]), dtype=np.float64)
    for start in range(0, len(x), chunk_rows):
        stop = min(start + chunk_rows, len(x))
        components += weights[start:stop].T @ centred_block(x, start, stop, mean32)
    return components


def _scatter(x: np.ndarray, mean32: np.ndarray, chunk_rows: int) -> np.ndarray:
    """The d×d scatter matrix X_cᵀ X_c, accumulated over row blocks of x."""
    scatter = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
    for start in range(0, len(x), chunk_rows):
        rows = centred_block(x, start, min(start + chunk_rows, len(x)), mean32)
        scatter += rows.T @ rows
    return scatter


def fit_eigenfaces(x: np.ndarray, n_components: int, gram: np.ndarray | None = None,
                   chunk_rows: int = 1024, rtol: float = EIGENVALUE_RTOL) -> tuple[Eigenfaces, np.ndarray]:
    """PCA of the rows of x (n, d) (uint8 or float, possibly a memmap). Returns the eigenfaces and
    the (n, C) coefficients of the rows; C = min(n_components, rank), the rank counting the
    eigenvalues above rtol times the largest.

    n <= d: eigenvectors of the centred Gram matrix; pass gram (from centred_gram(x)) to reuse
    one already computed for MDAV. n > d: eigenvectors of the d×d scatter (gram is ignored).
    """
    x = as_rows(x)
    n, d = x.shape
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if n < 2:
        raise ValueError(f"PCA needs at least 2 samples, got {n}")
    mean = column_mean(x, chunk_rows)
    mean32 = mean.astype(np.float32)
    if n <= d:
        if gram is None:
            gram = centred_gram(x, chunk_rows)
        elif gram.shape != (n, n):
            raise ValueError(f"gram has shape {gram.shape}, expected ({n}, {n})")
        values, vectors = _top_eigenpairs(np.asarray(gram, dtype=np.float64), n_components, rtol)
        components = _components_from_gram(x, mean32, vectors, values, chunk_rows)
        # On the n×n side the coefficients need no pass over x: X_c (X_cᵀ u/√λ) = u·√λ.
        coefficients = vectors * np.sqrt(values)
    else:
        values, vectors = _top_eigenpairs(_scatter(x, mean32, chunk_rows), n_components, rtol)
        components = np.ascontiguousarray(vectors.T)
        coefficients = None
    signs = _fix_signs(components)
    components *= signs[:, None]
    eigenfaces = Eigenfaces(mean=mean, components=components, variances=values / (n - 1))
    if coefficients is None:
        coefficients = project(eigenfaces, x, chunk_rows)
    else:
        coefficients = coefficients * signs
    return eigenfaces, coefficients


def project(e: Eigenfaces, x: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """(m, C) float64 coefficients (x − mean)·componentsᵀ of the rows of x."""
    x = as_rows(x)
    if x.shape[1] != len(e.mean):
        raise ValueError(f"rows of {x.shape[1]} values do not match eigenfaces of {len(e.mean)}")
    coefficients = np.empty((len(x), e.n_components), dtype=np.float64)
    for start in range(0, len(x), chunk_rows):
        rows = np.subtract(x[start:start + chunk_rows], e.mean, dtype=np.float64)
        coefficients[start:start + chunk_rows] = rows @ e.components.T
    return coefficients


def reconstruct(e: Eigenfaces, coefficients: np.ndarray) -> np.ndarray:
    """(m, d) float64 faces mean + coefficients·components."""
    coefficients = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    if coefficients.shape[1] != e.n_components:
        raise ValueError(f"{coefficients.shape[1]} coefficients per face for {e.n_components} components")
    return e.mean + coefficients @ e.components


def coefficient_gram(coefficients: np.ndarray) -> np.ndarray:
    """The (n, n) Gram matrix of eigenface coefficients, the input of MDAV in k-Same-Eigen.
    With all components its distances are the pixel distances."""
    coefficients = np.asarray(coefficients, dtype=np.float64)
    return coefficients @ coefficients.T
