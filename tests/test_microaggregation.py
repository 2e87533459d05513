"""k-Same building blocks (METHODS.md §3): the centred Gram matrix, MDAV microaggregation on it,
and eigenfaces for k-Same-Eigen."""
from __future__ import annotations

import numpy as np
import pytest

from anoncli.methods import eigenfaces as eigenfaces_module
from anoncli.methods.eigenfaces import coefficient_gram, fit_eigenfaces, project, reconstruct
from anoncli.methods.microaggregation import centred_gram, group_labels, mdav_groups


def float64_centred_gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    centred = x - x.mean(axis=0)
    return centred @ centred.T


def squared_distances(gram: np.ndarray) -> np.ndarray:
    diagonal = np.diagonal(gram)
    return diagonal[:, None] + diagonal[None, :] - 2.0 * gram


def reference_mdav(points: np.ndarray, k: int) -> list[np.ndarray]:
    """MDAV straight from its definition, recomputing every distance from the coordinates."""
    remaining = list(range(len(points)))
    groups = []

    def farthest(index_list, target):
        dist = [np.sum((points[i] - target) ** 2) for i in index_list]
        return index_list[int(np.argmax(dist))]  # first maximum = lowest index

    def take_group(record):
        others = [i for i in remaining if i != record]
        dist = np.array([np.sum((points[i] - points[record]) ** 2) for i in others])
        nearest = [others[i] for i in np.argsort(dist, kind="stable")[:k - 1]]
        group = sorted(nearest + [record])
        for i in group:
            remaining.remove(i)
        groups.append(np.array(group))

    while len(remaining) >= 3 * k:
        r = farthest(remaining, points[remaining].mean(axis=0))
        take_group(r)
        take_group(farthest(remaining, points[r]))
    if len(remaining) >= 2 * k:
        take_group(farthest(remaining, points[remaining].mean(axis=0)))
    if remaining:
        groups.append(np.array(sorted(remaining)))
    return groups


def assert_same_groups(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


# ---- centred_gram ------------------------------------------------------------------------------

def test_centred_gram_matches_float64_on_float_data_with_a_large_offset():
    rng = np.random.default_rng(0)
    # A shared offset far larger than the spread: the products are only accurate if centred first.
    x = 1000.0 + rng.normal(0.0, 5.0, size=(157, 3000))
    expected = float64_centred_gram(x)
    for chunk_rows in (1, 40, 157, 1024):
        gram = centred_gram(x, chunk_rows=chunk_rows)
        assert gram.dtype == np.float64 and gram.shape == (157, 157)
        np.testing.assert_array_equal(gram, gram.T)
        assert np.linalg.norm(gram - expected) / np.linalg.norm(expected) < 1e-5
        off_diagonal = ~np.eye(157, dtype=bool)
        distance_error = np.abs(squared_distances(gram) - squared_distances(expected))[off_diagonal]
        assert np.max(distance_error / squared_distances(expected)[off_diagonal]) < 1e-5


def test_centred_gram_of_a_uint8_memmap_of_crops(tmp_path):
    rng = np.random.default_rng(1)
    shape = (203, 32, 32, 3)
    crops = np.memmap(tmp_path / "crops.u8", dtype=np.uint8, mode="w+", shape=shape)
    crops[:] = np.clip(rng.normal(128, 50, size=shape), 0, 255).astype(np.uint8)
    crops.flush()
    crops = np.memmap(tmp_path / "crops.u8", dtype=np.uint8, mode="r", shape=shape)
    expected = float64_centred_gram(np.asarray(crops))
    for rows in (crops, crops.reshape(len(crops), -1)):
        gram = centred_gram(rows, chunk_rows=64)
        assert np.max(np.abs(gram - expected)) / np.max(np.abs(expected)) < 1e-6
    # The rows of a centred Gram matrix sum to zero.
    assert np.max(np.abs(gram.sum(axis=1))) < 1e-5 * np.max(np.abs(expected)) * len(crops)


def test_centred_gram_of_no_rows_and_bad_shapes():
    assert centred_gram(np.zeros((0, 5))).shape == (0, 0)
    with pytest.raises(ValueError, match="rows"):
        centred_gram(np.zeros(5))
    with pytest.raises(ValueError, match="chunk_rows"):
        centred_gram(np.zeros((3, 5)), chunk_rows=0)


# ---- mdav_groups -------------------------------------------------------------------------------

SIZES = [(1, 1), (5, 1), (2, 2), (3, 2), (6, 2), (7, 2), (5, 5), (9, 5), (10, 5), (14, 5), (15, 5),
         (16, 5), (13, 3), (23, 4), (31, 31), (61, 30), (89, 6), (97, 7), (101, 10), (211, 11)]


@pytest.mark.parametrize("n,k", SIZES)
def test_mdav_groups_partition_the_records_into_groups_of_k_to_2k_minus_1(n, k):
    rng = np.random.default_rng(n * 1000 + k)
    points = rng.normal(size=(n, 4))
    groups = mdav_groups(float64_centred_gram(points), k)
    assert all(g.dtype == np.int64 and np.all(np.diff(g) > 0) for g in groups)
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(n))
    assert all(len(g) == k for g in groups[:-1])
    assert k <= len(groups[-1]) <= 2 * k - 1
    assert len(groups) == n // k
    labels = group_labels(groups, n)
    for number, group in enumerate(groups):
        assert np.all(labels[group] == number)


