"""ArcFace IR-SE50 evaluator (facexlib): checkpoint format, alignment, input convention, registry.

The official weights cannot be downloaded here, so the network is exercised with a randomly
initialised facexlib Backbone saved exactly as the official file is (a bare state dict).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import FACE_NAME, FACES

from anoncli import weights
from anoncli.faces.align import ARCFACE_TEMPLATE_112
from anoncli.metrics import arcface_identity as arc
from anoncli.metrics.aligned_embedding import distance
from anoncli.metrics.evaluators import EVALUATORS, evaluator_available

SECOND_FACE_NAME = "000093.jpg"


@pytest.fixture(scope="module")
def random_state_dict_file(tmp_path_factory):
    import torch
    from facexlib.recognition import Backbone

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("arcface") / "recognition_arcface_ir_se50.pth"
    torch.save(Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def evaluator(random_state_dict_file):
    return arc.ArcFaceIdentity(random_state_dict_file)


@pytest.fixture(scope="module")
def real_faces():
    """Two real photographs and the five landmarks of their best detection (the project's detector)."""
    from PIL import Image

    from anoncli.faces.detectors import create_detector

    paths = [FACES / FACE_NAME, FACES / SECOND_FACE_NAME]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"real face images not available ({FACES} is missing; they live in the shared data folder)")
    detector = create_detector("retinaface-onnx")
    faces = []
    for p in paths:
        rgb = np.asarray(Image.open(p).convert("RGB"))
        dets = detector.detect([rgb])[0]
        assert dets, f"no face found in {p.name}"
        faces.append((rgb, max(dets, key=lambda d: d.score).landmarks))
    return faces


@pytest.fixture
def isolated_weights(tmp_path, monkeypatch):
    """Only an empty folder is searched: a copy in the user cache must not change the outcome."""
    monkeypatch.delenv("ANONCLI_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "PROJECT_WEIGHTS_DIR", tmp_path / "project")
    monkeypatch.setattr(weights, "user_cache_dir", lambda: tmp_path / "cache")
    return tmp_path / "given"


def _similarity(angle: float, scale: float, shift) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


# ---------------------------------------------------------------- network and checkpoint


def test_random_state_dict_gives_unit_512d_embeddings_on_real_faces(evaluator, real_faces):
    images = [rgb for rgb, _ in real_faces]
    landmarks = [pts for _, pts in real_faces]
    emb = evaluator.embed(images + images[:1], landmarks + landmarks[:1])
    assert emb.shape == (3, 512) and emb.dtype == np.float32 and np.all(np.isfinite(emb))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[2], emb[0], atol=1e-5)  # identical inputs, identical embeddings
    assert distance(emb[0], emb[0]) == pytest.approx(0.0, abs=1e-6)
    assert distance(emb[0], emb[1]) > 1e-4  # two different photos do not collapse to one point
    assert evaluator.embed([], []).shape == (0, 512)


