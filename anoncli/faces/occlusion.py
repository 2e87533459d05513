"""Which parts of a photo belong to a nearer face: a small face behind a large one (a crowd, a
profile behind a shoulder) has a region that reaches over the near face's head, and its new face
drawn there leaves a seam across that head. Pure functions of the detector's five landmarks, which
the keyfile keeps, so restore finds the same zones.

The near face's zone is the mean brows-to-chin outline placed by its five landmarks
(``outline.MEAN_OUTLINE_112``), the brows raised by ``ZONE_BROW_RAISE`` and the whole grown by
``ZONE_GROWTH`` about its centre (temples, hairline). A face counts as nearer when its outline is at
least ``ratio`` times as wide and their zones' boxes overlap: apparent size is the only depth cue a
detector gives. Two frontal faces at the same distance rarely differ by 1.5 times; a face turned
far away spans less between its landmarks and may count as behind a frontal neighbour it overlaps
(on the first 300 CelebA wild photos the rule applies to 8 of 329 faces).

The rule never spares a face's own features: its ``feature_core`` (eyes, brows, nose and mouth, from
its five landmarks) is replaced even where a nearer face's zone covers it. A zone is a frontal
outline; a turned or tilted near face's zone can reach over the features of the face behind, and
those carry its identity."""
from __future__ import annotations

import cv2
import numpy as np

from .outline import mean_outline_at, outline_polygon

ZONE_BROW_RAISE = 0.5
ZONE_GROWTH = 1.2
CORE_RADIUS = 0.5   # eye distances around each of the five landmarks


def head_zone(landmarks5: np.ndarray) -> tuple[np.ndarray, float]:
    """The zone a face takes in the photo (polygon, image pixels) and its outline's width."""
    pts = mean_outline_at(landmarks5)
    polygon = outline_polygon(pts, ZONE_BROW_RAISE)
    centre = polygon.mean(0)
    return centre + ZONE_GROWTH * (polygon - centre), float(np.linalg.norm(pts[16] - pts[0]))


def feature_core(landmarks5: np.ndarray) -> np.ndarray:
    """The convex polygon (image pixels) of the points within ``CORE_RADIUS`` eye distances of the
    five landmarks: the face's eyes, brows, nose and mouth."""
    pts = np.asarray(landmarks5, np.float64)
    radius = CORE_RADIUS * float(np.linalg.norm(pts[1] - pts[0]))
    angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    disk = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    cloud = (pts[:, None, :] + disk[None]).reshape(-1, 2)
    return cv2.convexHull(cloud.astype(np.float32))[:, 0, :].astype(np.float64)


def nearer_zones(landmarks5: np.ndarray, others: list, ratio: float) -> tuple[np.ndarray, ...]:
    """The zones of the faces among ``others`` (five landmarks each) nearer than this one (outline
    width >= ``ratio`` x its own) that overlap its own zone; ``ratio`` 0 turns the rule off."""
    if ratio <= 0 or not others:
        return ()
    own, width = head_zone(landmarks5)
    lo, hi = own.min(0), own.max(0)
    out = []
    for zone, other_width in map(head_zone, others):
        if other_width >= ratio * width and (zone.max(0) > lo).all() and (zone.min(0) < hi).all():
            out.append(zone)
    return tuple(out)
