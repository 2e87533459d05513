"""LPIPS and FID: Fréchet distance against closed forms, and both networks loading files in the
official key layouts (randomly initialised here: the real weights exist only online)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision

from anoncli import weights
from anoncli.metrics import fid, lpips
from anoncli.metrics.fid import InceptionFeatures, fid_from_features, frechet_distance
from anoncli.metrics.lpips import LPIPS

# lpips 0.1.4 weights/v0.1/alex.pth: one 1 x C x 1 x 1 tensor per AlexNet ReLU, index 1 after a Dropout.
OFFICIAL_LINEAR_SHAPES = {
    "lin0.model.1.weight": (1, 64, 1, 1),
    "lin1.model.1.weight": (1, 192, 1, 1),
    "lin2.model.1.weight": (1, 384, 1, 1),
    "lin3.model.1.weight": (1, 256, 1, 1),
    "lin4.model.1.weight": (1, 256, 1, 1),
}


def random_spd(rng, d):
    m = rng.normal(size=(d, d))
    return m @ m.T + d * np.eye(d)


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=6), random_spd(rng, 6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_one_dimensional_closed_form():
    # (mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 1 + 4 + 9 - 12
    assert frechet_distance([0.0], [[4.0]], [1.0], [[9.0]]) == pytest.approx(2.0, abs=1e-12)
    assert frechet_distance(3.0, 2.0, 3.0, 2.0) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    expected = np.sum((mu1 - mu2) ** 2 + s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_full_covariances_match_symmetric_form():
    # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), the latter through an eigendecomposition.
    rng = np.random.default_rng(2)
    mu1, mu2, s1, s2 = rng.normal(size=4), rng.normal(size=4), random_spd(rng, 4), random_spd(rng, 4)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.linalg.eigvalsh(root1 @ s2 @ root1)).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_fid_of_features_with_themselves_and_shifted():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
    assert fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
    shift = rng.normal(size=16)
    # A shift moves the mean only: FID = |shift|^2.
    assert fid_from_features(feats, feats + shift) == pytest.approx(shift @ shift, rel=1e-8)


def test_fid_with_fewer_samples_than_dimensions_stays_near_zero_for_the_same_set():
    feats = np.random.default_rng(4).normal(size=(10, 32))  # rank-9 covariance
    assert abs(fid_from_features(feats, feats)) < 1e-3
    with pytest.raises(ValueError):
        fid_from_features(feats[:1], feats)


# ---------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), d / "alexnet-owt-7be5be79.pth")
    # The official linear weights are non-negative; random ones in [0, 1) keep distances positive too.
    torch.save({k: torch.rand(shape) for k, shape in OFFICIAL_LINEAR_SHAPES.items()}, d / "alex.pth")
    return d / "alexnet-owt-7be5be79.pth", d / "alex.pth"


@pytest.fixture(scope="module")
def lpips_model(lpips_files):
    return LPIPS(*lpips_files)


def test_lpips_zero_for_identical_positive_and_symmetric_otherwise(lpips_model):
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    assert np.array_equal(lpips_model.distance(a, a), np.zeros(3))
    ab, ba = lpips_model.distance(a, b), lpips_model.distance(b, a)
    assert ab.shape == (3,) and np.all(ab > 0)
    np.testing.assert_allclose(ab, ba, rtol=1e-6)


def test_lpips_pairs_of_different_sizes_match_one_by_one(lpips_model):
    rng = np.random.default_rng(6)
    a = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(48, 64, 3), (48, 64, 3), (80, 40, 3)]]
    b = [np.clip(x.astype(int) + rng.integers(-30, 30, x.shape), 0, 255).astype(np.uint8) for x in a]
    together = lpips_model.distance(a, b)
    alone = [lpips_model.distance([x], [y])[0] for x, y in zip(a, b)]
    np.testing.assert_allclose(together, alone, rtol=1e-5)


def test_lpips_rejects_bad_pairs(lpips_model):
    small = np.zeros((30, 64, 3), np.uint8)  # relu5 would be empty below 31 pixels
    with pytest.raises(ValueError, match="sizes differ"):
        lpips_model.distance([np.zeros((64, 64, 3), np.uint8)], [np.zeros((64, 48, 3), np.uint8)])
    with pytest.raises(ValueError, match="below"):
        lpips_model.distance([small], [small])
    smallest = np.zeros((31, 31, 3), np.uint8)
    assert lpips_model.distance([smallest], [smallest]).shape == (1,)
    with pytest.raises(ValueError, match="uint8"):
        lpips_model.distance([np.zeros((64, 64, 3))], [np.zeros((64, 64, 3))])


def test_lpips_refuses_a_linear_file_with_a_wrong_key(lpips_files, tmp_path):
    backbone, _ = lpips_files
    state = {k: torch.rand(shape) for k, shape in OFFICIAL_LINEAR_SHAPES.items()}
    state["lin0.model.0.weight"] = state.pop("lin0.model.1.weight")
    bad = tmp_path / "bad_alex.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"bad_alex\.pth.*lin0\.model\.1\.weight.*lin0\.model\.0\.weight"):
        LPIPS(backbone, bad)


def test_lpips_refuses_a_backbone_file_missing_a_key(lpips_files, tmp_path):
    _, linear = lpips_files
    state = torch.load(lpips_files[0], weights_only=True)
    del state["classifier.6.bias"]
    bad = tmp_path / "truncated_alexnet.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"truncated_alexnet\.pth.*classifier\.6\.bias"):
        LPIPS(bad, linear)


# ---------------------------------------------------------------- Inception for FID


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    # pytorch-fid's layout: torchvision's Inception3 with 1008 classes and no auxiliary head (its
    # patched blocks keep torchvision's submodule names), 566 tensors.
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    state = net.state_dict()
    assert len(state) == 566
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


def test_inception_loads_the_official_layout_and_returns_pool3_features(inception_file):
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(64, 64, 3), (90, 70, 3)]]
    feats = InceptionFeatures(inception_file).features(images)
    assert feats.shape == (2, 2048)
    assert np.all(np.isfinite(feats)) and np.all(feats >= 0)  # averages of ReLU outputs
    assert not np.allclose(feats[0], feats[1])


def test_inception_refuses_torchvision_imagenet_layout(tmp_path):
    # torchvision's own ImageNet Inception has 1000 classes and an auxiliary head: not pytorch-fid's file.
    path = tmp_path / "inception_v3_google.pth"
    torch.save(torchvision.models.inception_v3(weights=None, init_weights=False).state_dict(), path)
    with pytest.raises(ValueError, match=r"(?s)inception_v3_google\.pth.*fc\.weight"):
        InceptionFeatures(path)


# ---------------------------------------------------------------- registry


@pytest.fixture
def empty_weights_search(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "search_dirs", lambda weights_dir=None: [tmp_path])
    monkeypatch.setattr(weights, "_from_package", lambda entry: None)


def test_missing_weights_are_reported_with_the_command_that_gets_them(empty_weights_search):
    ok, why = lpips.available()
    assert not ok and "anoncli weights fetch lpips-alexnet-backbone" in why
    ok, why = fid.available()
    assert not ok and "anoncli weights fetch fid-inception-2015-12-05" in why
    with pytest.raises(weights.WeightsMissing, match="fid-inception-2015-12-05"):
        InceptionFeatures.from_registry()


def test_from_registry_loads_verified_files(monkeypatch, tmp_path, lpips_files):
    for name, path in zip(lpips.WEIGHTS, lpips_files):
        entry = weights.REGISTRY[name]
        (tmp_path / entry.filename).symlink_to(path)
        monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(entry, sha256=weights.sha256_of(path)))
    assert lpips.available(tmp_path) == (True, None)
    model = LPIPS.from_registry(tmp_path)
    image = np.full((32, 32, 3), 128, np.uint8)
    assert model.distance([image], [image])[0] == 0.0
