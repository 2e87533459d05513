"""dlib's 5-point shape predictor and face chip in numpy (no dlib): closed forms, the file reader's
errors, and pixel-for-pixel agreement with dlib itself on real photos."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED

from anoncli.faces.dlib_chip import DLIB_FACE_TEMPLATE_5, extract_image_chip, face_chip_details, get_face_chip, pyramid_down
from anoncli.models.dlib_shape_predictor import packed_integers, parse_shape_predictor, umeyama

CROPS = SHARED / "data" / "celeba-crops" / "images"
WILD = SHARED / "data" / "celeba-wild" / "images"


def test_pyramid_down_keeps_a_flat_image_and_takes_n_minus_3_over_2():
    flat = np.full((41, 30, 3), 137, np.uint8)
    down = pyramid_down(flat)
    assert down.shape == (19, 13, 3) and (down == 137).all()   # the 5 x 5 taps sum to 256
    assert pyramid_down(np.zeros((4, 40, 3), np.uint8)).shape == (0, 0, 3)


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(0, 10, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([4.0, -2.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m, t = umeyama(src, src @ (scale * rot).T + shift)
    np.testing.assert_allclose(m, scale * rot, atol=1e-12)
    np.testing.assert_allclose(t, shift, atol=1e-12)


def test_face_chip_of_landmarks_on_the_template_samples_the_image_at_half_pixels():
    size, padding = 150, 0.25
    parts = (padding + DLIB_FACE_TEMPLATE_5) / (2 * padding + 1) * size   # landmarks already where the chip puts them
    details = face_chip_details(parts, size, padding)
    assert details.angle == pytest.approx(0, abs=1e-12)
    # dlib's centred rectangle spans size − 1 between inclusive edges: half a pixel in from the chip's corners.
    np.testing.assert_allclose(details.rect, (0.5, 0.5, size - 0.5, size - 0.5), atol=1e-9)
    y, x = np.mgrid[0:size + 10, 0:size + 10]
    ramp = np.stack([x + 50, y + 50, np.full_like(x, 100)], axis=2).astype(np.uint8)
    # Bilinear on a linear ramp is exact: x + 0.5 + 50, truncated to x + 50.
    np.testing.assert_array_equal(extract_image_chip(ramp, details), ramp[:size, :size])


def test_packed_integers_read_dlibs_encoding_and_refuse_other_bytes():
    data = bytes([0x01, 5, 0x81, 7, 0x02, 0x34, 0x12, 0x83, 0x00, 0x00, 0x01])
    np.testing.assert_array_equal(packed_integers(data), [5, -7, 0x1234, -0x10000])
    with pytest.raises(ValueError, match="past the end"):
        packed_integers(data + bytes([0x03, 1]))          # claims 3 bytes, 1 follows
    with pytest.raises(ValueError, match="control byte"):
        packed_integers(bytes([0x01, 5, 0x41, 1]))        # bits 0x70 are never set


def test_a_damaged_predictor_file_is_refused_with_a_reason():
    from anoncli.weights import WeightsMissing, resolve_weights

    try:
        data = resolve_weights("dlib-shape-predictor-5").read_bytes()
    except WeightsMissing as e:
        pytest.skip(str(e))
    with pytest.raises(ValueError, match="not a dlib shape predictor"):
        parse_shape_predictor(data[: len(data) // 2])
    with pytest.raises(ValueError, match="version 1"):
        parse_shape_predictor(bytes([0x01, 2]) + data[2:])


@pytest.fixture(scope="module")
def dlib_and_photos():
    dlib = pytest.importorskip("dlib", reason="dlib is the reference: pip install 'anoncli[eval]'")
    if not CROPS.is_dir() or not WILD.is_dir():
        pytest.skip(f"real face photos not available in {SHARED / 'data'}")
    from anoncli.weights import resolve_weights

    path = str(resolve_weights("dlib-shape-predictor-5").path)
    photos = sorted(CROPS.glob("*.jpg"))[:15] + sorted(WILD.glob("*.jpg"))[:8]   # wild faces are large: the chip goes through the pyramid
    return dlib, dlib.shape_predictor(path), parse_shape_predictor(open(path, "rb").read()), photos


def test_landmarks_and_chips_are_dlibs_pixel_for_pixel(dlib_and_photos):
    dlib, reference, port, photos = dlib_and_photos
    detector = dlib.get_frontal_face_detector()
    faces = pyramid_levels = 0
    for photo in photos:
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        h, w = rgb.shape[:2]
        boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in detector(rgb, 1)]
        boxes.append((-7, -3, w + 5, h - 9))   # a box reaching out of the image
        for box in boxes:
            shape = reference(rgb, dlib.rectangle(*box))
            expected = np.array([(p.x, p.y) for p in shape.parts()])
            got = port(rgb, box)
            np.testing.assert_array_equal(got, expected)
            chip = get_face_chip(rgb, got)
            np.testing.assert_array_equal(chip, dlib.get_face_chip(rgb, shape, size=150, padding=0.25))
            details = face_chip_details(got)
            pyramid_levels += (details.rect[2] - details.rect[0] + 1) ** 2 > 4 * 150 * 150
            faces += 1
    assert faces >= 30 and pyramid_levels >= 3


def test_pyramid_down_is_dlibs(dlib_and_photos):
    dlib = dlib_and_photos[0]
    rng = np.random.default_rng(2)
    for shape in ((9, 9, 3), (40, 57, 3), (203, 178, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(pyramid_down(img), np.asarray(dlib.pyramid_down(2)(img)))
