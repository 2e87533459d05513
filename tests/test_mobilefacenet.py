"""MobileFaceNet evaluator: network layout vs the checkpoint, alignment, verification maths,
and face verification on real CelebA crops (skipped where the shared folder is absent)."""
from __future__ import annotations

import csv
import math
from collections import defaultdict

import numpy as np
import pytest
from conftest import SHARED

from anoncli.metrics import mobilefacenet_identity as mfn
from anoncli.metrics.aligned_embedding import distance
from anoncli.metrics.verification import roc_auc, threshold_at_far

WEIGHTS = SHARED / "weights" / "mobilefacenet_arcface_casia.ckpt"
CROPS = SHARED / "data" / "celeba-crops"
N_IDENTITIES, PER_IDENTITY, TRIED_PER_IDENTITY = 100, 3, 5
MIN_AUC = 0.95


def weights_file():
    if not WEIGHTS.is_file():
        pytest.skip(f"MobileFaceNet checkpoint not available ({WEIGHTS} is missing; it lives in the shared weights folder)")
    return WEIGHTS


# ---------------------------------------------------------------- verification maths


def _pairwise_auc(scores, labels):
    s, y = np.asarray(scores, float), np.asarray(labels)
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_roc_auc_closed_forms():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.8, 0.9, 0.1, 0.2], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5] * 6, [0, 1, 0, 1, 1, 0]) == 0.5
    # 3 of the 4 (positive, negative) pairs are ordered correctly.
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # One tie among 2 x 2 pairs counts a half: (1 + 1 + 0.5 + 1) / 4.
    assert roc_auc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == 0.875


def test_roc_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 7, 300).astype(float)  # many ties
    labels = rng.integers(0, 2, 300)
    assert roc_auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels), abs=1e-12)


def test_roc_auc_binormal_closed_form():
    # Positives N(1, 1), negatives N(0, 1): AUC = Phi(1 / sqrt(2)) = 0.5 (1 + erf(1 / 2)).
    rng = np.random.default_rng(1)
    n = 20_000
    scores = np.r_[rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)]
    labels = np.r_[np.ones(n), np.zeros(n)]
    assert roc_auc(scores, labels) == pytest.approx(0.5 * (1 + math.erf(0.5)), abs=0.01)


def test_roc_auc_rejects_bad_input():
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError):
        roc_auc([0.1, float("nan")], [0, 1])


def test_threshold_at_far_closed_forms():
    d = np.arange(100) / 100.0  # 0.00, 0.01, ..., 0.99, shuffled order must not matter
    shuffled = np.random.default_rng(2).permutation(d)
    for far in (0.0, 0.01, 0.1, 0.29, 0.5, 0.99):
        t = threshold_at_far(shuffled, far)
        assert t == pytest.approx(round(far * 100) / 100.0)
        assert (d < t).sum() <= far * 100 + 1e-9  # accepted impostors stay within the FAR
        assert (d <= t).sum() > far * 100  # and a larger threshold would exceed it
    assert threshold_at_far(d, 1.0) == float("inf")
    assert threshold_at_far([0.5] * 10, 0.5) == 0.5  # ties: nothing lies strictly below
    # Uniform impostor distances on [0, 1]: the threshold at FAR f tends to f.
    u = np.random.default_rng(3).uniform(0, 1, 100_000)
    assert threshold_at_far(u, 0.05) == pytest.approx(0.05, abs=0.003)
    with pytest.raises(ValueError):
        threshold_at_far([], 0.1)
    with pytest.raises(ValueError):
        threshold_at_far([0.1], 1.5)


def test_cosine_distance():
    assert distance([1.0, 0.0], [3.0, 0.0]) == pytest.approx(0.0)
    assert distance([1.0, 0.0], [0.0, 2.0]) == pytest.approx(1.0)
    assert distance([1.0, 1.0], [-1.0, -1.0]) == pytest.approx(2.0)
    a = np.array([[1.0, 0.0], [1.0, 0.0]])
    b = np.array([[0.0, 1.0], [math.cos(0.5), math.sin(0.5)]])
    np.testing.assert_allclose(distance(a, b), [1.0, 1.0 - math.cos(0.5)])
    assert mfn.MobileFaceNetIdentity.distance is distance


# ---------------------------------------------------------------- alignment


def test_alignment_maps_landmarks_onto_the_template():
    # Landmarks that are an exact similarity of the template come out exactly on it.
    angle, scale, shift = 0.3, 2.2, np.array([40.0, 25.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    landmarks = mfn.TEMPLATE_112x96 @ (scale * rot).T + shift
    m = mfn.alignment_matrix_112x96(landmarks)
    np.testing.assert_allclose(landmarks @ m[:, :2].T + m[:, 2], mfn.TEMPLATE_112x96, atol=1e-9)
    # The SphereFace template is 1-based (MATLAB); the 0-based one is one pixel up and left.
    np.testing.assert_allclose(mfn.TEMPLATE_112x96[0], [29.2946, 50.6963])


def test_align_face_identity_warp_and_grey_input():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (112, 96, 3), dtype=np.uint8)
    crop = mfn.align_face(image, mfn.TEMPLATE_112x96)
    assert crop.shape == (112, 96, 3) and crop.dtype == np.uint8
    assert np.abs(crop.astype(int) - image).max() <= 1
    grey = mfn.align_face(image[..., 0], mfn.TEMPLATE_112x96)
    assert np.abs(grey[..., 2].astype(int) - image[..., 0]).max() <= 1
    with pytest.raises(ValueError):
        mfn.align_face(image.astype(np.float32), mfn.TEMPLATE_112x96)
    with pytest.raises(ValueError):
        mfn.align_face(image, np.zeros((4, 2)))


def test_network_input_normalisation():
    crops = np.array([0, 127, 255], np.uint8).reshape(1, 1, 1, 3) * np.ones((1, 112, 96, 1), np.uint8)
    x = mfn.to_network_input(crops)
    assert x.shape == (1, 3, 112, 96) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(0 - 127.5) / 128, (127 - 127.5) / 128, (255 - 127.5) / 128])


