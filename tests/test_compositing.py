"""Compositing a method's crop back into the photo (anoncli.faces.compositing, issue 20 §2):
bit-identical outside the region, no seam, colour matched, the photo's detail kept, dense-landmark
regions, and the face stage's anonymize/restore composing with the same region."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from anoncli.faces.align import alignment_matrix, apply_affine, template_points
from anoncli.faces.blend import crop_bounds_in_image, face_mask
from anoncli.faces.compositing import Compositor, FaceRegion, band_sigmas, crop_bands, match_colour, predict_landmarks68
from anoncli.faces.compositing_config import CompositingConfig
from anoncli.faces.outline import MEAN_OUTLINE_112, mean_outline_in_crop, outline_polygon
from anoncli.methods.base import FaceMethod
from anoncli.metrics.texture import texture_ratio

from conftest import SHARED

RES = 64
MARGIN = 0.2


def textured_photo(h=400, w=400, seed=0) -> np.ndarray:
    """A smooth shaded background with fine grain (float RGB 0-255)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([90 + 60 * np.sin(x / 70), 110 + 50 * np.cos(y / 60), 100 + 0.1 * (x + y)], axis=2)
    return np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.float32)


def face_setup(face_px=240, photo=400):
    """Landmarks of a face ``face_px`` wide (template layout) in the middle of the photo, its warp
    into a RES crop, the roi and a region (the mean outline)."""
    scale = face_px / 112.0
    lm = (template_points(112, 0.0)) * scale + (photo - face_px) / 2
    m = alignment_matrix(lm, RES, MARGIN)
    roi = crop_bounds_in_image(m, RES, photo, photo)
    pts27 = apply_affine(cv2.invertAffineTransform(alignment_matrix(lm, 112, 0.0)), MEAN_OUTLINE_112)
    dense = np.vstack([pts27, np.repeat(pts27[-1:], 41, axis=0)])   # 68 rows; only 0-26 shape the outline
    return lm, m, roi, FaceRegion.from_landmarks(dense, 0.25)


def in_roi(a, roi):
    x0, y0, x1, y1 = roi
    return a[y0:y1, x0:x1]


@pytest.mark.parametrize("blend", ["multiband", "alpha"])
@pytest.mark.parametrize("colour", ["lab", "lab-local", "none"])
def test_pixels_outside_the_region_are_bit_identical(blend, colour):
    photo = textured_photo()
    _, m, roi, region = face_setup()
    rng = np.random.default_rng(1)
    crop = rng.uniform(0, 255, (RES, RES, 3)).astype(np.float32)
    base = in_roi(photo, roi)
    out, support = Compositor(CompositingConfig(shape="landmarks", blend=blend, colour=colour)).composite(base, crop, m, roi, region)
    hard = region.hard_mask(roi)
    assert (support[hard == 0] == 0).all(), "the support must stay inside the region"
    np.testing.assert_array_equal(out[support == 0], base[support == 0])
    assert (support > 0).sum() > 0.8 * hard.sum()
    assert np.abs(out[hard > 0] - base[hard > 0]).mean() > 10, "the face must change"


def test_bands_sum_to_the_change_and_fade_in_wider_when_coarser():
    rng = np.random.default_rng(0)
    diff = rng.normal(0, 20, (64, 64, 3)).astype(np.float32)
    bands, widths = crop_bands(diff, 12.0, 0.25)   # a crop 4x coarser than the photo
    np.testing.assert_allclose(sum(bands), diff, atol=1e-3)
    assert band_sigmas(12.0, 0.5) == [0.5, 1.0, 2.0, 4.0]   # transitions 1.5, 3, 6, 12 crop px
    assert widths == [6.0, 12.0, 24.0, 48.0, 48.0]          # in photo px; the rest over the widest


def gradient_magnitude(img):
    y = img.mean(2)
    return np.hypot(cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1))


def boundary_and_inside(region, roi):
    hard = region.hard_mask(roi)
    ring = (cv2.dilate(hard, np.ones((5, 5), np.uint8)) - cv2.erode(hard, np.ones((5, 5), np.uint8))) > 0
    inside = cv2.erode(hard, np.ones((31, 31), np.uint8)) > 0
    return ring, inside


