"""Microaggregation for the k-Same family (METHODS.md §3; Newton, Sweeney, Malin 2005).

k-Same replaces every aligned face of a dataset by the average of its cluster of at least k
faces. The clusters come from MDAV, "maximum distance to average vector" (Domingo-Ferrer &
Mateo-Sanz 2002; the fixed-size form of Domingo-Ferrer & Torra 2005), which gives groups of k
to 2k−1 records. Faces have tens of thousands of dimensions, so MDAV here never touches the
coordinates: it runs on the centred Gram matrix G, with

    |x_i − x_j|² = G_ii + G_jj − 2·G_ij
    |x_i − mean_R|² = G_ii − 2·mean_{j∈R} G_ij + (a term that does not depend on i),

and keeps the row sums of G over the records not yet grouped, so that after the Gram matrix
(one O(n²·d) pass of float32 matrix products) the whole algorithm is O(n²).
"""
from __future__ import annotations

import numpy as np


def as_rows(x: np.ndarray) -> np.ndarray:
    """(n, ...) samples as (n, d) rows; a view, so a memmap stays on disk."""
    x = np.asanyarray(x)
    if x.ndim < 2:
        raise ValueError(f"expected samples as rows of an (n, d) array, got shape {x.shape}")
    return x.reshape(len(x), int(np.prod(x.shape[1:])))


def column_mean(x: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """float64 mean of the rows of x, read chunk by chunk."""
    x = as_rows(x)
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, len(x), chunk_rows):
        total += x[start:start + chunk_rows].sum(axis=0, dtype=np.float64)
    return total / max(len(x), 1)


def centred_block(x: np.ndarray, start: int, stop: int, mean: np.ndarray) -> np.ndarray:
    """Rows start:stop of x minus the column mean, as float32."""
    return np.subtract(x[start:stop], mean, dtype=np.float32)


def centred_gram(x: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """The (n, n) float64 Gram matrix (x − mean)(x − mean)ᵀ of the rows of x (uint8 or float,
    possibly a np.memmap; trailing dimensions are flattened).

    Blocks of chunk_rows rows are centred in float32 and multiplied in float32 (BLAS sgemm),
    each block product is stored in float64; peak memory is two float32 blocks plus the
    result. Centring first keeps the float32 products accurate: uncentred pixel values share
    a large common offset that float32 sums would round away. Only the upper block triangle
    is multiplied; the lower one is its mirror.
    """
    x = as_rows(x)
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    n = len(x)
    mean = column_mean(x, chunk_rows).astype(np.float32)
    gram = np.empty((n, n), dtype=np.float64)
    starts = range(0, n, chunk_rows)
    for i in starts:
        i_stop = min(i + chunk_rows, n)
        rows = centred_block(x, i, i_stop, mean)
        gram[i:i_stop, i:i_stop] = rows @ rows.T
        for j in starts:
            if j <= i:
                continue
            j_stop = min(j + chunk_rows, n)
            block = rows @ centred_block(x, j, j_stop, mean).T
            gram[i:i_stop, j:j_stop] = block
            gram[j:j_stop, i:i_stop] = block.T
    return gram


def _check_gram(gram: np.ndarray) -> np.ndarray:
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"a Gram matrix must be square, got shape {gram.shape}")
    return gram


def _nearest(candidates: np.ndarray, distances: np.ndarray, count: int) -> np.ndarray:
    """The count candidates with the smallest distances; ties go to the lowest index
    (candidates are in increasing index order). O(len(candidates))."""
    if count <= 0:
        return candidates[:0]
    if count >= len(candidates):
        return candidates
    cutoff = np.partition(distances, count - 1)[count - 1]
    below = candidates[distances < cutoff]
    at_cutoff = candidates[distances == cutoff][:count - len(below)]
    return np.concatenate([below, at_cutoff])


class _Remaining:
    """The records not grouped yet, with the row sums of G over them."""

    def __init__(self, gram: np.ndarray):
        self.gram = gram
        self.diagonal = np.diagonal(gram).copy()
        self.alive = np.ones(len(gram), dtype=bool)
        self.row_sums = gram.sum(axis=1)

    def indices(self) -> np.ndarray:
        return np.flatnonzero(self.alive)

    def farthest_from_centroid(self) -> int:
        idx = self.indices()
        # |x_i − c|² up to a constant; argmax returns the first (lowest-index) maximum.
        score = self.diagonal[idx] - 2.0 * self.row_sums[idx] / len(idx)
        return int(idx[np.argmax(score)])

    def squared_distances_from(self, record: int, idx: np.ndarray) -> np.ndarray:
        return self.diagonal[idx] + self.diagonal[record] - 2.0 * self.gram[record, idx]

    def farthest_from(self, record: int) -> int:
        idx = self.indices()
        return int(idx[np.argmax(self.squared_distances_from(record, idx))])

    def take_group_around(self, record: int, size: int) -> np.ndarray:
        """record and its size−1 nearest remaining records, removed from the remaining set."""
        idx = self.indices()
        others = idx[idx != record]
        nearest = _nearest(others, self.squared_distances_from(record, others), size - 1)
        return self.remove(np.append(nearest, record))

    def remove(self, group: np.ndarray) -> np.ndarray:
        group = np.sort(group).astype(np.int64)
        self.alive[group] = False
        # G is symmetric: summing rows of the group is the contiguous way to subtract its columns.
        self.row_sums -= self.gram[group].sum(axis=0)
        return group