@pytest.mark.parametrize("n,k", [(12, 3), (17, 4), (40, 5)])
def test_mdav_groups_of_duplicate_points_still_partition(n, k):
    # Every distance ties; the lowest index wins each tie.
    groups = mdav_groups(np.zeros((n, n)), k)
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(n))
    assert all(k <= len(g) <= 2 * k - 1 for g in groups)
    assert_same_groups(groups, reference_mdav(np.zeros((n, 2)), k))


def test_mdav_groups_refuse_too_few_records_and_bad_k():
    assert mdav_groups(np.zeros((0, 0)), 3) == []
    with pytest.raises(ValueError, match="at least k = 5 records, got 4"):
        mdav_groups(np.eye(4), 5)
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            mdav_groups(np.eye(4), k)
    with pytest.raises(ValueError, match="square"):
        mdav_groups(np.zeros((3, 4)), 1)


@pytest.mark.parametrize("n,k,dim", [(50, 3, 2), (97, 5, 10), (120, 4, 30), (64, 10, 5), (29, 7, 3)])
def test_mdav_groups_equal_mdav_on_coordinates(n, k, dim):
    rng = np.random.default_rng(n + k + dim)
    points = rng.normal(size=(n, dim)) * rng.uniform(0.5, 2.0, size=dim) + 7.0
    expected = reference_mdav(points, k)
    # Any Gram matrix of the same points gives the same groups: uncentred, centred, float32 products.
    assert_same_groups(mdav_groups(points @ points.T, k), expected)
    assert_same_groups(mdav_groups(float64_centred_gram(points), k), expected)
    assert_same_groups(mdav_groups(centred_gram(points), k), expected)


@pytest.mark.parametrize("k,n_blobs", [(2, 1), (3, 2), (4, 3), (5, 9), (3, 17), (7, 6)])
def test_mdav_recovers_well_separated_blobs_of_k_points(k, n_blobs):
    rng = np.random.default_rng(k * 100 + n_blobs)
    centres = rng.normal(0.0, 100.0, size=(n_blobs, 20))
    blob = np.repeat(np.arange(n_blobs), k)
    points = centres[blob] + rng.normal(0.0, 0.01, size=(len(blob), 20))
    order = rng.permutation(len(blob))
    points, blob = points[order], blob[order]
    groups = mdav_groups(centred_gram(points), k)
    assert len(groups) == n_blobs
    assert {frozenset(g.tolist()) for g in groups} == \
        {frozenset(np.flatnonzero(blob == b).tolist()) for b in range(n_blobs)}