@pytest.mark.parametrize("blend", ["multiband", "alpha"])
def test_no_seam_at_the_region_edge(blend):
    """A face darker and differently tinted than the shaded photo: within 2 px of the region's edge
    the gradient is no stronger than inside the face, and nowhere in the transition (where the
    shading difference is bridged) more than a third stronger; a hard paste of the same crop has a
    seam by the same measure."""
    photo = textured_photo(seed=2)
    _, m, roi, region = face_setup()
    rng = np.random.default_rng(3)
    crop = np.clip(np.stack([np.full((RES, RES), 60.0), np.full((RES, RES), 140.0), np.full((RES, RES), 70.0)], 2)
                   + rng.normal(0, 6, (RES, RES, 3)), 0, 255).astype(np.float32)
    base = in_roi(photo, roi)
    ring, inside = boundary_and_inside(region, roi)
    hard = region.hard_mask(roi)
    signed = np.where(hard > 0, cv2.distanceTransform(hard, cv2.DIST_L2, 5), -cv2.distanceTransform(1 - hard, cv2.DIST_L2, 5))
    config = CompositingConfig(blend=blend, detail_sigma=1.0)
    out, _ = Compositor(config).composite(base, crop, m, roi, region)
    g = gradient_magnitude(np.clip(np.rint(out), 0, 255))
    assert g[ring].mean() <= 1.05 * g[inside].mean(), (g[ring].mean(), g[inside].mean())
    widest = config.blend_width * region.width
    for d in np.arange(-4, widest, 2):
        across = (signed >= d) & (signed < d + 2)
        assert g[across].mean() <= 1.35 * g[inside].mean(), (d, g[across].mean(), g[inside].mean())
    from anoncli.faces.blend import warp_crop_to_roi

    pasted = base * (1 - hard[..., None]) + warp_crop_to_roi(crop, m, roi, border=cv2.BORDER_REPLICATE) * hard[..., None]
    g = gradient_magnitude(pasted)
    assert g[ring].mean() > 1.5 * g[inside].mean(), "the seam measure must see a hard paste"


def test_colour_match_closes_the_mean_difference():
    photo = textured_photo(seed=4)
    _, m, roi, region = face_setup()
    base = in_roi(photo, roi)
    rng = np.random.default_rng(5)
    crop = np.clip(np.array([200.0, 80.0, 160.0]) + rng.normal(0, 10, (RES, RES, 3)), 0, 255).astype(np.float32)
    _, inside = boundary_and_inside(region, roi)
    gaps = {}
    for colour in ("none", "lab", "lab-local"):
        out, _ = Compositor(CompositingConfig(colour=colour)).composite(base, crop, m, roi, region)
        gaps[colour] = np.abs(out[inside].mean(0) - base[inside].mean(0)).max()
    assert gaps["none"] > 40
    assert gaps["lab"] < 0.15 * gaps["none"] and gaps["lab-local"] < 0.15 * gaps["none"], gaps


def test_match_colour_sets_lab_moments():
    rng = np.random.default_rng(6)
    ref = np.clip(rng.normal([150, 110, 90], 20, (50, 50, 3)), 0, 255).astype(np.float32)
    new = np.clip(rng.normal([90, 140, 170], 8, (50, 50, 3)), 0, 255).astype(np.float32)
    inside = np.ones((50, 50), bool)
    out = match_colour(new, ref, inside, 0.0)
    lab = lambda x: cv2.cvtColor(np.clip(x, 0, 255).astype(np.float32) / 255, cv2.COLOR_RGB2Lab).reshape(-1, 3)  # noqa: E731
    np.testing.assert_allclose(lab(out).mean(0), lab(ref).mean(0), atol=1.5)