def mdav_groups(gram: np.ndarray, k: int) -> list[np.ndarray]:
    """MDAV microaggregation (Domingo-Ferrer & Mateo-Sanz 2002; Domingo-Ferrer & Torra 2005) of
    the n points whose Gram matrix is gram (any Gram matrix: centred or not, pixels or
    eigenface coefficients, since MDAV uses only distances). METHODS.md §3, k-Same.

    While at least 3k records remain: r = the record farthest from the centroid of the
    remaining ones, group r with its k−1 nearest remaining records; s = the remaining record
    farthest from r, group s with its k−1 nearest. Then, if 2k..3k−1 remain, one more group of k
    around the record farthest from their centroid and the rest as the last group; otherwise
    the k..2k−1 remaining records are the last group. Every group has k to 2k−1 members and
    the groups partition range(n). Ties go to the lowest index, so the result is deterministic.

    Returns the groups in the order they were formed, each a sorted int64 index array.
    """
    gram = _check_gram(gram)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    n = len(gram)
    if n == 0:
        return []
    if n < k:
        raise ValueError(f"k-anonymous groups need at least k = {k} records, got {n}")
    remaining = _Remaining(gram)
    groups: list[np.ndarray] = []
    left = n
    while left >= 3 * k:
        r = remaining.farthest_from_centroid()
        groups.append(remaining.take_group_around(r, k))
        s = remaining.farthest_from(r)
        groups.append(remaining.take_group_around(s, k))
        left -= 2 * k
    if left >= 2 * k:
        groups.append(remaining.take_group_around(remaining.farthest_from_centroid(), k))
    last = remaining.indices()
    if len(last):
        groups.append(remaining.remove(last))
    return groups


def group_labels(groups: list[np.ndarray], n: int) -> np.ndarray:
    """int64 array mapping each index of range(n) to the number of its group; the groups must
    partition range(n)."""
    labels = np.full(n, -1, dtype=np.int64)
    for number, group in enumerate(groups):
        group = np.asarray(group, dtype=np.int64)
        if np.any((group < 0) | (group >= n)):
            raise ValueError(f"group {number} has indices outside range({n})")
        if np.any(labels[group] != -1) or len(np.unique(group)) != len(group):
            raise ValueError(f"group {number} repeats an index: the groups do not partition range({n})")
        labels[group] = number
    if np.any(labels == -1):
        raise ValueError(f"{int(np.sum(labels == -1))} indices of range({n}) are in no group")
    return labels


def balanced_groups(gram: np.ndarray, k: int, weights) -> list[np.ndarray]:
    """Groups of at least k records in which no record carries more than 1/k of the group's
    total weight (weights: e.g. how many faces each person has in the run). MDAV's order
    (METHODS.md §3; Domingo-Ferrer & Torra 2005): around the record farthest from the centroid
    of the remaining ones, then around the record farthest from that one, and so on; each group
    takes the nearest remaining records until it holds k of them and its heaviest record is at
    most 1/k of its weight. A group is formed only if the records left after it can still form
    one such group; otherwise they all are the last group. With equal weights every group has
    k records and the last k to 2k−1, as in MDAV.

    Why: k-Same with identity labels shares one face among k people; a recognizer that names
    the person with the most photos of the group is right for that person's share of the group's
    faces, which exceeds 1/k when photo counts differ. Balanced groups bound it by 1/k per face.

    The whole set must be balanced itself (``balanced(weights, k)``); ties go to the lowest index.
    """
    gram = _check_gram(gram)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(gram),) or np.any(w <= 0):
        raise ValueError("need one positive weight per record")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if len(gram) == 0:
        return []
    if not balanced(w, k):
        raise ValueError(f"no record may carry more than 1/k of the total weight (k = {k})")
    remaining = _Remaining(gram)
    groups: list[np.ndarray] = []

    def grow(seed: int) -> np.ndarray | None:
        idx = remaining.indices()
        others = idx[idx != seed]
        order = others[np.argsort(remaining.squared_distances_from(seed, others), kind="stable")]
        candidate = np.concatenate([[seed], order])
        total = np.cumsum(w[candidate])
        heaviest = np.maximum.accumulate(w[candidate])
        ok = (np.arange(1, len(candidate) + 1) >= k) & (heaviest * k <= total)
        if not ok.any():
            return None
        group = candidate[:int(np.argmax(ok)) + 1]
        rest = np.setdiff1d(idx, group)
        return group if len(rest) >= k and balanced(w[rest], k) else None

    while True:
        r = remaining.farthest_from_centroid()
        group = grow(r)
        if group is None:
            break
        groups.append(remaining.remove(group))
        group = grow(remaining.farthest_from(r))
        if group is None:
            break
        groups.append(remaining.remove(group))
    last = remaining.indices()
    if len(last):
        groups.append(remaining.remove(last))
    return groups


def balanced(weights, k: int) -> bool:
    """True when the records can form one group: at least k of them, none above 1/k of the weight."""
    w = np.asarray(weights, dtype=np.float64)
    return len(w) >= k and float(w.max()) * k <= float(w.sum())
