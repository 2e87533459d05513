"""Realism measures of `anoncli report` (issue 20): KID maths, texture figure, face ellipse, the
feature networks and the CenterFace detector, against closed forms and real faces."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from anoncli.metrics import kid, texture


# -- KID ------------------------------------------------------------------------------------

def test_polynomial_kernel_closed_form():
    x = np.array([[1.0, 2.0], [0.0, -1.0]])
    y = np.array([[3.0, 1.0]])
    # (x.y / d + 1)^3 with d = 2: (5/2 + 1)^3 and (-1/2 + 1)^3
    np.testing.assert_allclose(kid.polynomial_kernel(x, y), [[3.5 ** 3], [0.5 ** 3]])


def test_mmd2_unbiased_hand_computed():
    # d = 1, k(a, b) = (ab + 1)^3.  X = {1, 2}: k(1,2) = 27.  Y = {0, 1}: k(0,1) = 1.
    # Cross terms k(1,0) = 1, k(1,1) = 8, k(2,0) = 1, k(2,1) = 27: mean 37/4.  27 + 1 - 2 * 9.25 = 9.5
    assert kid.mmd2_unbiased([[1.0], [2.0]], [[0.0], [1.0]]) == pytest.approx(9.5)


def test_mmd2_unbiased_equals_explicit_feature_map():
    """The cubic kernel in 1-d is phi(x).phi(y) with phi = (1, sqrt3 x, sqrt3 x^2, x^3): the
    U-statistic written with phi sums must agree to rounding."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(37, 1)), rng.normal(0.5, 1.3, size=(23, 1))

    def phi(v):
        v = v[:, 0]
        return np.stack([np.ones_like(v), np.sqrt(3) * v, np.sqrt(3) * v ** 2, v ** 3], 1)

    def within(p):
        s = p.sum(0)
        return (s @ s - (p * p).sum()) / (len(p) * (len(p) - 1))

    px, py = phi(x), phi(y)
    expected = within(px) + within(py) - 2 * (px.sum(0) @ py.sum(0)) / (len(px) * len(py))
    assert kid.mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10)


def test_mmd2_unbiased_converges_to_population_value():
    """k(x, y) = 1 + 3xy + 3x^2y^2 + x^3y^3 (d = 1), so the population MMD^2 between N(0, 1) and
    N(1, 1) is 3 (m1 - n1)^2 + 3 (m2 - n2)^2 + (m3 - n3)^2 = 3 + 3 + 16 = 22 (moments 0, 1, 0 and
    1, 2, 4). The estimator is unbiased: the mean over replicates is 22 within its error."""
    rng = np.random.default_rng(0)
    values = [kid.mmd2_unbiased(rng.normal(size=(400, 1)), rng.normal(1.0, 1.0, size=(400, 1))) for _ in range(60)]
    mean, sem = float(np.mean(values)), float(np.std(values) / math.sqrt(len(values)))
    assert abs(mean - 22.0) < 4 * sem + 0.05, (mean, sem)


def test_mmd2_unbiased_same_distribution_is_zero_on_average_and_can_be_negative():
    rng = np.random.default_rng(2)
    values = np.array([kid.mmd2_unbiased(rng.normal(size=(60, 8)), rng.normal(size=(60, 8))) for _ in range(200)])
    assert abs(values.mean()) < 4 * values.std() / math.sqrt(len(values))
    assert (values < 0).any() and (values > 0).any()


def test_random_halves_keep_groups_together_and_balanced():
    rng = np.random.default_rng(3)
    groups = [i // 3 for i in range(60)] + [100 + i for i in range(15)]
    for _ in range(20):
        in_a = kid.random_halves(groups, rng)
        for g in set(groups):
            members = {bool(in_a[i]) for i, h in enumerate(groups) if h == g}
            assert len(members) == 1
        assert abs(int(in_a.sum()) - int((~in_a).sum())) <= 3


def test_kid_of_the_originals_themselves_is_the_floor_scale():
    """anonymized == original: each split's KID is its real-vs-real value, so the KID is their
    mean, and |ratio| <= 1 (mean over root mean square)."""
    rng = np.random.default_rng(4)
    real = rng.normal(size=(120, 16))
    r = kid.kid_against_floor(real, real.copy(), splits=30)
    assert r.kid == pytest.approx(r.real_vs_real)
    assert r.floor > 0 and abs(r.ratio) <= 1.0
    assert r.half_a + r.half_b == 120 and r.splits == 30


def test_kid_ratio_grows_with_the_distribution_gap():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(200, 16))
    ratios = [kid.kid_against_floor(real + shift, real, splits=20).ratio for shift in (0.0, 0.3, 1.0)]
    assert ratios[0] < 3 < ratios[1] < ratios[2]


def test_kid_subsets_large_halves():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(90, 4))
    r = kid.kid_against_floor(real + 1.0, real, splits=5, subset_size=20)
    assert r.half_a == 20 and r.half_b == 20 and r.kid > 0