def test_detail_transfer_keeps_the_photos_texture():
    """A smooth 64 px face enlarged into a 240 px face: without detail transfer the region loses
    its fine texture (the texture figure of anoncli.metrics.texture), with it keeps most of it."""
    photo = textured_photo(seed=7)
    _, m, roi, region = face_setup(face_px=240)
    y, x = np.mgrid[0:RES, 0:RES].astype(np.float32)
    crop = np.stack([120 + 30 * np.sin(x / 9), 100 + 20 * np.cos(y / 7), 90 + x], 2).astype(np.float32)
    base = in_roi(photo, roi)
    mask = region.hard_mask(roi)
    ratios = {}
    for sigma in (0.0, 1.0):
        out, _ = Compositor(CompositingConfig(detail_sigma=sigma, colour="none")).composite(base, crop, m, roi, region)
        ratios[sigma] = texture_ratio(out, base, mask)
    assert ratios[0.0] < 0.3 and ratios[1.0] > 0.8, ratios


def test_outline_raises_the_brows_and_keeps_the_jaw():
    pts = MEAN_OUTLINE_112
    flat = outline_polygon(pts, 0.0)
    raised = outline_polygon(pts, 0.25)
    np.testing.assert_array_equal(flat[:17], pts[:17])
    np.testing.assert_allclose(flat[17:], pts[17:27][::-1])
    assert (raised[17:, 1] < flat[17:, 1] - 10).all(), "the brows move toward the forehead"
    inset = outline_polygon(pts, 0.25, jaw_inset=0.1)
    width = np.linalg.norm(pts[16] - pts[0])
    np.testing.assert_allclose(np.linalg.norm(inset[:17] - pts[:17], axis=1), 0.1 * width)
    centre = pts[:27].mean(0)
    assert (np.linalg.norm(inset[:17] - centre, axis=1) < np.linalg.norm(pts[:17] - centre, axis=1)).all()
    np.testing.assert_array_equal(inset[17:], raised[17:])
    with pytest.raises(ValueError):
        outline_polygon(pts[:10], 0.2)
    per_point = np.full(10, 0.25)
    per_point[0] = 0.5
    np.testing.assert_array_equal(outline_polygon(pts, np.full(10, 0.25)), raised)
    uneven = outline_polygon(pts, per_point)
    np.testing.assert_array_equal(uneven[:-1], raised[:-1])
    assert uneven[-1, 1] < raised[-1, 1] - 10, "brow point 17 (the polygon's last) rises alone"
    with pytest.raises(ValueError):
        outline_polygon(pts, np.full(9, 0.25))


def test_landmarks_mask_covers_eyes_to_mouth_and_not_the_corners():
    m = face_mask(128, "landmarks", 0.02, MARGIN)
    for x, y in template_points(128, MARGIN).round().astype(int):
        assert m[y, x] > 0.99
    assert m[0, 0] == 0 and m[-1, -1] == 0 and m[0, -1] == 0 and m[-1, 0] == 0
    outline = mean_outline_in_crop(128, MARGIN)
    assert outline.min() > 0 and outline.max() < 128


def test_dense_landmarks_agree_with_the_detector_on_real_faces():
    """dlib's 68 points predicted from the five detector landmarks land on the face: their eye
    centres, nose tip and mouth corners within a tenth of the eye distance of the detector's (median
    over ten CelebA crops), the chin below the mouth."""
    from anoncli.faces.compositing import landmark_disagreement
    from anoncli.faces.detectors import create_detector

    crops = sorted((SHARED / "data" / "celeba-crops" / "images").glob("*.jpg"))[:10]
    if not crops:
        pytest.skip("the shared CelebA crops are not available")
    detector = create_detector("retinaface-onnx")
    gaps = []
    for path in crops:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        det = max(detector.detect([rgb])[0], key=lambda d: d.size)
        pts = predict_landmarks68(rgb, det.landmarks)
        gaps.append(landmark_disagreement(pts, det.landmarks))
        assert pts[8, 1] > det.landmarks[3:, 1].max(), "the chin is below the mouth"
    assert np.median(gaps) < 0.1, gaps


