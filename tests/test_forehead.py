"""How far the face region may rise above each brow (anoncli.faces.forehead, issue 20): on drawn
faces whose hairline is known, the reach stops below the hair, goes to the limit over bare skin, and
follows a fringe that covers one side only."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from anoncli.faces.forehead import MARGIN, SCAN_STEP, forehead_reach
from anoncli.faces.outline import MEAN_OUTLINE_112, outline_polygon

SKIN = (205.0, 160.0, 135.0)
HAIR = (60.0, 40.0, 30.0)


def _face(hairline_left: float | None, hairline_right: float | None, size: int = 240):
    """An upright face of the mean outline scaled to ``size`` on skin, with hair above the given
    heights (as fractions of the chin-to-brows distance above the brows' centre; None: no hair),
    left and right of the face's centre. Returns the Lab image and 68 points (27 real, the rest at
    the cheeks, where the skin is read)."""
    pts27 = MEAN_OUTLINE_112 * (size / 112.0)
    brows = pts27[17:27]
    chin = pts27[8]
    up = brows.mean(0) - chin
    # cheek points: spread over the lower face, below the eyes (the skin sample)
    cheek = np.array([pts27[1] * 0.5 + pts27[8] * 0.5, pts27[15] * 0.5 + pts27[8] * 0.5])
    pts = np.vstack([pts27, np.repeat(cheek.mean(0, keepdims=True), 41, axis=0)])
    rgb = np.empty((size, size, 3), np.float32)
    rgb[:] = SKIN
    cx = brows.mean(0)[0]
    for side, level in (("left", hairline_left), ("right", hairline_right)):
        if level is None:
            continue
        y = int(round(brows.mean(0)[1] + level * up[1]))
        cols = slice(0, int(cx)) if side == "left" else slice(int(cx), size)
        rgb[:max(y, 0), cols] = HAIR
    rng = np.random.default_rng(0)
    rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.float32)
    return cv2.cvtColor(rgb / 255.0, cv2.COLOR_RGB2Lab), pts, float(np.linalg.norm(up))


def test_bare_forehead_reaches_the_limit_and_hair_at_the_brows_keeps_the_floor():
    lab, pts, _ = _face(None, None)
    np.testing.assert_allclose(forehead_reach(lab, pts, 0.25, 0.5), 0.5)
    lab, pts, _ = _face(0.05, 0.05)
    np.testing.assert_allclose(forehead_reach(lab, pts, 0.25, 0.5), 0.25)


@pytest.mark.parametrize("hairline", [0.3, 0.4])
def test_the_reach_stops_below_the_hairline(hairline):
    lab, pts, _ = _face(hairline, hairline)
    reach = forehead_reach(lab, pts, 0.0, 0.6)
    # the brows are not level (the outer points sit lower), so each point meets the line a little higher
    assert (reach <= hairline - MARGIN + 0.12).all() and (reach >= hairline - MARGIN - 2 * SCAN_STEP).all(), reach
    polygon = outline_polygon(pts, reach)
    brows_centre_y = pts[17:27].mean(0)[1]
    _, _, distance = _face(None, None)
    hair_y = brows_centre_y - hairline * distance
    assert (polygon[17:, 1] > hair_y).all(), "the region's upper edge stays on skin"


def test_a_fringe_on_one_side_lowers_that_side_only():
    lab, pts, _ = _face(0.1, None)        # hair down to near the brows on the image's left
    reach = forehead_reach(lab, pts, 0.25, 0.5)
    assert (reach[:3] == 0.25).all() and (reach[-3:] == 0.5).all(), reach
