"""A small face behind a large one is not drawn across the large one's head
(anoncli.faces.occlusion, ``--occluder-ratio``), and restore composes with the same regions."""
from __future__ import annotations

import numpy as np
import pytest

from anoncli.faces.align import template_points
from anoncli.faces.compositing import FaceRegion
from anoncli.faces.compositing_config import CompositingConfig
from anoncli.faces.detection import Detection
from anoncli.faces.occlusion import feature_core, head_zone, nearer_zones

from test_compositing import _InvertMethod, textured_photo

PHOTO = (400, 500)   # h, w


def landmarks_of(face_px: float, left: float, top: float) -> np.ndarray:
    """Five template landmarks of a frontal face ``face_px`` wide (the 112 px template scaled)."""
    return template_points(112, 0.0) * (face_px / 112.0) + [left, top]


NEAR = landmarks_of(220, 60, 90)       # a large face, left
BEHIND = landmarks_of(110, 225, 60)    # half as wide, its region reaching over the large one's right side
APART = landmarks_of(110, 380, 250)    # as small, far from both


def test_head_zone_grows_the_outline_and_measures_its_width():
    zone, width = head_zone(NEAR)
    region = FaceRegion.from_mean_outline(NEAR, 0.25)
    assert width == pytest.approx(region.width)
    full = (0, 0, PHOTO[1], PHOTO[0])
    inside = FaceRegion(zone, None, width).hard_mask(full)
    assert inside.sum() > 1.4 * region.hard_mask(full).sum()
    assert (inside >= region.hard_mask(full)).all(), "the zone holds the whole face region"


def test_only_a_clearly_wider_overlapping_face_counts_as_in_front():
    assert len(nearer_zones(BEHIND, [NEAR, APART], 1.5)) == 1   # the large face is in front of the small one
    assert nearer_zones(NEAR, [BEHIND, APART], 1.5) == ()       # nothing is in front of the large one
    assert nearer_zones(APART, [NEAR, BEHIND], 1.5) == ()       # as small, but its zone does not meet the large one's
    assert nearer_zones(BEHIND, [NEAR, APART], 2.5) == ()       # twice as wide is not 2.5 times
    assert nearer_zones(BEHIND, [NEAR, APART], 0.0) == ()       # 0: off
    assert nearer_zones(BEHIND, [], 1.5) == ()


def test_the_feature_core_covers_eyes_to_mouth():
    core = FaceRegion(feature_core(BEHIND), None, 1.0).hard_mask((0, 0, PHOTO[1], PHOTO[0]))
    eye_distance = np.linalg.norm(BEHIND[1] - BEHIND[0])
    for x, y in BEHIND:
        assert core[int(y), int(x)] and core[int(y - 0.4 * eye_distance), int(x)]   # a landmark, and a brow above an eye
    outline = FaceRegion.from_mean_outline(BEHIND, 0.25).hard_mask((0, 0, PHOTO[1], PHOTO[0]))
    assert core.sum() < 0.8 * outline.sum(), "the features, not the whole face"


def test_a_region_behind_a_zone_leaves_it_out_in_the_photo_and_in_the_crop():
    from anoncli.faces.align import alignment_matrix

    region = FaceRegion.from_mean_outline(BEHIND, 0.25)
    zones = nearer_zones(BEHIND, [NEAR], 1.5)
    core = feature_core(BEHIND)
    behind = region.behind(zones, core)
    assert region.behind((), core) is region
    full = (0, 0, PHOTO[1], PHOTO[0])
    in_zone = FaceRegion(zones[0], None, 1.0).hard_mask(full).astype(bool)
    in_core = FaceRegion(core, None, 1.0).hard_mask(full).astype(bool)
    overlap = region.hard_mask(full).astype(bool) & in_zone
    assert (overlap & ~in_core).sum() > 200, "the test's faces overlap"
    assert not (behind.hard_mask(full).astype(bool) & in_zone & ~in_core).any()
    keep = ~in_zone | in_core
    np.testing.assert_array_equal(behind.hard_mask(full)[keep], region.hard_mask(full)[keep])
    m = alignment_matrix(BEHIND, 64, 0.2)
    assert behind.crop_mask(m, 64).sum() < region.crop_mask(m, 64).sum() - 10