def test_group_labels_reject_what_is_not_a_partition():
    with pytest.raises(ValueError, match="repeats"):
        group_labels([np.array([0, 1]), np.array([1, 2])], 3)
    with pytest.raises(ValueError, match="in no group"):
        group_labels([np.array([0, 1])], 3)
    with pytest.raises(ValueError, match="outside"):
        group_labels([np.array([0, 3])], 3)


# ---- eigenfaces --------------------------------------------------------------------------------

def svd_of_centred(x):
    centred = x - x.mean(axis=0)
    _, singular_values, right = np.linalg.svd(centred, full_matrices=False)
    return singular_values, right


def test_eigenfaces_are_orthonormal_with_svd_variances_and_projected_coefficients():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 300)) * np.linspace(3.0, 0.1, 300) + 50.0
    e, coefficients = fit_eigenfaces(x, 10)
    assert e.components.shape == (10, 300) and coefficients.shape == (40, 10)
    np.testing.assert_allclose(e.components @ e.components.T, np.eye(10), atol=1e-6)
    np.testing.assert_allclose(e.mean, x.mean(axis=0), rtol=1e-12)
    singular_values, right = svd_of_centred(x)
    # variances = eigenvalues of the scatter / (n − 1) = singular values of X_c squared / (n − 1).
    np.testing.assert_allclose(e.variances, singular_values[:10] ** 2 / (len(x) - 1), rtol=1e-5)
    assert np.all(np.diff(e.variances) < 0)
    np.testing.assert_allclose(np.abs(np.sum(e.components * right[:10], axis=1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(coefficients, project(e, x), rtol=1e-5, atol=1e-5 * np.abs(coefficients).max())
    np.testing.assert_allclose(coefficients.var(axis=0, ddof=1), e.variances, rtol=1e-5)


def test_all_eigenfaces_reconstruct_exactly_and_keep_pixel_distances():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, size=(30, 12, 12, 3)).astype(np.uint8)
    e, coefficients = fit_eigenfaces(x, 1000)
    assert e.n_components == 29  # the rank of 30 centred rows
    flat = x.reshape(30, -1).astype(np.float64)
    np.testing.assert_allclose(reconstruct(e, coefficients), flat, atol=1e-3)
    pixel_gram = float64_centred_gram(flat)
    np.testing.assert_allclose(squared_distances(coefficient_gram(coefficients)), squared_distances(pixel_gram),
                               rtol=1e-5, atol=1e-5 * pixel_gram.max())
    for k in (2, 3, 4):
        assert_same_groups(mdav_groups(coefficient_gram(coefficients), k), mdav_groups(pixel_gram, k))


def test_gram_and_scatter_branches_agree():
    # The same point cloud with n > d (scatter branch) and zero-padded to n <= d (Gram branch).
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 20)) * np.linspace(4.0, 0.5, 20)
    padded = np.hstack([x, np.zeros((50, 44))])
    e_scatter, c_scatter = fit_eigenfaces(x, 12)
    e_gram, c_gram = fit_eigenfaces(padded, 12)
    np.testing.assert_allclose(e_gram.variances, e_scatter.variances, rtol=1e-5)
    np.testing.assert_allclose(e_gram.components[:, :20], e_scatter.components, atol=1e-5)
    np.testing.assert_allclose(e_gram.components[:, 20:], 0.0, atol=1e-6)
    np.testing.assert_allclose(c_gram, c_scatter, atol=1e-4)
    singular_values, _ = svd_of_centred(x)
    np.testing.assert_allclose(e_scatter.variances, singular_values[:12] ** 2 / 49, rtol=1e-6)
    np.testing.assert_allclose(e_scatter.components @ e_scatter.components.T, np.eye(12), atol=1e-10)
    np.testing.assert_allclose(c_scatter, project(e_scatter, x), atol=1e-10)


