"""DP k-anonymity attribute selection: book ch. 4 ("Hiding among your neighbors"), Algorithm 1.

METHODS.md §4. Given a query face's deep feature and predicted CelebA attributes, pick the
k nearest images of a Poisson-subsampled reference set (Alg. 1 lines 1-2), let each neighbour
vote with a τ-approximated attribute vector (Eq. 4.4, line 3), and draw every protected
attribute from those votes with the exponential mechanism: independent attributes by the
two-outcome rule of Eq. 4.5 (lines 4-11), each conflict group by a roulette wheel over
Eq. 4.6 (lines 12-17, exactly one member set). Unprotected attributes keep the prediction.

Only the attribute vector is produced here; rendering it into an image (the book's STGAN
attribute editor) is a separate component. All randomness comes from `rng.secure_uniform`.

What the guarantee covers is derived in `selection_guarantee`: the membership and attributes
of one reference image, in the selected protected attributes, and nothing about the query.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from .mechanisms import (
    exponential_mechanism_probabilities,
    poisson_subsample,
    roulette_wheel,
    tau_approximation,
    two_outcome_keep_probability,
)
from ..io.labels import CELEBA_ATTRIBUTES
from .rng import secure_uniform

# Book ch. 4 Sect. 4.5.2: the 13 attributes "more distinctive in appearance" that are obfuscated.
PROTECTED_ATTRIBUTES: tuple[str, ...] = (
    "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows", "Eyeglasses",
    "Male", "Mouth_Slightly_Open", "Mustache", "No_Beard", "Pale_Skin", "Young",
)

# Book Sect. 4.5.2: G1 and G2; every other protected attribute is independent (set B of Alg. 1).
CONFLICT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("Black_Hair", "Blond_Hair", "Brown_Hair"),
    ("Mustache", "No_Beard"),
)

BOOK_GAMMA = 0.05       # Poisson subsampling rate γ (Sect. 4.5.3)
DEFAULT_TAU = 1.0       # τ of Eq. 4.4; not given by the book, METHODS §4 decision
BOOK_DELTA_Q = 1.0      # Δq of Eqs. 4.5-4.6 (Sect. 4.5.3)
BOOK_SETTINGS: tuple[tuple[int, float], ...] = ((100, 0.05), (100, 0.10), (200, 0.05))  # (k, ε)


# ---------------------------------------------------------------- attribute bookkeeping

def to_binary(attributes) -> np.ndarray:
    """Attributes as an int8 0/1 array, accepting CelebA's −1/1 convention as well as 0/1.

    An array holding −1 is read as −1/1; one holding only 0 and 1 is kept. Mixing −1 and 0, or
    any other value, is refused because the convention would be ambiguous.
    """
    a = np.asarray(attributes)
    if a.size and not np.all(np.isfinite(a.astype(np.float64))):
        raise ValueError("attributes must be finite")
    values = set(np.unique(a).tolist())
    if not values <= {-1, 0, 1}:
        raise ValueError(f"attributes must be 0/1 or CelebA's -1/1, got values {sorted(values)}")
    if {-1, 0} <= values:
        raise ValueError("attributes mix -1 and 0: neither the 0/1 nor the -1/1 convention")
    return (a == 1).astype(np.int8)


def attribute_columns(names, attribute_names=CELEBA_ATTRIBUTES) -> np.ndarray:
    """Column indices of `names` within `attribute_names` (ValueError naming any unknown one)."""
    position = {name: i for i, name in enumerate(attribute_names)}
    unknown = [n for n in names if n not in position]
    if unknown:
        raise ValueError(f"unknown attribute names {unknown}")
    return np.array([position[n] for n in names], dtype=np.intp)


def independent_attributes(protected=PROTECTED_ATTRIBUTES, conflict_groups=CONFLICT_GROUPS) -> tuple[str, ...]:
    """The independent set B = protected \\ ∪ conflict groups (Alg. 1; book Sect. 4.4.2.2).

    Checks the book's partition A = B ∪ C, B ∩ C = ∅: every group member is protected, groups
    are disjoint and have at least two members.
    """
    grouped: list[str] = []
    for group in conflict_groups:
        if len(group) < 2:
            raise ValueError(f"a conflict group needs at least two attributes, got {group}")
        grouped.extend(group)
    if len(set(grouped)) != len(grouped):
        raise ValueError("conflict groups must be disjoint")
    outside = [n for n in grouped if n not in protected]
    if outside:
        raise ValueError(f"conflict-group attributes {outside} are not protected")
    if len(set(protected)) != len(protected):
        raise ValueError("protected attributes must be distinct")
    return tuple(n for n in protected if n not in set(grouped))


def _require_k(k) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


# ---------------------------------------------------------------- votes (Alg. 1 line 3, Eq. 4.4)

def neighbour_votes(neighbour_attributes, tau: float = DEFAULT_TAU, *, scored=PROTECTED_ATTRIBUTES,
                    attribute_names=CELEBA_ATTRIBUTES) -> np.ndarray:
    """Vote vector V = Σ_j v̂_j of the k neighbours, τ-approximated per neighbour (Eq. 4.4).

    `neighbour_attributes` is (k, c), 0/1 or −1/1, columns in `attribute_names` order. Each
    neighbour's vote v_j is its 0/1 row restricted to the `scored` attributes (the protected
    ones), and v̂_j = v_j · min(τ/|v_j|₁, 1) with |v_j|₁ taken over those scored attributes only:
    they are the only ones that enter any score of Eqs. 4.5-4.6, so bounding their L1 norm is
    what bounds the sensitivity (2τ), and counting unprotected attributes in the norm would
    only shrink the votes without protecting anything. Unscored columns of the result are 0.
    """
    rows = to_binary(neighbour_attributes)
    if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] != len(attribute_names):
        raise ValueError(f"neighbour_attributes must be (k >= 1, {len(attribute_names)}), got {rows.shape}")
    columns = attribute_columns(scored, attribute_names)
    votes = np.zeros(len(attribute_names), dtype=np.float64)
    for row in rows:
        votes[columns] += tau_approximation(row[columns], tau)
    return votes


def k_anonymity_average(neighbour_attributes) -> np.ndarray:
    """The k-anonymity average attributes R of Alg. 1 line 3: the neighbours' mean 0/1 row.

    Not differentially private (book Sect. 4.5.3 uses it only for analysis): never release it.
    """
    return to_binary(neighbour_attributes).mean(axis=0)


# ---------------------------------------------------------------- selection (Eqs. 4.5-4.6)

@dataclass(frozen=True)
class SelectionProbabilities:
    """Output law of Alg. 1 lines 4-17 for one vote vector.

    independent: P(with a) for each independent protected attribute a (Eq. 4.5).
    groups: for each conflict group, P(member set) over its members in order (Eq. 4.6);
    exactly one member is set and the others cleared.
    """

    independent: dict[str, float]
    groups: dict[tuple[str, ...], np.ndarray]


def selection_probabilities(votes, k: int, epsilon: float, delta_q: float = BOOK_DELTA_Q, *,
                            protected=PROTECTED_ATTRIBUTES, conflict_groups=CONFLICT_GROUPS,
                            attribute_names=CELEBA_ATTRIBUTES) -> SelectionProbabilities:
    """Probabilities of Eq. 4.5 (score v for with, k − v for without) and Eq. 4.6 (softmax of
    εv/2Δq over a conflict group) for the vote vector `votes` (c,) in `attribute_names` order.

    Every scored vote must lie in [0, k] (a sum of k τ-approximated votes, each in [0, 1]).
    """
    k = _require_k(k)
    v = np.asarray(votes, dtype=np.float64)
    if v.shape != (len(attribute_names),) or not np.all(np.isfinite(v)):
        raise ValueError(f"votes must be a finite vector of length {len(attribute_names)}, got shape {v.shape}")
    independent = independent_attributes(protected, conflict_groups)
    scored = v[attribute_columns(protected, attribute_names)]
    if scored.min() < 0 or scored.max() > k * (1 + 1e-12):
        raise ValueError(f"protected votes must lie in [0, k={k}], got range [{scored.min()}, {scored.max()}]")
    p_with = two_outcome_keep_probability(v[attribute_columns(independent, attribute_names)], k, epsilon, delta_q)
    return SelectionProbabilities(
        independent={name: float(p) for name, p in zip(independent, np.atleast_1d(p_with))},
        groups={tuple(group): exponential_mechanism_probabilities(v[attribute_columns(group, attribute_names)],
                                                                  epsilon, delta_q)
                for group in conflict_groups},
    )


def obfuscate_attributes(predicted, votes, k: int, epsilon: float, delta_q: float = BOOK_DELTA_Q, *,
                         size: int | None = None, protected=PROTECTED_ATTRIBUTES,
                         conflict_groups=CONFLICT_GROUPS, attribute_names=CELEBA_ATTRIBUTES) -> np.ndarray:
    """Obfuscation attributes O of Alg. 1 lines 4-18, as an int8 0/1 vector (c,).

    Unprotected attributes are copied from `predicted` (0/1 or −1/1). Each independent protected
    attribute is set iff a secure uniform is below its Eq. 4.5 probability (lines 6-10); each
    conflict group sets the one member its roulette wheel picks and clears the rest (lines
    14-15). With `size=N` the result is (N, c): N independent runs, all uniforms of the
    independent attributes drawn in one call and one vectorised wheel per group.
    """
    base = to_binary(predicted)
    if base.shape != (len(attribute_names),):
        raise ValueError(f"predicted must have shape ({len(attribute_names)},), got {base.shape}")
    law = selection_probabilities(votes, k, epsilon, delta_q, protected=protected,
                                  conflict_groups=conflict_groups, attribute_names=attribute_names)
    runs = 1 if size is None else int(size)
    out = np.repeat(base[None, :], runs, axis=0)
    names = tuple(law.independent)
    if names:
        p_with = np.array([law.independent[n] for n in names])
        out[:, attribute_columns(names, attribute_names)] = secure_uniform((runs, len(names))) < p_with
    for group, probabilities in law.groups.items():
        columns = attribute_columns(group, attribute_names)
        chosen = roulette_wheel(probabilities, size=runs)
        out[:, columns] = chosen[:, None] == np.arange(len(group))[None, :]
    return out[0] if size is None else out


# ---------------------------------------------------------------- neighbours (Alg. 1 lines 1-2)

def nearest_kept_indices(query_feature, reference_features, kept, k: int) -> np.ndarray:
    """Indices of the k reference rows nearest (Euclidean) to the query among those `kept`.

    Deterministic: ties in distance go to the lower reference index, so the order is a total
    order that adding or removing another reference image leaves unchanged (the privacy
    analysis in `selection_guarantee` relies on this). Nearest first.
    """
    k = _require_k(k)
    query = np.asarray(query_feature, dtype=np.float64)
    features = np.asarray(reference_features, dtype=np.float64)
    if features.ndim != 2 or query.shape != (features.shape[1],):
        raise ValueError(f"query_feature (d,) and reference_features (n, d) disagree: "
                         f"{query.shape} vs {features.shape}")
    kept = np.asarray(kept, dtype=bool)
    if kept.shape != (features.shape[0],):
        raise ValueError(f"kept mask must have shape ({features.shape[0]},), got {kept.shape}")
    candidates = np.flatnonzero(kept)
    if candidates.size < k:
        raise ValueError(f"only {candidates.size} of {features.shape[0]} reference images are kept, fewer than k={k}")
    distances = np.sum((features[candidates] - query) ** 2, axis=1)
    return candidates[np.argsort(distances, kind="stable")[:k]]


def k_nearest_reference(query_feature, reference_features, k: int, gamma: float = BOOK_GAMMA) -> np.ndarray:
    """Alg. 1 lines 1-2: Poisson-subsample the reference set at rate γ, then the k nearest kept.

    Raises ValueError when fewer than k images survive the subsampling (γ·n must comfortably
    exceed k; the chance of this failure enters the δ of `selection_guarantee`).
    """
    k = _require_k(k)
    n = np.asarray(reference_features).shape[0]
    kept = poisson_subsample(n, gamma)
    survivors = int(kept.sum())
    if survivors < k:
        raise ValueError(f"Poisson subsampling at gamma={gamma} kept {survivors} of {n} reference images, "
                         f"fewer than k={k}; gamma*n = {gamma * n:.1f} must comfortably exceed k "
                         f"(use more reference images, a larger gamma or a smaller k)")
    return nearest_kept_indices(query_feature, reference_features, kept, k)


# ---------------------------------------------------------------- whole Algorithm 1

def dp_kanonymity_attributes(query_feature, predicted, reference_features, reference_attributes, k: int,
                             epsilon: float, gamma: float = BOOK_GAMMA, tau: float = DEFAULT_TAU,
                             delta_q: float = BOOK_DELTA_Q, *, protected=PROTECTED_ATTRIBUTES,
                             conflict_groups=CONFLICT_GROUPS,
                             attribute_names=CELEBA_ATTRIBUTES) -> tuple[np.ndarray, dict]:
    """Algorithm 1 of book ch. 4 end to end: (obfuscated 0/1 vector (c,), info).

    `reference_attributes` (n, c) are the reference images' labels (0/1 or −1/1) and
    `reference_features` (n, d) their features from the same extractor as `query_feature`.
    info["guarantee"] is `selection_guarantee(...)` for this run, fit for the manifest.
    info["internal_not_for_release"] holds the neighbour indices, votes, average attributes R
    and probabilities: they are NOT covered by the guarantee (they reveal reference images)
    and must never be written to a manifest or output; they exist for tests and debugging.
    """
    k = _require_k(k)
    labels = to_binary(reference_attributes)
    n = np.asarray(reference_features).shape[0]
    if labels.shape != (n, len(attribute_names)):
        raise ValueError(f"reference_attributes must be ({n}, {len(attribute_names)}), got {labels.shape}")
    neighbours = k_nearest_reference(query_feature, reference_features, k, gamma)
    votes = neighbour_votes(labels[neighbours], tau, scored=protected, attribute_names=attribute_names)
    options = dict(protected=protected, conflict_groups=conflict_groups, attribute_names=attribute_names)
    obfuscated = obfuscate_attributes(predicted, votes, k, epsilon, delta_q, **options)
    info = {
        "guarantee": selection_guarantee(k, epsilon, tau, delta_q, gamma, n_protected=len(protected),
                                         n_reference=n),
        "internal_not_for_release": {
            "neighbour_indices": neighbours,
            "votes": votes,
            "k_anonymity_average": k_anonymity_average(labels[neighbours]),
            "probabilities": selection_probabilities(votes, k, epsilon, delta_q, **options),
        },
    }
    return obfuscated, info


# ---------------------------------------------------------------- guarantee (for the manifest)

def vote_l1_sensitivity(tau: float = DEFAULT_TAU, n_protected: int = len(PROTECTED_ATTRIBUTES)) -> float:
    """Largest L1 change of the scored vote vector when one neighbour is swapped: min(2τ, c·min(τ, 1)).

    Each v̂_j has L1 ≤ τ and entries in [0, min(τ, 1)], so |v̂_d − v̂_j|₁ ≤ 2τ and ≤ c·min(τ, 1);
    for the default τ = 1 and c = 13 that is 2τ = 2 (book Eq. 4.4, "global sensitivity 2τ").
    """
    tau = float(tau)
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a positive finite number, got {tau!r}")
    if int(n_protected) != n_protected or n_protected < 1:
        raise ValueError(f"n_protected must be a positive integer, got {n_protected!r}")
    return min(2.0 * tau, n_protected * min(tau, 1.0))


def subsampling_failure_delta(k: int, gamma: float, n_reference: int) -> float:
    """δ = γ·max(P[Bin(n−1, γ) = k−1], P[Bin(n, γ) = k−1]): the cost of refusing when < k survive.

    With exactly k−1 survivors one reference image decides between refusal and an answer, the one
    place the ε bound fails; see `selection_guarantee`.
    """
    k = _require_k(k)
    n = int(n_reference)
    if n != n_reference or n < 1:
        raise ValueError(f"n_reference must be a positive integer, got {n_reference!r}")
    return float(gamma * max(binom.pmf(k - 1, n - 1, gamma), binom.pmf(k - 1, n, gamma)))


def selection_guarantee(k: int, epsilon: float, tau: float = DEFAULT_TAU, delta_q: float = BOOK_DELTA_Q,
                        gamma: float = BOOK_GAMMA, n_protected: int = len(PROTECTED_ATTRIBUTES),
                        n_reference: int | None = None) -> dict:
    """The DP guarantee of Algorithm 1's attribute selection, for the manifest (METHODS §4).

    Neighbouring inputs: reference sets D, D' = D ∪ {d} (one image added or removed); the
    query image, its feature and its predicted attributes are fixed and are NOT protected.

    1. Neighbours. Fix the Poisson subsample S of D; d survives with probability γ. The k nearest
       of S ∪ {d} under the fixed total order (distance, then index) are the k nearest of S, or
       those with the k-th replaced by d: one neighbour swapped, when |S| ≥ k.
    2. Votes. Each v̂_j (Eq. 4.4, L1 over the c protected attributes) has |v̂_j|₁ ≤ τ and entries
       in [0, min(τ, 1)], so the vote vector moves by L1 ≤ Δ_V = min(2τ, c·min(τ, 1)) (= 2τ for
       the default τ = 1, c = 13).
    3. Selection. Eq. 4.5 gives log P(with) = log σ(ε(v − k/2)/Δq), and |d log σ(x)/dx| ≤ 1, so
       both outcomes' log-probabilities move by at most ε|Δv_a|/Δq. Eq. 4.6 gives log p_i =
       εv_i/2Δq − log Σ_j e^{εv_j/2Δq}, which moves by at most ε(|Δv_i| + max_j |Δv_j|)/2Δq ≤
       ε·Σ_{a∈G}|Δv_a|/Δq. The draws are independent given V, so the joint log-probability of
       the 13-attribute output moves by at most ε·Σ_a|Δv_a|/Δq ≤ ε0 = ε·Δ_V/Δq. With the book's
       Δq = 1 (the sensitivity of ONE score) and τ = 1 this is ε0 = 2τε/Δq = 2ε for the whole
       vector, not ε: Δq = 1 per attribute does not make the vector ε-DP.
    4. Subsampling. P_{D'}(o) = (1−γ)P_D(o) + γ·E_S[M(S ∪ {d})(o)] with M(S ∪ {d}) ∈ [e^{−ε0},
       e^{ε0}]·M(S) pointwise gives P_{D'} ≤ (1 + γ(e^{ε0}−1))P_D and P_D ≤ P_{D'}/(1 − γ(1 −
       e^{−ε0})) ≤ (1 + γ(e^{ε0}−1))P_{D'} (the last since, for a = e^{ε0},
       (1+γ(a−1))(a−γ(a−1)) = a + γ(1−γ)(a−1)² ≥ a): ε = ln(1 + γ(e^{ε0} − 1)), the add/remove
       Poisson amplification of Li, Qardaji & Su 2012 and Balle, Barthe & Gaboardi 2018 (Thm. 8).
    5. Refusal. Alg. 1 needs k survivors; with |S| = k−1 exactly, d alone decides between a
       refusal (ValueError) and an answer, where step 1 fails. Bounding that branch by its
       probability gives (ε, δ)-DP with δ = γ·P[Bin(m, γ) = k−1], m the smaller set's size (both
       directions, since ε ≤ ε0). A set of n images has neighbours of n−1 and n+1 images, so m ∈
       {n−1, n}: `subsampling_failure_delta` takes the larger of the two when `n_reference` is
       given. For the book's n ≈ 75,000, γ = 0.05, k ≤ 200 it is below 1e-300 (0 in float64).

    Caveats stated as far as the maths goes: probabilities are evaluated in float64 and drawn
    from 53-bit uniforms (Mironov 2012 style leakage is not defended against); intermediate
    values (neighbours, votes, probabilities, the average R) are not covered.
    """
    k = _require_k(k)
    epsilon = float(epsilon)
    delta_q = float(delta_q)
    if not (epsilon > 0 and math.isfinite(epsilon)) or not (delta_q > 0 and math.isfinite(delta_q)):
        raise ValueError(f"epsilon and delta_q must be positive finite numbers, got {epsilon!r}, {delta_q!r}")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    sensitivity = vote_l1_sensitivity(tau, n_protected)
    epsilon_selection = epsilon * sensitivity / delta_q
    epsilon_amplified = math.log1p(gamma * math.expm1(epsilon_selection))
    delta = None if n_reference is None else subsampling_failure_delta(k, gamma, n_reference)
    return {
        "mechanism": "DP k-anonymity attribute selection (book ch. 4 Algorithm 1; METHODS.md §4)",
        "parameters": {"k": k, "epsilon": epsilon, "tau": float(tau), "delta_q": delta_q, "gamma": float(gamma),
                       "n_protected": int(n_protected), "n_reference": n_reference},
        "protects": ("membership and attributes of any one reference image, in the selected protected "
                     "attributes (neighbouring reference sets differ by one image added or removed)"),
        "does_not_cover": ("the query image: its pixels, identity, feature and predicted attributes "
                           "(unprotected attributes are copied from the prediction); the rendered image "
                           "(epsilon budgets the attribute selection only, not the image); intermediate "
                           "values (neighbours, votes, probabilities)"),
        "vote_l1_sensitivity": sensitivity,
        "epsilon_selection": epsilon_selection,
        "epsilon": epsilon_amplified,
        "delta": delta,
        "statement": (f"({epsilon_amplified:.6g}, {'δ' if delta is None else f'{delta:.3g}'})-DP with respect "
                      f"to adding or removing one reference image: the selection is "
                      f"ε0 = ε·{sensitivity:g}/Δq = {epsilon_selection:.6g}-DP on the subsample "
                      f"(the book's per-attribute Δq gives {sensitivity:g}·ε for the whole vector, not ε), "
                      f"amplified by Poisson subsampling at γ = {gamma:g} to ln(1 + γ(e^ε0 − 1)); "
                      f"δ = γ·P[Bin(n, γ) = k−1] covers refusing when fewer than k images survive "
                      f"the subsampling"),
    }