def test_kid_rejects_bad_input():
    with pytest.raises(ValueError):
        kid.kid_against_floor(np.zeros((10, 3)), np.zeros((9, 3)))
    with pytest.raises(ValueError):
        kid.kid_against_floor(np.zeros((10, 3)), np.zeros((10, 3)), groups=["a"] * 10)
    with pytest.raises(ValueError):
        kid.kid_against_floor(np.full((10, 3), np.nan), np.zeros((10, 3)))


# -- texture --------------------------------------------------------------------------------

def _discrete_gain(sigma: float, omega: float) -> float:
    """Gain at angular frequency omega of OpenCV's sampled Gaussian for float images
    (size round(8 sigma + 1) | 1): sum_k g_k cos(k omega)."""
    size = int(round(sigma * 8 + 1)) | 1
    g = cv2.getGaussianKernel(size, sigma, cv2.CV_64F)[:, 0]
    k = np.arange(size) - size // 2
    return float((g * np.cos(k * omega)).sum())


def test_high_frequency_energy_of_a_sinusoid():
    """A vertical grating A sin(omega x) passes the DoG with gain G(0.5) - G(1.5); its mean
    square over whole periods is A^2/2 times the squared gain."""
    omega, amplitude = 2 * np.pi / 8, 40.0
    x = np.arange(160)
    grey = np.tile(128 + amplitude * np.sin(omega * x), (64, 1))
    mask = np.zeros(grey.shape, bool)
    mask[16:48, 16:144] = True   # away from the borders, 16 whole periods
    gain = _discrete_gain(texture.FINE_SIGMA, omega) - _discrete_gain(texture.COARSE_SIGMA, omega)
    expected = amplitude ** 2 / 2 * gain ** 2
    assert texture.high_frequency_energy(grey, mask) == pytest.approx(expected, rel=1e-3)


def test_texture_ratio_closed_forms():
    rng = np.random.default_rng(7)
    original = rng.integers(0, 256, (80, 80, 3)).astype(np.float32)
    mask = np.zeros((80, 80), bool)
    mask[10:70, 10:70] = True
    assert texture.texture_ratio(original, original, mask) == pytest.approx(1.0)
    # Contrast c and any offset: band-pass energy scales by c^2.
    assert texture.texture_ratio(0.5 * original + 64, original, mask) == pytest.approx(0.25, rel=1e-5)
    flat = np.full_like(original, 100.0)
    assert texture.texture_ratio(flat, original, mask) == pytest.approx(0.0, abs=1e-9)
    blurred = cv2.GaussianBlur(original, (0, 0), 2.0)
    assert texture.texture_ratio(blurred, original, mask) < 0.05


FRONTAL = np.array([[80.0, 90.0], [120.0, 90.0], [100.0, 112.0], [84.0, 130.0], [116.0, 130.0]])


def test_face_ellipse_geometry():
    (cx, cy), (a, b), angle = texture.face_ellipse(FRONTAL)
    # eyes' midpoint (100, 90), mouth's (100, 130): h = 40, D = 40
    assert (cx, cy) == pytest.approx((100.0, 90 + 0.75 * 40))
    assert (a, b) == pytest.approx((0.95 * 40, 1.10 * 40)) and angle == pytest.approx(0.0)
    mask = texture.face_region_mask((200, 200), FRONTAL)
    assert mask.sum() == pytest.approx(math.pi * a * b, rel=0.02)
    for x, y in FRONTAL:
        assert mask[int(y), int(x)]
    assert not mask[5, 5] and not mask[195, 100]
    # A face turned by 90 degrees: the ellipse turns with it.
    turned = np.stack([200 - FRONTAL[:, 1], FRONTAL[:, 0]], 1)
    (_, _), (a2, b2), angle2 = texture.face_ellipse(turned)
    assert (a2, b2) == pytest.approx((a, b)) and abs(abs(angle2) - 90) < 1e-6
    with pytest.raises(ValueError):
        texture.face_ellipse(np.zeros((5, 2)))


def test_face_texture_ratio_matches_the_whole_image_computation():
    rng = np.random.default_rng(8)
    original = cv2.GaussianBlur(rng.integers(0, 256, (200, 200, 3)).astype(np.uint8), (0, 0), 0.7)
    anonymized = cv2.GaussianBlur(original, (0, 0), 1.2)
    mask = texture.face_region_mask(original.shape, FRONTAL)
    whole = texture.texture_ratio(anonymized, original, mask)
    assert texture.face_texture_ratio(anonymized, original, FRONTAL) == pytest.approx(whole, rel=1e-5)
    assert whole < 0.5