def test_state_dict_with_a_missing_key_is_refused(random_state_dict_file, tmp_path):
    import torch

    state = torch.load(random_state_dict_file, map_location="cpu", weights_only=True)
    del state["output_layer.3.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(ValueError, match=r"broken\.pth is not facexlib's ArcFace IR-SE50.*output_layer\.3\.weight"):
        arc.ArcFaceIdentity(broken)
    torch.save({"net_state_dict": state}, broken)  # a training checkpoint wrapper is not the official format
    with pytest.raises(ValueError, match=r"broken\.pth is not facexlib's ArcFace IR-SE50"):
        arc.ArcFaceIdentity(broken)


# ---------------------------------------------------------------- preprocessing


def test_alignment_warps_a_face_drawn_at_template_positions_back_onto_the_template():
    # Five bright dots where a similarity (rotation 0.3 rad, scale 2.2, shift) puts the template.
    m_true = _similarity(0.3, 2.2, (60.0, 20.0))
    landmarks = ARCFACE_TEMPLATE_112 @ m_true[:, :2].T + m_true[:, 2]
    h, w = 400, 360
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.zeros((h, w), np.float64)
    for x, y in landmarks:
        image += 250.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0**2))
    crop = arc.align_face(np.clip(image, 0, 255).astype(np.uint8), landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    # Each dot's intensity-weighted centre in the crop lies on its template point.
    cy, cx = np.mgrid[0:112, 0:112].astype(np.float64)
    for tx, ty in ARCFACE_TEMPLATE_112:
        near = ((cx - tx) ** 2 + (cy - ty) ** 2 < 5.0**2) * crop[..., 0].astype(np.float64)
        centre = np.array([(near * cx).sum(), (near * cy).sum()]) / near.sum()
        np.testing.assert_allclose(centre, [tx, ty], atol=0.3)


def test_alignment_at_the_template_is_the_identity_and_rejects_bad_landmarks():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    assert np.abs(arc.align_face(image, ARCFACE_TEMPLATE_112).astype(int) - image).max() <= 1
    # The standard insightface template, used as 0-based pixel coordinates (no MATLAB shift).
    np.testing.assert_array_equal(ARCFACE_TEMPLATE_112[0], [38.2946, 51.6963])
    with pytest.raises(ValueError):
        arc.align_face(image, np.zeros((4, 2)))
    with pytest.raises(ValueError):
        arc.align_face(image, np.full((5, 2), np.nan))


def test_network_input_is_bgr_scaled_to_minus_one_one():
    crops = np.zeros((1, 112, 112, 3), np.uint8)
    crops[..., 0], crops[..., 1], crops[..., 2] = 255, 0, 51  # R, G, B
    x = arc.to_network_input(crops)
    assert x.shape == (1, 3, 112, 112) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 5, 7], [51 / 127.5 - 1, -1.0, 1.0], atol=1e-6)  # B, G, R


def test_literature_threshold_is_the_sources_squared_l2_threshold_as_cosine_distance():
    assert arc.LITERATURE_THRESHOLD == pytest.approx(1.54 / 2)
    assert EVALUATORS["arcface"].literature_threshold == arc.LITERATURE_THRESHOLD
    a, b = np.random.default_rng(1).normal(size=(2, 512))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    assert np.sum((a - b) ** 2) == pytest.approx(2 * distance(a, b))


# ---------------------------------------------------------------- registry and evaluator


def test_registry_entry_and_missing_weights_are_reported(isolated_weights):
    entry = weights.REGISTRY[arc.WEIGHTS_NAME]
    assert entry.filename == "recognition_arcface_ir_se50.pth"
    assert entry.url == "https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth"
    assert entry.sha256 == "a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28"
    assert entry.package is None
    assert weights.locate(arc.WEIGHTS_NAME, isolated_weights) == (None, [])
    with pytest.raises(weights.WeightsMissing, match="anoncli weights fetch facexlib-arcface-ir-se50"):
        arc.ArcFaceIdentity.from_registry(isolated_weights)
    spec = EVALUATORS["arcface"]
    assert (spec.summary, spec.metric, spec.weights) == ("ArcFace IR-SE50 (facexlib, MS1M)", "cosine", (arc.WEIGHTS_NAME,))
    ok, reason = evaluator_available("arcface", str(isolated_weights))
    assert not ok and "facexlib-arcface-ir-se50" in reason and "anoncli weights" in reason


def test_evaluator_loads_through_the_registry(random_state_dict_file, isolated_weights, monkeypatch, real_faces):
    # The random file stands in for the official one: the registry is told its sha256.
    isolated_weights.mkdir()
    (isolated_weights / "recognition_arcface_ir_se50.pth").symlink_to(random_state_dict_file)
    entry = dataclasses.replace(weights.REGISTRY[arc.WEIGHTS_NAME], sha256=weights.sha256_of(random_state_dict_file))
    monkeypatch.setitem(weights.REGISTRY, arc.WEIGHTS_NAME, entry)
    assert evaluator_available("arcface", str(isolated_weights)) == (True, None)
    model = EVALUATORS["arcface"].load(str(isolated_weights))
    rgb, pts = real_faces[0]
    emb = model.embed(rgb, [{"box": [0, 0, 1, 1], "landmarks": pts.tolist()}])
    assert emb.shape == (1, 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert model.embed(rgb, []).shape == (0, 512)
