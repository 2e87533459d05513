"""The mean outline bent by the face's pose (anoncli.faces.outline.posed_mean_outline, --outline-pose),
the compositor's region where dlib's 68 points fail."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anoncli.faces.align import template_points
from anoncli.faces.outline import (MEAN_OUTLINE_112, OUTLINE_ACROSS_112, OUTLINE_DOWN_112, POSE_LIMITS, POSE_REFERENCE,
                                   mean_outline_at, nose_offsets, posed_mean_outline)

from conftest import SHARED


def five_with_nose(s: float, t: float) -> np.ndarray:
    """Template eyes and mouth, the nose tip s eye distances right of and t below the eyes' midpoint."""
    pts = template_points(112, 0.0).astype(np.float64)
    mid, eyes = (pts[0] + pts[1]) / 2, np.linalg.norm(pts[1] - pts[0])
    pts[2] = mid + eyes * np.array([s, t])
    return pts


def test_nose_offsets_read_back_what_was_placed():
    s, t = nose_offsets(np.stack([five_with_nose(0.2, 0.5), five_with_nose(-0.3, 0.7)]))
    np.testing.assert_allclose(s, [0.2, -0.3], atol=1e-3)   # the template's eyes are level to 0.2 px in 35
    np.testing.assert_allclose(t, [0.5, 0.7], atol=1e-2)


def test_the_posed_outline_is_the_mean_at_the_reference_and_linear_within_the_limits():
    s0, t0 = POSE_REFERENCE
    np.testing.assert_allclose(posed_mean_outline(five_with_nose(s0, t0)), MEAN_OUTLINE_112, atol=0.3)
    base = posed_mean_outline(five_with_nose(s0, t0))
    np.testing.assert_allclose(posed_mean_outline(five_with_nose(s0 + 0.2, t0)) - base, 0.2 * OUTLINE_ACROSS_112, atol=0.3)
    np.testing.assert_allclose(posed_mean_outline(five_with_nose(s0, t0 - 0.1)) - base, -0.1 * OUTLINE_DOWN_112, atol=0.3)
    far = posed_mean_outline(five_with_nose(s0 + 2.0, t0))
    np.testing.assert_allclose(far - base, POSE_LIMITS[0] * OUTLINE_ACROSS_112, atol=0.3)   # clipped, not extrapolated


def test_mean_outline_at_places_it_by_the_landmarks_with_or_without_pose():
    frontal = template_points(112, 0.0) * 2.5 + [100.0, 40.0]   # 2.5 times the 112 frame, shifted
    np.testing.assert_allclose(mean_outline_at(frontal, pose=False), MEAN_OUTLINE_112 * 2.5 + [100.0, 40.0], atol=1e-6)
    five = five_with_nose(0.25, 0.6) * 2.5 + [100.0, 40.0]      # turned: the nose right of the eyes' midpoint
    turned = mean_outline_at(five)
    assert turned[:17, 0].mean() < mean_outline_at(five, pose=False)[:17, 0].mean() - 5   # nose right: the jaw shifts left


def test_on_turned_real_faces_the_posed_outline_is_nearer_dlibs_than_the_frontal_mean():
    from anoncli.faces.align import alignment_matrix, apply_affine
    from anoncli.faces.compositing import LANDMARK_DISAGREEMENT, landmark_disagreement, predict_landmarks68
    from anoncli.faces.detectors import create_detector

    folder = SHARED / "data" / "celeba-wild" / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not available")
    detector = create_detector("retinaface-onnx")
    frontal, posed = [], []
    for path in sorted(folder.glob("*.jpg"))[-120:]:   # in the fit's data: the constants applied the right way round (held out: the benchmark)
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for det in detector.detect([rgb])[0]:
            l5 = np.asarray(det.landmarks, np.float64)
            m = alignment_matrix(l5, 112, 0.0)
            s, _ = nose_offsets(apply_affine(m, l5))
            if np.linalg.norm(l5[1] - l5[0]) < 20 or abs(s - POSE_REFERENCE[0]) < 0.15:
                continue
            pts = predict_landmarks68(rgb, l5)
            if landmark_disagreement(pts, l5) > LANDMARK_DISAGREEMENT:
                continue
            frontal.append(np.linalg.norm(mean_outline_at(l5, pose=False) - pts[:27], axis=1).mean())
            posed.append(np.linalg.norm(mean_outline_at(l5) - pts[:27], axis=1).mean())
    assert len(posed) >= 5, f"only {len(posed)} turned faces"
    assert np.mean(posed) < 0.75 * np.mean(frontal), (np.mean(posed), np.mean(frontal))
