"""Face-verification statistics on pair scores (pure numpy).

Conventions: a *score* grows with similarity (e.g. cosine similarity) and labels are 1 for
genuine (same identity) pairs, 0 for impostor pairs; a *distance* shrinks with similarity
and a pair is accepted as the same person when ``distance < threshold``.
"""
from __future__ import annotations

import math

import numpy as np


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # Start index of each run of equal values, and the run it belongs to.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    run = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    ranks = np.empty(len(values), np.float64)
    ranks[order] = mean_rank[run]
    return ranks


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 positive, 0 negative).

    Equals P(score of a random positive > score of a random negative) + 0.5 P(tie): the
    Mann-Whitney U statistic divided by n_pos * n_neg, computed from average ranks.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError("scores and labels must have the same length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need at least one positive and one negative")
    rank_sum = _average_ranks(s)[pos].sum()
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def threshold_at_far(impostor_distances, far: float) -> float:
    """Largest distance threshold whose false-accept rate on these impostors is at most ``far``.

    A pair is accepted when ``distance < threshold``; the result is the (k+1)-th smallest
    impostor distance with k = floor(far * n), so at most k impostors lie below it and any
    larger threshold would accept more than k. ``far >= 1`` gives ``inf``.
    """
    d = np.sort(np.asarray(impostor_distances, dtype=np.float64).ravel())
    if d.size == 0:
        raise ValueError("need at least one impostor distance")
    if not np.all(np.isfinite(d)):
        raise ValueError("impostor distances must be finite")
    if not 0.0 <= far <= 1.0:
        raise ValueError("far must lie in [0, 1]")
    k = math.floor(far * d.size + 1e-9)  # tolerate far * n landing just below an integer
    return float("inf") if k >= d.size else float(d[k])