def test_failed_dense_landmarks_fall_back_to_the_mean_outline(monkeypatch):
    """When the 68 points disagree with the detector's five (the predictor failed on an extreme
    expression or pose: eyes on the brows), the region is the mean outline placed by the five."""
    from anoncli.faces import compositing
    from anoncli.faces.compositing import LANDMARK_DISAGREEMENT, landmark_disagreement

    rgb = textured_photo().astype(np.uint8)
    lm, m, roi, good = face_setup()
    iod = np.linalg.norm(lm[1] - lm[0])
    right = np.array(good.landmarks68)
    right[36:48] = lm[[0] * 6 + [1] * 6]          # eye contours centred on the detector's eyes
    right[30], right[48], right[54] = lm[2], lm[3], lm[4]
    assert landmark_disagreement(right, lm) < 1e-9
    wrong = right + [0.0, -0.3 * iod]              # everything a third of an eye distance too high
    assert landmark_disagreement(wrong, lm) > LANDMARK_DISAGREEMENT
    full = (0, 0, rgb.shape[1], rgb.shape[0])
    for predicted, source in ((right, "landmarks68"), (wrong, "mean-outline")):
        monkeypatch.setattr(compositing, "predict_landmarks68", lambda *a, p=predicted, **k: p)
        region = Compositor(CompositingConfig()).locate(rgb, full, lm, m, RES, MARGIN)
        assert region.source == source
        assert (region.landmarks68 is None) == (source == "mean-outline")
        mask = region.hard_mask(full)
        for x, y in lm.round().astype(int):
            assert mask[y, x] == 1


class _InvertMethod(FaceMethod):
    """A reversible numpy method composited through a Compositor: 255 - crop, undone by itself."""

    resolution = RES
    margin = MARGIN

    def __init__(self, config):
        super().__init__()
        self.compositor = Compositor(config)

    def anonymize_face(self, crop, landmarks_in_crop, key=None):
        from anoncli.methods.base import AnonymizedFace

        return AnonymizedFace(255.0 - crop, key_record={"kept": [1.5]})

    def restore_crop(self, crop, landmarks_in_crop, key, face_params, *, region_in_crop=None, blend_in_crop=None, read_back=None):
        self.restored_into = (region_in_crop, blend_in_crop)
        self.restored_with = face_params
        return 255.0 - crop

    def blend_mask(self, landmarks_in_crop):
        return face_mask(self.resolution, "landmarks", 0.02, self.margin)

    def key_params(self, key):
        return {}

    def absolute_params(self, scale):
        return {}

    def guarantee(self):
        return None

    def restore_quality(self, *a):
        return 0.0