def test_few_eigenfaces_by_lanczos_equal_the_leading_ones_of_many_by_lapack():
    # 12 of 300 takes the Lanczos (ARPACK) path, 200 of 300 the LAPACK one.
    rng = np.random.default_rng(10)
    x = rng.normal(size=(300, 200)) @ rng.normal(size=(200, 400)) * 3.0 + 100.0
    few, few_coefficients = fit_eigenfaces(x, 12)
    many, many_coefficients = fit_eigenfaces(x, 200)
    assert few.n_components == 12 and many.n_components == 200  # the rank
    np.testing.assert_allclose(few.variances, many.variances[:12], rtol=1e-9)
    np.testing.assert_allclose(few.components, many.components[:12], atol=1e-6)
    np.testing.assert_allclose(few_coefficients, many_coefficients[:, :12], atol=1e-6 * np.abs(few_coefficients).max())
    singular_values, _ = svd_of_centred(x)
    np.testing.assert_allclose(few.variances, singular_values[:12] ** 2 / 299, rtol=1e-5)


def test_eigenfaces_reuse_a_given_gram(monkeypatch, tmp_path):
    rng = np.random.default_rng(6)
    x = np.memmap(tmp_path / "x.u8", dtype=np.uint8, mode="w+", shape=(60, 500))
    x[:] = rng.integers(0, 256, size=x.shape)
    gram = centred_gram(x)
    expected, expected_coefficients = fit_eigenfaces(np.asarray(x, dtype=np.float64), 8)

    def no_second_gram(*args, **kwargs):
        raise AssertionError("the Gram matrix was computed again")

    monkeypatch.setattr(eigenfaces_module, "centred_gram", no_second_gram)
    e, coefficients = fit_eigenfaces(x, 8, gram=gram)
    np.testing.assert_allclose(e.variances, expected.variances, rtol=1e-5)
    np.testing.assert_allclose(e.components, expected.components, atol=1e-5)
    np.testing.assert_allclose(coefficients, expected_coefficients, atol=1e-4 * np.abs(coefficients).max())
    with pytest.raises(ValueError, match="gram has shape"):
        fit_eigenfaces(x, 8, gram=gram[:-1, :-1])


def test_eigenfaces_rank_cap_sign_convention_and_row_order():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(30, 3)) @ rng.normal(size=(3, 80)) + 5.0  # rank 3 once centred
    e, coefficients = fit_eigenfaces(x, 10)
    assert e.n_components == 3 and coefficients.shape == (30, 3)
    largest = e.components[np.arange(3), np.abs(e.components).argmax(axis=1)]
    assert np.all(largest > 0)
    # Permuting the faces permutes the coefficients and changes nothing else, signs included.
    order = rng.permutation(30)
    e_permuted, c_permuted = fit_eigenfaces(x[order], 10)
    np.testing.assert_allclose(e_permuted.components, e.components, atol=1e-6)
    np.testing.assert_allclose(c_permuted, coefficients[order], atol=1e-5 * np.abs(coefficients).max())


def test_eigenfaces_refuse_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 samples"):
        fit_eigenfaces(np.zeros((1, 4)), 1)
    with pytest.raises(ValueError, match="n_components"):
        fit_eigenfaces(np.zeros((5, 4)), 0)
    e, _ = fit_eigenfaces(np.random.default_rng(8).normal(size=(6, 4)), 2)
    with pytest.raises(ValueError, match="do not match"):
        project(e, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="coefficients per face"):
        reconstruct(e, np.zeros((2, 3)))


# ---- scale ------------------------------------------------------------------------------------

def test_gram_and_mdav_of_5000_crops_of_12288_values_are_not_pathological():
    # Not timed: a per-pair or per-pixel Python loop would take hours here instead of seconds.
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, size=(5000, 12288), dtype=np.uint8)
    groups = mdav_groups(centred_gram(x), 5)
    assert len(groups) == 1000 and all(len(g) == 5 for g in groups)
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(5000))