@pytest.mark.parametrize("ratio", [1.5, 0.0])
def test_the_stage_leaves_the_head_in_front_alone_and_restore_uses_the_same_regions(ratio):
    from anoncli.faces.stage import anonymize_faces, restore_faces
    from anoncli.io.images import LoadedImage

    rgb = np.rint(textured_photo(*PHOTO)).astype(np.uint8)
    img = LoadedImage(rgb.copy(), "RGB", "PNG")
    method = _InvertMethod(CompositingConfig(shape="ellipse", colour="none", occluder_ratio=ratio))
    dets = [Detection(np.array([0, 0, 1, 1], np.float64), 0.99, lm) for lm in (NEAR, BEHIND)]
    key = type("Key", (), {"secret": b"k" * 32})()
    _, secrets = anonymize_faces(img, dets, method, lambda i: key)
    full = (0, 0, PHOTO[1], PHOTO[0])
    in_zone = FaceRegion(head_zone(NEAR)[0], None, 1.0).hard_mask(full).astype(bool)
    m_near = np.asarray(secrets[0].warp)
    near_region = FaceRegion.from_crop_shape("ellipse", m_near, method.resolution, method.margin,
                                             (m_near[:, :2] @ NEAR.T).T + m_near[:, 2])
    in_core = FaceRegion(feature_core(BEHIND), None, 1.0).hard_mask(full).astype(bool)
    head_only = in_zone & ~near_region.hard_mask(full).astype(bool) & ~in_core   # the large face's head outside its own region
    changed = (img.pixels != rgb).any(2)
    assert changed[~in_zone].any(), "the small face changed where nothing is in front of it"
    if ratio:
        assert not changed[head_only].any(), "the small face was drawn over the head in front of it"
    else:
        assert changed[head_only].any(), "without the rule the small face's region reaches over the head"

    anonymized = img.pixels.copy()
    faces = [{"index": s.index, "warp": s.warp, "landmarks": s.landmarks, "params": s.params} for s in secrets]
    restore_faces(img, faces, method, {0: key, 1: key})
    restored = (img.pixels != anonymized).any(2)
    if ratio:   # restore weighs the same faces in front: it does not touch the head either
        assert restored.any() and not restored[head_only].any()
    err_anon = np.abs(anonymized[changed].astype(int) - rgb[changed]).mean()
    err_restored = np.abs(img.pixels[changed].astype(int) - rgb[changed]).mean()
    assert err_restored < 0.5 * err_anon, (err_restored, err_anon)


def test_a_keyfile_from_before_the_rule_restores_every_face_whole():
    from anoncli.methods import get_method_spec
    from anoncli.restore import sealed_params

    spec = get_method_spec("identitydp")
    assert sealed_params(spec, {"epsilon": 6.0}) == {"epsilon": 6.0, "occluder_ratio": 0.0, "outline_pose": False}
    assert sealed_params(spec, {"occluder_ratio": 1.5, "outline_pose": True}) == {"occluder_ratio": 1.5, "outline_pose": True}
    assert sealed_params(get_method_spec("blur"), {}) == {}


def test_the_face_behind_keeps_its_features_replaced_inside_a_zone():
    """A small face whose eyes and mouth lie inside a large face's zone (a frontal zone over a turned
    head, a face close behind a temple): its features are still replaced."""
    from anoncli.faces.stage import anonymize_faces
    from anoncli.io.images import LoadedImage

    inside = landmarks_of(70, 65, 95)   # small, at the large face's temple, within its grown zone
    zone = FaceRegion(head_zone(NEAR)[0], None, 1.0).hard_mask((0, 0, PHOTO[1], PHOTO[0])).astype(bool)
    assert all(zone[int(y), int(x)] for x, y in inside) and len(nearer_zones(inside, [NEAR], 1.5)) == 1
    rgb = np.rint(textured_photo(*PHOTO)).astype(np.uint8)
    img = LoadedImage(rgb.copy(), "RGB", "PNG")
    method = _InvertMethod(CompositingConfig(shape="ellipse", colour="none"))
    anonymize_faces(img, [Detection(np.array([0, 0, 1, 1], np.float64), 0.99, lm) for lm in (inside, NEAR)], method)
    changed = (img.pixels != rgb).any(2)
    core = FaceRegion(feature_core(inside), None, 1.0).hard_mask((0, 0, PHOTO[1], PHOTO[0])).astype(bool)
    assert changed[core].mean() > 0.9
