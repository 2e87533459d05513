"""68-point landmark distance between two faces (iBUG 300-W markup, as dlib predicts it).

The error of each point is divided by the inter-ocular distance of the reference face, the
distance between the outer eye corners (points 36 and 45), the normalisation of the 300-W
benchmark; the report averages it over the points of each facial region.
"""
from __future__ import annotations

import numpy as np

REGIONS = {
    "chin": range(0, 17),        # jaw line
    "eyebrows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
}
OUTER_EYE_CORNERS = (36, 45)


def inter_ocular_distance(points: np.ndarray) -> float:
    left, right = OUTER_EYE_CORNERS
    return float(np.linalg.norm(points[left] - points[right]))


def normalised_landmark_distance(reference, other) -> dict[str, float]:
    """Mean point-to-point distance over each region and over all 68 points, divided by the
    reference's inter-ocular distance."""
    ref = np.asarray(reference, np.float64)
    oth = np.asarray(other, np.float64)
    if ref.shape != (68, 2) or oth.shape != (68, 2):
        raise ValueError("landmarks must be 68 (x, y) points")
    iod = inter_ocular_distance(ref)
    if iod <= 0:
        raise ValueError("the reference's outer eye corners coincide")
    per_point = np.linalg.norm(ref - oth, axis=1) / iod
    out = {name: float(per_point[list(idx)].mean()) for name, idx in REGIONS.items()}
    out["all"] = float(per_point.mean())
    return out
