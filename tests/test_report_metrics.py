"""The report's pure measures against closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from anoncli.metrics.fairness import group_gaps
from anoncli.metrics.image_quality import K1, K2, mae, psnr, ssim
from anoncli.metrics.privacy import chance_identification_rates, identification_rates, pairwise_distances, protection_rate


def test_ssim_of_an_image_with_itself_is_one_and_constants_have_a_closed_form():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    assert ssim(img, img) == pytest.approx(1.0)
    a, b = np.full((30, 30), 100.0), np.full((30, 30), 150.0)
    c1 = (K1 * 255) ** 2
    expected = (2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1)  # contrast/structure terms are 1
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)
    assert K2 == 0.03


def test_psnr_mae_and_masks():
    a = np.zeros((4, 4))
    b = a.copy()
    b[0, 0] = 16
    assert psnr(a, a) == math.inf
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / (16 ** 2 / 16)))
    assert mae(a, b) == pytest.approx(1.0)
    mask = np.zeros((4, 4), bool)
    mask[1:] = True
    assert psnr(a, b, mask) == math.inf and mae(a, b, ~mask) == pytest.approx(4.0)
    assert math.isnan(psnr(a, b, np.zeros((4, 4), bool)))


def test_protection_rate_counts_pairs_strictly_above_threshold():
    assert protection_rate([0.1, 0.6, 0.7, 0.9], 0.6) == 0.5
    assert math.isnan(protection_rate([], 0.6))


def test_pairwise_distances_closed_form():
    p = np.array([[1.0, 0.0], [0.0, 2.0]])
    g = np.array([[0.0, 1.0], [3.0, 0.0]])
    assert np.allclose(pairwise_distances(p, g, "euclidean"), [[math.sqrt(2), 2], [1, math.sqrt(13)]])
    assert np.allclose(pairwise_distances(p, g, "cosine"), [[1, 0], [0, 1]])


def test_identification_rates_rank1_rank5_and_exclusion():
    # Probe 0 (id A): nearest is its own original (excluded), then a B, then an A -> rank-2 hit.
    d = np.array([[0.0, 0.2, 0.3, 0.9],
                  [0.5, 0.1, 0.4, 0.05]])
    gallery_ids = ["A", "B", "A", "C"]
    exclude = np.array([[True, False, False, False], [False, False, False, False]])
    rates = identification_rates(d, ["A", "B"], gallery_ids, ks=(1, 2), exclude=exclude)
    assert rates[1] == 0.0  # probe 0's nearest left is B; probe 1's nearest is C
    assert rates[2] == 1.0
    # A probe whose identity has no other gallery image is not counted.
    assert identification_rates(d[:1], ["C"], ["A", "B", "A", "D"], ks=(1,))[1] != identification_rates(d[:1], ["C"], ["A", "B", "A", "D"], ks=(1,))[1]


def test_farthest_first_finds_identities_turned_away_from_their_owners():
    """Probes that are their owners' identity vectors negated (a rotation by 180°; idrotate's 120°
    leaves cos -0.5): nearest-first never finds them, farthest-first always does, and the probe's
    own photo stays excluded either way."""
    rng = np.random.default_rng(1)
    owners = rng.standard_normal((4, 16))
    gallery = np.concatenate([owners, owners + 0.1 * rng.standard_normal((4, 16))])   # two photos of each
    ids = ["A", "B", "C", "D"] * 2
    exclude = np.zeros((4, 8), bool)
    exclude[np.arange(4), np.arange(4)] = True
    d = pairwise_distances(-owners, gallery, "cosine")
    assert identification_rates(d, ids[:4], ids, ks=(1,), exclude=exclude)[1] == 0.0
    assert identification_rates(d, ids[:4], ids, ks=(1,), exclude=exclude, farthest=True)[1] == 1.0
    # excluded entries are never ranked first, from either end
    only_own = pairwise_distances(-owners, owners, "cosine")
    assert identification_rates(only_own, ids[:4], ids[:4], ks=(1,), exclude=np.eye(4, dtype=bool), farthest=True)[1] != 1.0


def test_chance_identification_matches_the_closed_form_and_a_random_ranking():
    # Gallery of 6: identity A three times, B twice, C once; each probe excluded from its own image.
    ids = ["A", "A", "A", "B", "B", "C"]
    exclude = np.eye(6, dtype=bool)
    rates = chance_identification_rates(ids, ids, ks=(1, 2), exclude=exclude)
    # A probes: 2 of 5 left are A; B probes: 1 of 5; C has none left and is not counted.
    assert rates[1] == pytest.approx((3 * 2 / 5 + 2 * 1 / 5) / 5)
    assert rates[2] == pytest.approx((3 * (1 - 3 / 5 * 2 / 4) + 2 * (1 - 4 / 5 * 3 / 4)) / 5)
    # A matcher with random distances scores the chance rate on average.
    rng = np.random.default_rng(0)
    trials = [identification_rates(rng.random((6, 6)), ids, ids, ks=(1, 2), exclude=exclude) for _ in range(4000)]
    assert np.mean([t[1] for t in trials]) == pytest.approx(rates[1], abs=0.01)
    assert np.mean([t[2] for t in trials]) == pytest.approx(rates[2], abs=0.01)


def test_group_gaps_closed_form():
    gaps = group_gaps({"a": 0.5, "b": 0.75, "c": 1.0})
    assert gaps["max_min"] == pytest.approx(0.5)
    assert gaps["mean_pairwise"] == pytest.approx((0.25 + 0.5 + 0.25) / 3)
    assert gaps["log_ratio"] == pytest.approx(math.log(2))
    assert gaps["std"] == pytest.approx(np.std([0.5, 0.75, 1.0]))
    assert group_gaps({"a": 0.0, "b": 1.0})["log_ratio"] is None
    assert group_gaps({})["max_min"] is None


def _face68(rng):
    points = rng.uniform(0, 100, (68, 2))
    points[36], points[45] = (30.0, 40.0), (70.0, 40.0)  # outer eye corners 40 px apart
    return points


def test_landmark_distance_of_a_shift_is_the_shift_over_the_inter_ocular_distance():
    from anoncli.metrics.landmarks import REGIONS, normalised_landmark_distance

    ref = _face68(np.random.default_rng(0))
    d = normalised_landmark_distance(ref, ref + np.array([3.0, 4.0]))
    assert d["all"] == pytest.approx(5 / 40)
    assert all(d[r] == pytest.approx(5 / 40) for r in REGIONS)
    assert normalised_landmark_distance(ref, ref)["all"] == 0.0


def test_landmark_distance_is_per_region():
    from anoncli.metrics.landmarks import normalised_landmark_distance

    ref = _face68(np.random.default_rng(1))
    moved = ref.copy()
    moved[48:68] += (8.0, 0.0)  # only the mouth moves
    d = normalised_landmark_distance(ref, moved)
    assert d["mouth"] == pytest.approx(8 / 40) and d["chin"] == 0.0 and d["eyes"] == 0.0
    assert d["all"] == pytest.approx(20 / 68 * 8 / 40)
    with pytest.raises(ValueError):
        normalised_landmark_distance(ref[:5], ref[:5])


def test_identity_labels_belong_to_the_main_face_of_each_image():
    from anoncli.report.build import FaceItem, _privacy

    def face(rel, box, vec):
        f = FaceItem(rel, 0, box, [], "sha")
        f.original["e"] = f.anonymized["e"] = np.asarray(vec, np.float64)
        return f

    faces = [face("a.jpg", [0, 0, 100, 100], [1, 0]), face("a.jpg", [200, 0, 230, 30], [0, 1]),
             face("b.jpg", [0, 0, 90, 90], [0.9, 0.1]), face("c.jpg", [0, 0, 80, 80], [-1, 0])]
    labels = {"a.jpg": {"identity": "1"}, "b.jpg": {"identity": "1"}, "c.jpg": {"identity": "2"}}
    info = {"metric": "euclidean", "thresholds": {"literature": 0.5, "far_1e-3": None}}
    out = _privacy("e", info, faces, labels, "identity")
    # The small face in a.jpg is someone else: it is in no genuine and no impostor pair.
    assert info["verification"]["genuine_pairs"] == 1 and info["verification"]["impostor_pairs"] == 2
    assert info["verification"]["auc"] == 1.0
    assert out["identification"]["probes"] == 3


def test_fairness_gives_each_group_the_detection_of_its_originals_and_their_gap():
    from anoncli.report.build import FaceItem, _fairness

    def face(name, orig, anon):
        return FaceItem(name, 0, [0, 0, 10, 10], [], "", detected_original=orig, detected_anonymized=anon)

    faces = [face("a.png", True, True), face("b.png", False, True), face("c.png", True, False), face("d.png", True, True)]
    labels = {"a.png": {"race": "0"}, "b.png": {"race": "0"}, "c.png": {"race": "1"}, "d.png": {"race": "1"}}
    out = _fairness(faces, labels, ("race",), {}, [])["race"]
    assert out["groups"]["0"]["original_detection_rate"] == 0.5 and out["groups"]["0"]["detection_rate"] == 1.0
    assert out["groups"]["1"]["original_detection_rate"] == 1.0 and out["groups"]["1"]["detection_rate"] == 0.5
    assert out["gaps"]["original_detection_rate"]["max_min"] == 0.5 == out["gaps"]["detection_rate"]["max_min"]
