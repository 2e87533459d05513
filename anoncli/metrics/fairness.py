"""Gaps of a rate across groups (seed 000 Table 4, after FFEM's fairness study on UTKFace):
D_max = max - min, D_mean = mean absolute difference over all pairs of groups,
epsilon = ln(max / min), and the standard deviation across groups."""
from __future__ import annotations

import itertools
import math


def group_gaps(rates: dict[str, float]) -> dict[str, float | None]:
    """Gaps of ``rates`` (group -> value); groups with a missing value are ignored. ``log_ratio``
    is None when the smallest rate is 0 (unbounded)."""
    values = [float(v) for v in rates.values() if v is not None and not math.isnan(v)]
    if not values:
        return {"max_min": None, "mean_pairwise": None, "log_ratio": None, "std": None, "groups": 0}
    lo, hi = min(values), max(values)
    pairs = list(itertools.combinations(values, 2))
    mean = sum(values) / len(values)
    return {
        "max_min": hi - lo,
        "mean_pairwise": sum(abs(a - b) for a, b in pairs) / len(pairs) if pairs else 0.0,
        "log_ratio": math.log(hi / lo) if lo > 0 else None,
        "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)),
        "groups": len(values),
    }
