"""Privacy measures from identity distances: protection success rate and identification.

Protection success rate (book ch. 4-6; thesis ch. 5): the share of (original, anonymized)
face pairs an attacker's recognizer judges to be different people, i.e. whose distance is
above the recognizer's threshold. Identification (FFEM, seed 001 §5): each probe is ranked
against a gallery of original images; a rank-k hit is a gallery image of the probe's own
identity among the k nearest.
"""
from __future__ import annotations

import numpy as np


def protection_rate(distances, threshold: float) -> float:
    """Share of pairs with distance strictly above ``threshold`` (NaN for no pairs)."""
    d = np.asarray(distances, np.float64)
    return float(np.mean(d > threshold)) if d.size else float("nan")


def pairwise_distances(probes: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """(P, G) distances: ``euclidean`` (dlib) or ``cosine`` (1 - cosine similarity)."""
    p, g = np.asarray(probes, np.float64), np.asarray(gallery, np.float64)
    if metric == "cosine":
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        return 1.0 - p @ g.T
    if metric == "euclidean":
        sq = (p * p).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2 * p @ g.T
        return np.sqrt(np.maximum(sq, 0.0))
    raise ValueError(f"unknown metric {metric!r}")


def identification_rates(distances: np.ndarray, probe_ids, gallery_ids, ks=(1, 5),
                         exclude: np.ndarray | None = None, farthest: bool = False) -> dict[int, float]:
    """Rank-k hit rates. ``distances``: (P, G); ``exclude``: (P, G) bool, gallery entries a
    probe must not be matched with (its own original image). Probes whose identity has no
    gallery image left are not counted. ``farthest``: the gallery ranked from the most distant,
    as an attacker ranks it who knows that a method turns each identity away from its owner's (a
    rotation by θ > 90° leaves cos θ < 0 between the two): a face carrying no identity scores
    chance either way."""
    d = np.array(distances, np.float64)
    if farthest:
        d = -d
    if exclude is not None:
        d[np.asarray(exclude, bool)] = np.inf
    gallery_ids = np.asarray(gallery_ids)
    same = gallery_ids[None, :] == np.asarray(probe_ids)[:, None]
    if exclude is not None:
        same &= ~np.asarray(exclude, bool)
    usable = same.any(axis=1)
    if not usable.any():
        return {k: float("nan") for k in ks}
    order = np.argsort(d[usable], axis=1, kind="stable")
    hits = np.take_along_axis(same[usable], order, axis=1)
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def chance_identification_rates(probe_ids, gallery_ids, ks=(1, 5), exclude: np.ndarray | None = None) -> dict[int, float]:
    """Rank-k hit rates of a matcher that ranks the gallery at random: what a probe carrying no
    identity at all scores. For a probe with s same-identity entries among the n it may be matched
    with, P(hit in the top k) = 1 − ∏_{j<k} (n − s − j)/(n − j) (draws without replacement); the
    mean is over the probes :func:`identification_rates` counts. A small gallery of few identities
    puts this floor well above the papers' large-gallery rates (FFEM: LFW, rest of it as gallery)."""
    gallery_ids = np.asarray(gallery_ids)
    same = gallery_ids[None, :] == np.asarray(probe_ids)[:, None]
    allowed = np.ones_like(same) if exclude is None else ~np.asarray(exclude, bool)
    s = (same & allowed).sum(axis=1).astype(np.float64)
    n = allowed.sum(axis=1).astype(np.float64)
    usable = s > 0
    if not usable.any():
        return {k: float("nan") for k in ks}
    s, n = s[usable], n[usable]
    out = {}
    for k in ks:
        miss = np.ones_like(s)
        for j in range(k):
            miss *= np.clip((n - s - j) / np.maximum(n - j, 1), 0.0, 1.0)
        out[k] = float((1.0 - miss).mean())
    return out