# -- in a report ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blurred_and_identical(tmp_path_factory):
    """A blur run of 12 real photos, and the same run with its outputs replaced by the originals."""
    import shutil
    import subprocess
    import sys

    from conftest import FACES

    files = sorted(FACES.glob("*.jpg"))[:12] if FACES.is_dir() else []
    if len(files) < 12:
        pytest.skip(f"real face images not available in {FACES}")
    root = tmp_path_factory.mktemp("realism")
    (root / "in").mkdir()
    for f in files:
        shutil.copy(f, root / "in" / f.name)
    r = subprocess.run([sys.executable, "-m", "anoncli", "anonymize", str(root / "in"), "-o", str(root / "blur"), "-q",
                        "-j", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    shutil.copytree(root / "blur", root / "same")
    for f in files:
        shutil.copy(f, root / "same" / f.name)
    return root


def _report(run, cache):
    from anoncli.report.build import build_report

    pytest.importorskip("dlib", reason="the privacy part of this report uses dlib: pip install 'anoncli[eval]'")
    return build_report(run, evaluator_names=("dlib",), cache_dir=cache, progress=False, workers=1)


def test_report_realism_of_the_originals_themselves(blurred_and_identical):
    import base64
    import io

    from PIL import Image

    root = blurred_and_identical
    report = _report(root / "same", root / "cache")
    rz = report["realism"]
    assert rz["texture"]["available"] and rz["texture"]["n"] == report["counts"]["faces"]
    assert all(f["ratio"] == pytest.approx(1.0) for f in rz["texture"]["per_face"])
    for name in ("dlib/mid", "dlib/last"):
        k = rz["kid"][name]
        assert k["available"], k
        assert k["kid"] == pytest.approx(k["real_vs_real"]) and abs(k["ratio"]) <= 1.0 + 1e-9
    det = rz["detection"]
    if det["available"]:
        assert det["anonymized"] == det["original"] and det["mean_score_anonymized"] == pytest.approx(det["mean_score_original"])
    # Examples at the photo's resolution: the PNG holds the file's own pixels.
    ex = report["examples"][0]
    assert ex["native"] and ex["original"].startswith("data:image/png;base64,")
    cut = np.asarray(Image.open(io.BytesIO(base64.b64decode(ex["original"].split(",", 1)[1]))).convert("RGB"))
    photo = np.asarray(Image.open(root / "in" / ex["input"]).convert("RGB"))
    assert cut.shape[:2] == (ex["height"], ex["width"])
    found = [(y, x) for y in range(photo.shape[0] - cut.shape[0] + 1) for x in range(photo.shape[1] - cut.shape[1] + 1)
             if np.array_equal(photo[y:y + 4, x:x + 4], cut[:4, :4])]
    assert any(np.array_equal(photo[y:y + cut.shape[0], x:x + cut.shape[1]], cut) for y, x in found)


def test_report_realism_sees_blur(blurred_and_identical):
    from anoncli.report.html import render_html
    from anoncli.report.realism import summary_lines

    root = blurred_and_identical
    same = _report(root / "same", root / "cache")["realism"]
    report = _report(root / "blur", root / "cache")
    blur = report["realism"]
    assert blur["texture"]["median"] < 0.3
    assert blur["kid"]["dlib/mid"]["ratio"] > 5 * max(1.0, same["kid"]["dlib/mid"]["ratio"])
    assert blur["kid"]["dlib/mid"]["kid"] > blur["kid"]["dlib/mid"]["floor"]
    lines = summary_lines(report)
    assert any(line.startswith("realism KID dlib/mid") for line in lines) and any("texture: median" in line for line in lines)
    html = render_html(report)
    assert 'id="realism"' in html and "KID / floor" in html and 'class="examples cols-2 native"' in html


def test_realism_section_from_measured_faces():
    """The section's assembly without any model: identities kept on one side, Inception's FID
    features used as its space, a network without weights listed with its reason."""
    from anoncli.report.build import FaceItem
    from anoncli.report.realism import realism_section, summary_lines

    rng = np.random.default_rng(9)
    faces = []
    for i in range(40):
        f = FaceItem(f"{i}.jpg", 0, [0, 0, 10, 10], [], "sha")
        real = rng.normal(size=640)
        f.realism = {"original": {"dlib": real}, "anonymized": {"dlib": real + 3.0}}
        f.inception = {"original": rng.normal(size=2048), "anonymized": rng.normal(size=2048)}
        f.texture = 0.5 + 0.01 * i
        f.centerface = {"original": 0.9, "anonymized": 0.1 if i % 4 == 0 else 0.8}
        faces.append(f)
    labels = {f"{i}.jpg": {"identity": str(i % 8)} for i in range(40)}
    plan = {"dlib": (True, None), "mobilefacenet": (False, "weights missing: get them"), "inception": (True, None)}
    r = realism_section(faces, plan, labels, "identity")
    assert r["kid_method"]["split_by"] == "identity (labels), else image"
    assert r["kid"]["dlib/mid"]["ratio"] > 10 and r["kid"]["dlib/last"]["ratio"] > 10
    assert abs(r["kid"]["inception/pool3"]["ratio"]) < 5     # both sides the same distribution
    assert r["kid"]["mobilefacenet/mid"] == {"network": r["kid"]["mobilefacenet/mid"]["network"], "available": False,
                                             "reason": "weights missing: get them"}
    assert r["texture"]["median"] == pytest.approx(np.median([0.5 + 0.01 * i for i in range(40)]))
    assert r["detection"]["anonymized"] == pytest.approx(0.75) and r["detection"]["original"] == 1.0
    lines = summary_lines({"realism": r})
    assert sum("unavailable" in line for line in lines) == 1   # one line per missing network, not per space