@pytest.mark.parametrize("forehead_raise", [0.0, 0.5])
def test_stage_anonymize_and_restore_use_the_same_region(forehead_raise):
    """Through anonymize_faces on a real photo: outside the predicted region bit-identical, the
    keyfile secret holds the dense landmarks (and, with --forehead-raise, the brow raises read from
    the photo) and an escrow box covering every changed pixel; restore with those changes nothing
    outside the region and brings the face back."""
    from anoncli.faces.detectors import create_detector
    from anoncli.faces.stage import anonymize_faces, restore_faces
    from anoncli.io.images import LoadedImage
    from anoncli.pipeline import key_record

    path = SHARED / "data" / "celeba-wild" / "images" / "003410.jpg"   # a frontal face, 270 px
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    dets = [max(create_detector("retinaface-onnx").detect([rgb])[0], key=lambda d: d.size)]
    method = _InvertMethod(CompositingConfig(colour="none", forehead_raise=forehead_raise))
    img = LoadedImage(rgb.copy(), "RGB", "PNG")
    key = type("Key", (), {"secret": b"k" * 32})()
    records, secrets = anonymize_faces(img, dets, method, lambda i: key, escrow=True)
    assert len(secrets) == 1 and secrets[0].landmarks68 is not None and len(secrets[0].landmarks68) == 68
    assert secrets[0].params == {"kept": [1.5]} and "kept" not in repr(records)   # the keyfile's, not the manifest's
    changed = (img.pixels != rgb).any(2)
    x0, y0, x1, y1 = secrets[0].escrow_box
    assert changed.any() and not changed[:y0].any() and not changed[y1:].any()
    assert not changed[:, :x0].any() and not changed[:, x1:].any()
    full = (0, 0, rgb.shape[1], rgb.shape[0])
    brow_line = FaceRegion.from_landmarks(np.asarray(secrets[0].landmarks68), 0.25)
    if forehead_raise:
        raises = secrets[0].brow_raises
        assert raises is not None and len(raises) == 10 and min(raises) >= 0.25 and max(raises) > 0.25
        record = key_record(type("Rec", (), {"input": "x", "input_sha256": "0"})(), secrets)
        assert record.meta["faces"][0]["brow_raises"] == raises
        region = FaceRegion.from_landmarks(np.asarray(secrets[0].landmarks68), np.asarray(raises))
        assert region.hard_mask(full).sum() > brow_line.hard_mask(full).sum()
        assert changed[region.hard_mask(full) > brow_line.hard_mask(full)].any(), "the forehead above the brow line changed"
    else:
        assert secrets[0].brow_raises is None
        region = brow_line
    outside = region.hard_mask(full) == 0
    np.testing.assert_array_equal(img.pixels[outside], rgb[outside])

    anonymized = img.pixels.copy()
    face = {"index": 0, "warp": secrets[0].warp, "landmarks": secrets[0].landmarks, "params": secrets[0].params,
            "landmarks68": secrets[0].landmarks68, "brow_raises": secrets[0].brow_raises}
    restore_faces(img, [face], method, {0: key})
    assert method.restored_with == {"kept": [1.5]}
    np.testing.assert_array_equal(img.pixels[outside], rgb[outside])
    # the restored crop is made for the compositing restore puts it back with: its region and bands
    warp, region_in_crop, blend_in_crop = np.asarray(secrets[0].warp), *method.restored_into
    np.testing.assert_array_equal(region_in_crop, region.crop_mask(warp, RES, method.region_feather))
    expected = method.compositor.crop_blend(region, warp, RES)
    assert blend_in_crop.band_sigmas == expected.band_sigmas and blend_in_crop.scale == pytest.approx(expected.scale)
    np.testing.assert_array_equal(blend_in_crop.band_masks, expected.band_masks)
    forehead = (region.hard_mask(full) > brow_line.hard_mask(full)) & (anonymized != rgb).any(2)
    if forehead_raise:   # restore composed into the raised region too, not only up to the brow line
        assert (img.pixels[forehead] != anonymized[forehead]).any(1).mean() > 0.5
    # inside the widest transition: a soft blend of anonymized and original pixels is not invertible
    inside = cv2.distanceTransform(region.hard_mask(full), cv2.DIST_L2, 5) > method.compositor.config.blend_width * region.width
    err_anon = np.abs(anonymized[inside].astype(int) - rgb[inside]).mean()
    err_restored = np.abs(img.pixels[inside].astype(int) - rgb[inside]).mean()
    assert err_restored < 0.25 * err_anon, (err_restored, err_anon)


@pytest.mark.parametrize("shape", ["ellipse", "hull"])
def test_five_landmark_shapes_composite_inside_their_mask(shape):
    """--shape ellipse|hull: the region is face_mask's shape mapped into the photo; nothing outside changes."""
    photo = textured_photo(seed=8)
    lm, m, roi, _ = face_setup()
    compositor = Compositor(CompositingConfig(shape=shape))
    region = compositor.locate(photo.astype(np.uint8), roi, lm, m, RES, MARGIN)
    assert region.source == shape and region.landmarks68 is None
    crop = np.full((RES, RES, 3), 30.0, np.float32)
    base = in_roi(photo, roi)
    out, support = compositor.composite(base, crop, m, roi, region)
    np.testing.assert_array_equal(out[support == 0], base[support == 0])
    crop_hard = face_mask(RES, shape, 0.0, MARGIN, apply_affine(m, lm)) > 0.5
    from anoncli.faces.blend import warp_crop_to_roi

    allowed = warp_crop_to_roi(cv2.dilate(crop_hard.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32), m, roi) > 0
    assert not (support > 0)[~allowed].any(), "the region stays within the crop-space shape"
    x0, y0 = roi[:2]
    for x, y in (lm - [x0, y0]).round().astype(int):
        assert support[y, x] == 1


