"""A second look at uncertain large detections: the detector run again on the region alone,
enlarged or reduced so that the box is ``AT`` pixels wide.

RetinaFace's low scores are where its false faces are, and on photos in the wild some of them are
large: a torso, an arm, a jacket or hair at 0.3-0.5, on which a face method then draws a face. A real
face that large is well resolved; seen again at the scale the detector's mid-size anchors were
trained for (64-128 px, where its recall is highest) it usually scores above the run's threshold.

Measured on the 14,193 photos of ``../shared/data`` at the default threshold (README, *Uncertain
large detections*): eight detections scored below 0.5 and were at least 96 px wide, all of them not
faces; the second look at 160 px dropped six and kept an arm and a head of hair. But sent every
detection of 40 px and more of the 800 photos in the wild (878), it dropped 17, and two of them were
real faces, a blurred one (0.90 at first) and a turned one (0.68). A real face that large scoring
below 0.5 is rare, but it is the kind that fails the second look, so the pipeline runs it only when
asked (``--confirm-below``, off by default: recall first). Small uncertain detections, where blurred
and distant real faces are, are never dropped.

Pure except for the detector call; ``confirm`` is what the pipeline runs after detection.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detection import Detection

AT = 160.0            # the box's width when the region is detected again (pixels)
CONTEXT = 0.6         # the region: the box's longer side grown by this much on every side
CENTRE_TOLERANCE = 0.3   # a re-detection counts when its centre is within this many box widths of the box's


@dataclass(frozen=True)
class ConfirmSettings:
    """Which detections get the second look: scoring below ``below`` (0 = none; 0.5 is the setting
    measured) and at least ``min_side`` pixels on their shorter side; confirmed when the second look
    scores at least ``threshold`` (the run's detection threshold)."""

    below: float = 0.0
    min_side: float = 96.0
    threshold: float = 0.3

    def uncertain(self, detection: Detection) -> bool:
        return detection.score < self.below and detection.size >= self.min_side


def second_look_region(box, image_shape: tuple[int, ...]) -> tuple[tuple[int, int, int, int], float]:
    """The region (x0, y0, x1, y1, clipped to the image) detected again, and the scale that makes
    the box ``AT`` pixels wide on its longer side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0)
    h, w = image_shape[:2]
    region = (max(0, int(np.floor(x0 - CONTEXT * side))), max(0, int(np.floor(y0 - CONTEXT * side))),
              min(w, int(np.ceil(x1 + CONTEXT * side))), min(h, int(np.ceil(y1 + CONTEXT * side))))
    return region, AT / side


def confirmed_by(detection: Detection, region: tuple[int, int, int, int], scale: float, found: list[Detection],
                 threshold: float) -> bool:
    """Whether a detection of the rescaled region (``found``, in its pixels) scoring at least
    ``threshold`` lies where ``detection`` is."""
    cx = ((detection.box[0] + detection.box[2]) / 2 - region[0]) * scale
    cy = ((detection.box[1] + detection.box[3]) / 2 - region[1]) * scale
    tolerance = CENTRE_TOLERANCE * AT
    return any(d.score >= threshold and abs((d.box[0] + d.box[2]) / 2 - cx) <= tolerance
               and abs((d.box[1] + d.box[3]) / 2 - cy) <= tolerance for d in found)


UNCONFIRMED = "not found again at {at:.0f} px, left untouched"


def unconfirmed_note(detection: Detection, below: float) -> str:
    """The manifest note of a detection the second look did not confirm."""
    return (f"uncertain detection (score {detection.score:.2f} < --confirm-below {below:g}, {detection.size:.0f} px) "
            + UNCONFIRMED.format(at=AT) + f": box {[round(float(v)) for v in detection.box]}")


def unconfirmed_in(notes: list[str]) -> int:
    """How many of an image's notes are ``unconfirmed_note``s."""
    marker = UNCONFIRMED.format(at=AT)
    return sum(marker in note for note in notes)


def confirm(detector, image: np.ndarray, detections: list[Detection], settings: ConfirmSettings) -> tuple[list, list]:
    """(kept, dropped): every detection is kept but the uncertain ones (``ConfirmSettings``) that
    ``detector`` does not find again in their region at ``AT`` px. ``image``: uint8 RGB."""
    import cv2

    kept, dropped = [], []
    for detection in detections:
        if not settings.uncertain(detection):
            kept.append(detection)
            continue
        region, scale = second_look_region(detection.box, image.shape)
        x0, y0, x1, y1 = region
        patch = image[y0:y1, x0:x1]
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        patch = cv2.resize(np.ascontiguousarray(patch), size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        found = detector.detect([patch])[0]
        (kept if confirmed_by(detection, region, scale, found, settings.threshold) else dropped).append(detection)
    return kept, dropped