# ---------------------------------------------------------------- checkpoint


def test_registry_entry():
    from anoncli.weights import REGISTRY, sha256_of

    entry = REGISTRY[mfn.NAME]
    assert entry.filename == "mobilefacenet_arcface_casia.ckpt"
    assert entry.url == "https://github.com/Xiaoccer/MobileFaceNet_Pytorch/raw/master/model/best/068.ckpt"
    assert entry.package is None
    if WEIGHTS.is_file():
        assert sha256_of(WEIGHTS) == entry.sha256


def test_state_dict_loads_strict():
    import torch

    from anoncli.models.mobilefacenet import MobileFaceNet

    ckpt = torch.load(weights_file(), map_location="cpu", weights_only=True)
    state = ckpt["net_state_dict"]
    net = MobileFaceNet()
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    net.load_state_dict(state, strict=True)
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 112, 96))
    assert out.shape == (2, 128) and torch.isfinite(out).all()


# ---------------------------------------------------------------- real faces


def _identities() -> dict[int, list[str]]:
    labels = CROPS / "labels.csv"
    if not labels.is_file() or not (CROPS / "images").is_dir():
        pytest.skip(f"CelebA crops not available ({labels} is missing; they live in the shared data folder)")
    with open(labels, newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        # Only the first two columns are used (the attribute header is not needed).
        assert header[:2] == ["image", "identity"], header[:2]
        by_id: dict[int, list[str]] = defaultdict(list)
        for row in rows:
            by_id[int(row[1])].append(row[0])
    return by_id


@pytest.fixture(scope="module")
def celeba_faces():
    """N_IDENTITIES x PER_IDENTITY (image, landmarks), deterministic: lowest identity numbers
    first, each identity's images in file-name order, the highest-scoring detection per image."""
    from PIL import Image

    from anoncli.faces.detectors import create_detector

    weights_file()
    by_id = _identities()
    detector = create_detector("retinaface-onnx")
    faces = []
    for identity in sorted(by_id):
        if len(by_id[identity]) < PER_IDENTITY:
            continue
        found = []
        for name in sorted(by_id[identity])[:TRIED_PER_IDENTITY]:
            rgb = np.asarray(Image.open(CROPS / "images" / name).convert("RGB"))
            dets = detector.detect([rgb])[0]
            if dets:
                found.append((rgb, max(dets, key=lambda d: d.score).landmarks))
            if len(found) == PER_IDENTITY:
                faces.append(found)
                break
        if len(faces) == N_IDENTITIES:
            break
    assert len(faces) == N_IDENTITIES
    return faces


@pytest.fixture(scope="module")
def evaluator():
    return mfn.MobileFaceNetIdentity(weights_file())


def test_verification_auc_on_celeba(celeba_faces, evaluator, capsys):
    images = [rgb for person in celeba_faces for rgb, _ in person]
    landmarks = [pts for person in celeba_faces for _, pts in person]
    emb = evaluator.embed(images, landmarks)
    assert emb.shape == (len(images), 256) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    emb = emb.reshape(N_IDENTITIES, PER_IDENTITY, -1)

    # Genuine: every pair within an identity (3 each). Impostor: the j-th image of identity i
    # against the j-th image of identity i + 1 (3 each, all different people).
    genuine = [(emb[i, a], emb[i, b]) for i in range(N_IDENTITIES) for a in range(PER_IDENTITY)
               for b in range(a + 1, PER_IDENTITY)]
    impostor = [(emb[i, j], emb[(i + 1) % N_IDENTITIES, j]) for i in range(N_IDENTITIES) for j in range(PER_IDENTITY)]
    assert len(genuine) == len(impostor) == 300
    d_gen = np.array([distance(a, b) for a, b in genuine])
    d_imp = np.array([distance(a, b) for a, b in impostor])
    similarity = 1.0 - np.r_[d_gen, d_imp]
    auc = roc_auc(similarity, np.r_[np.ones(len(d_gen)), np.zeros(len(d_imp))])
    t01 = threshold_at_far(d_imp, 0.01)
    with capsys.disabled():
        print(f"\nMobileFaceNet on CelebA crops: AUC {auc:.4f} over {len(d_gen)} genuine + {len(d_imp)} impostor "
              f"pairs; mean cosine distance genuine {d_gen.mean():.3f}, impostor {d_imp.mean():.3f}; "
              f"threshold at FAR 1 % {t01:.3f} (TAR {np.mean(d_gen < t01):.3f})")
    assert auc >= MIN_AUC, f"AUC {auc:.4f} < {MIN_AUC}"


def test_mirrored_face_swaps_the_feature_halves(celeba_faces, evaluator):
    # The embedding is [f(crop), f(mirrored crop)]: mirroring the image (and its landmarks,
    # left and right exchanged) must give about the same two halves in the other order.
    rgb, pts = celeba_faces[0][0]
    w = rgb.shape[1]
    mirrored_pts = np.array(pts, dtype=np.float64)[[1, 0, 2, 4, 3]]
    mirrored_pts[:, 0] = (w - 1) - mirrored_pts[:, 0]
    a, b = evaluator.embed([rgb, np.ascontiguousarray(rgb[:, ::-1])], [pts, mirrored_pts])
    swapped = np.r_[b[128:], b[:128]]
    assert distance(a, swapped) < 0.02