def test_restore_keeps_the_photos_detail_finer_than_detail_sigma_and_not_its_colour():
    """Restoring composites a model's smooth face without colour matching but low-passed like the
    anonymizing change: the protected photo's detail finer than ``detail_sigma`` (the original's own,
    which anonymizing kept) stays, the more of it the larger ``detail_sigma``; the restored face's
    colour arrives unmatched."""
    photo = textured_photo(seed=7)
    _, m, roi, region = face_setup(face_px=46)   # about one crop px per photo px: the grain is at the crop's scale
    y, x = np.mgrid[0:RES, 0:RES].astype(np.float32)
    crop = np.stack([200 + 10 * np.sin(x / 9), 60 + 10 * np.cos(y / 7), 90 + x], 2).astype(np.float32)
    base = in_roi(photo, roi)
    mask = region.hard_mask(roi)

    def restored(sigma):
        return Compositor(CompositingConfig(detail_sigma=sigma, colour="lab")).composite(base, crop, m, roi, region, match_colour=False)[0]

    kept = {sigma: texture_ratio(restored(sigma), base, mask) for sigma in (0.0, 0.5, 1.0)}
    assert kept[1.0] > 1.2 * kept[0.5] and kept[0.5] > 1.1 * kept[0.0], kept
    anonymized, _ = Compositor(CompositingConfig(detail_sigma=1.0, colour="lab")).composite(base, crop, m, roi, region)
    core = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    red = {"restored": float(restored(1.0)[..., 0][core].mean()), "anonymized": float(anonymized[..., 0][core].mean())}
    assert red["restored"] > 185 > red["anonymized"] + 20, red   # the crop's red, not matched to the photo's


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_read_back_is_what_the_written_file_shows(fmt):
    """The ``read_back`` the stage hands a method (anonymizing and restoring) gives, for the crop the
    method returns, the crop a reader extracts from the file as the run writes it: the compositing,
    the samples' rounding and, for a JPEG (the input's tables, 4:2:0), its encoding, done on a part
    of the photo aligned to the JPEG's block grid."""
    from anoncli.faces.detectors import create_detector
    from anoncli.faces.stage import anonymize_faces, extract_crop, restore_faces
    from anoncli.io.images import encode_image, load_image

    path = SHARED / "data" / "celeba-wild" / "images" / "003410.jpg"
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    photo = load_image(path.read_bytes(), 10 ** 8)
    if fmt == "PNG":
        photo = type(photo)(photo.pixels, "RGB", "PNG")
    dets = [max(create_detector("retinaface-onnx").detect([photo.pixels])[0], key=lambda d: d.size)]
    method = _InvertMethod(CompositingConfig())
    handed = []
    method.anonymize_many = lambda requests: handed.extend(requests) or [method.anonymize_face(r.crop, r.landmarks_in_crop) for r in requests]
    key = type("Key", (), {"secret": b"k" * 32})()
    anonymize_faces(type(photo)(photo.pixels.copy(), photo.mode, photo.format, photo.save_options), dets, method, lambda i: key)
    assert handed.pop().read_back is None   # built only for a method whose fits read the written photo
    method.reads_back = True
    img = type(photo)(photo.pixels.copy(), photo.mode, photo.format, photo.save_options)
    records, secrets = anonymize_faces(img, dets, method, lambda i: key)
    warp = np.asarray(secrets[0].warp)
    roi = crop_bounds_in_image(warp, RES, img.height, img.width)

    def read(image):
        return extract_crop(load_image(encode_image(image), 10 ** 8), warp, RES, roi)

    written = read(img)
    assert np.abs(handed[0].read_back(255.0 - handed[0].crop) - written).max() <= 1e-3
    if fmt == "JPEG":   # the encoding matters: without it the prediction would be off
        assert np.abs(extract_crop(img, warp, RES, roi) - written).mean() > 0.1

    back_handed = []
    restore_crop = method.restore_crop
    method.restore_crop = lambda *a, **k: back_handed.append(k["read_back"]) or restore_crop(*a, **k)
    anonymized = read(img)
    protected = load_image(encode_image(img), 10 ** 8)
    face = {"index": 0, "warp": secrets[0].warp, "landmarks": secrets[0].landmarks, "params": {},
            "landmarks68": secrets[0].landmarks68, "brow_raises": secrets[0].brow_raises}
    restore_faces(protected, [face], method, {0: key})
    assert np.abs(back_handed[0](255.0 - anonymized) - read(protected)).max() <= 1e-3
