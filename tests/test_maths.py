"""Pure maths against closed forms: similarity alignment, RetinaFace decoding, NMS, masks, methods."""
from __future__ import annotations

import numpy as np
import pytest

from anoncli.faces.align import (
    affine_scale,
    alignment_matrix,
    apply_affine,
    estimate_similarity,
    face_width,
    invert_affine,
    template_points,
)
from anoncli.faces.blend import composite, face_mask, image_mask
from anoncli.faces.detection import decode_retinaface, nms, resize_factor, retinaface_priors
from anoncli.methods.obfuscation import downsample_blur, gaussian_blur, parse_colour, pixelate


def similarity(scale, angle_deg, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.mark.parametrize("scale,angle,tx,ty", [(1.0, 0, 0, 0), (2.5, 30, -40, 12), (0.3, -75, 100, 7)])
def test_estimate_similarity_recovers_exact_transform(scale, angle, tx, ty):
    src = np.array([[10, 20], [50, 22], [30, 40], [15, 60], [45, 61]], float)
    m = similarity(scale, angle, tx, ty)
    est = estimate_similarity(src, apply_affine(m, src))
    np.testing.assert_allclose(est, m, atol=1e-9)
    assert affine_scale(est) == pytest.approx(scale)


def test_estimate_similarity_never_reflects():
    src = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)
    mirrored = src * [-1, 1]
    m = estimate_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) >= 0  # a mirror is never produced, at worst a zero scale


def test_estimate_similarity_rejects_degenerate_points():
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 2)), np.zeros((5, 2)))


def test_alignment_maps_landmarks_onto_template_and_inverse_undoes_it():
    res = 256
    landmarks = apply_affine(similarity(0.7, 20, 300, 150), template_points(res))
    m = alignment_matrix(landmarks, res)
    np.testing.assert_allclose(apply_affine(m, landmarks), template_points(res), atol=1e-6)
    np.testing.assert_allclose(apply_affine(invert_affine(m), template_points(res)), landmarks, atol=1e-6)


def test_template_scales_with_resolution():
    np.testing.assert_allclose(template_points(512), 2 * template_points(256))
    assert face_width(512) == pytest.approx(2 * face_width(256))


def test_priors_count_and_first_anchor():
    h, w = 64, 96
    priors = retinaface_priors(h, w)
    expected = sum(int(np.ceil(h / s)) * int(np.ceil(w / s)) * 2 for s in (8, 16, 32))
    assert priors.shape == (expected, 4)
    np.testing.assert_allclose(priors[0], [4 / w, 4 / h, 16 / w, 16 / h], rtol=1e-6)
    np.testing.assert_allclose(priors[1], [4 / w, 4 / h, 32 / w, 32 / h], rtol=1e-6)


def test_decode_with_zero_offsets_returns_the_anchor_box():
    h, w = 32, 32
    priors = retinaface_priors(h, w)
    boxes, pts = decode_retinaface(np.zeros((len(priors), 4), np.float32), np.zeros((len(priors), 10), np.float32), priors, h, w)
    np.testing.assert_allclose(boxes[0], [4 - 8, 4 - 8, 4 + 8, 4 + 8], atol=1e-5)
    np.testing.assert_allclose(pts[0], np.full((5, 2), 4.0), atol=1e-5)


def test_decode_offsets_follow_the_variances():
    h, w = 32, 32
    priors = retinaface_priors(h, w)[:1]
    loc = np.array([[1.0, 0.0, np.log(2) / 0.2, 0.0]], np.float32)  # centre +0.1 width, width x2
    boxes, _ = decode_retinaface(loc, np.zeros((1, 10), np.float32), priors, h, w)
    cx = 4 + 0.1 * 16
    np.testing.assert_allclose(boxes[0], [cx - 16, 4 - 8, cx + 16, 4 + 8], atol=1e-4)


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.95, 0.5]), 0.4)
    assert list(keep) == [1, 2]


def test_resize_factor_never_enlarges():
    assert resize_factor(100, 200, 640) == 1.0
    assert resize_factor(1280, 960, 640) == pytest.approx(0.5)
    assert resize_factor(5000, 5000, 0) == 1.0


@pytest.mark.parametrize("shape", ["ellipse", "box", "hull"])
def test_masks_cover_the_face_and_not_the_corners(shape):
    res = 256
    m = face_mask(res, shape, feather=0.02)
    eyes_nose = template_points(res).round().astype(int)
    assert all(m[y, x] > 0.99 for x, y in eyes_nose)
    assert m[0, 0] == 0 and m[-1, -1] == 0 and m[0, -1] == 0
    assert 0 <= m.min() and m.max() <= 1


def test_composite_is_exact_where_mask_is_zero():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (20, 20, 3)).astype(np.float32)
    anon = np.zeros_like(base)
    mask = np.zeros((20, 20), np.float32)
    mask[5:10, 5:10] = 0.5
    out = composite(base, anon, mask)
    outside = mask == 0
    assert np.array_equal(out[outside], base[outside])
    np.testing.assert_allclose(out[7, 7], base[7, 7] * 0.5)


def test_image_mask_lands_where_the_face_is():
    res = 128
    landmarks = template_points(res) + [200, 100]  # pure translation
    m = alignment_matrix(landmarks, res)
    mask = image_mask(face_mask(res), m, 400, 500)
    ys, xs = np.nonzero(mask)
    assert xs.min() >= 200 and ys.min() >= 100 and xs.max() < 200 + res and ys.max() < 100 + res


def test_pixelate_cells_are_their_means():
    img = np.arange(8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    out = pixelate(img, 4)
    np.testing.assert_allclose(out[0, 0], img[:4, :4].reshape(-1, 3).mean(0))
    assert len(np.unique(out[..., 0])) == 4


def test_blurs_remove_detail_and_keep_the_mean():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (64, 64, 3)).astype(np.float32)
    for out in (gaussian_blur(img, 6.0), downsample_blur(img, 16.0)):
        assert out.std() < 0.25 * img.std()
        assert abs(out.mean() - img.mean()) < 3


def test_parse_colour():
    assert parse_colour("#ff8000") == (255.0, 128.0, 0.0)
    with pytest.raises(ValueError):
        parse_colour("orange")
