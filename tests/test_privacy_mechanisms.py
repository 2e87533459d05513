"""Privacy mechanisms (METHODS.md §2, §4, §5): closed forms, sampler distributions, no seeding."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from anoncli.privacy import mechanisms
from anoncli.privacy.mechanisms import (
    exponential_mechanism_choice,
    exponential_mechanism_probabilities,
    gaussian_noise,
    gaussian_sigma_classic,
    laplace_inverse_cdf,
    laplace_noise,
    laplace_scale,
    poisson_subsample,
    tau_approximation,
    two_outcome_keep_probability,
)
from anoncli.privacy.rng import os_entropy_generator, secure_uniform

DRAWS = 100_000
PRIVACY_DIR = Path(__file__).resolve().parents[1] / "anoncli" / "privacy"


# ---------------------------------------------------------------- secure uniforms

def test_secure_uniform_open_interval_mean_and_unseeded():
    u = secure_uniform(DRAWS)
    assert u.shape == (DRAWS,) and u.dtype == np.float64
    assert u.min() > 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / DRAWS)
    assert not np.array_equal(secure_uniform(16), secure_uniform(16))
    # 53 bits per value: every value is an integer multiple of 2^-53.
    k = u * 2.0 ** 53
    assert np.array_equal(k, np.floor(k))


def test_secure_uniform_never_zero_even_when_os_returns_zeros(monkeypatch):
    real = os.urandom
    calls = []

    def first_call_all_zero(n):
        calls.append(n)
        return bytes(n) if len(calls) == 1 else real(n)

    monkeypatch.setattr("anoncli.privacy.rng.os.urandom", first_call_all_zero)
    u = secure_uniform(8)
    assert len(calls) >= 2 and np.all(u > 0)


def test_secure_uniform_shapes():
    assert secure_uniform((3, 4)).shape == (3, 4)
    assert secure_uniform(()).shape == ()
    assert secure_uniform(0).shape == (0,)


def test_os_entropy_generator_differs_each_call():
    assert os_entropy_generator().random() != os_entropy_generator().random()


def test_privacy_package_never_seeds():
    seeding = re.compile(r"(np|numpy)\.random\.seed\s*\(|default_rng\s*\(\s*[-+0-9]|"
                         r"RandomState\s*\(\s*[-+0-9]|SeedSequence\s*\(\s*[-+0-9]|\brandom\.seed\s*\(")
    sources = sorted(PRIVACY_DIR.glob("*.py"))
    assert sources
    offenders = [f"{p.name}:{n}" for p in sources
                 for n, line in enumerate(p.read_text().splitlines(), 1) if seeding.search(line)]
    assert offenders == []


# ---------------------------------------------------------------- Laplace

def test_laplace_scale_formula_and_validation():
    assert laplace_scale(2.0, 0.5) == 4.0
    assert laplace_scale(255 * 16 / 64, 0.1) == pytest.approx(255 * 16 / (64 * 0.1))  # DP-Pix §2
    for bad in [(0, 1), (1, 0), (-1, 1), (1, -1), (1, math.inf), (math.nan, 1)]:
        with pytest.raises(ValueError):
            laplace_scale(*bad)


def test_laplace_inverse_cdf_closed_form():
    b = 3.0
    u = np.array([0.25, 0.5, 0.75, 2.0 ** -53, 1 - 2.0 ** -53])
    expected = [b * math.log(0.5), 0.0, -b * math.log(0.5), b * math.log(2.0 ** -52), -b * math.log(2.0 ** -52)]
    np.testing.assert_allclose(laplace_inverse_cdf(u, b), expected, rtol=1e-15, atol=0)
    np.testing.assert_allclose(laplace_inverse_cdf(u, b), stats.laplace.ppf(u, scale=b), rtol=1e-12)


@pytest.mark.parametrize("draw, law, scale", [(laplace_noise, "laplace", 2.5), (gaussian_noise, "norm", 1.7)])
def test_noise_follows_its_law_and_the_test_can_tell_a_wrong_scale(draw, law, scale, record_property):
    x = draw(scale, DRAWS)
    assert x.shape == (DRAWS,)
    good = stats.kstest(x, law, args=(0, scale)).pvalue
    wrong = stats.kstest(x, law, args=(0, 1.1 * scale)).pvalue
    record_property(f"{law}_ks_p", good)
    print(f"{law} KS p={good:.4g}, against 1.1 x scale p={wrong:.3g}")
    assert good > 1e-3
    assert wrong < 1e-3


def test_laplace_noise_shape_and_fresh():
    assert laplace_noise(1.0, (2, 3)).shape == (2, 3)
    assert not np.array_equal(laplace_noise(1.0, 8), laplace_noise(1.0, 8))


# ---------------------------------------------------------------- Gaussian

def test_gaussian_sigma_classic_formula_and_refusal():
    assert gaussian_sigma_classic(2.0, 0.5, 1e-5) == pytest.approx(2.0 * math.sqrt(2 * math.log(1.25e5)) / 0.5)
    with pytest.raises(ValueError, match="epsilon < 1"):
        gaussian_sigma_classic(1.0, 1.0, 1e-5)
    with pytest.raises(ValueError, match="delta"):
        gaussian_sigma_classic(1.0, 0.5, 0.0)


def test_gaussian_noise_odd_shapes():
    assert gaussian_noise(1.0, (3, 5)).shape == (3, 5)
    assert gaussian_noise(1.0, ()).shape == ()


# ---------------------------------------------------------------- exponential mechanism

def test_exponential_mechanism_probabilities_closed_form():
    u = np.array([0.0, 1.0, 3.0, -2.0])
    eps, du = 0.8, 2.0
    w = np.exp(eps * u / (2 * du))
    np.testing.assert_allclose(exponential_mechanism_probabilities(u, eps, du), w / w.sum(), rtol=1e-14)


def test_exponential_mechanism_probabilities_stable_for_huge_utilities():
    p = exponential_mechanism_probabilities([1e6, 1e6 + 2.0], 1.0, 1.0)
    np.testing.assert_allclose(p, [1 / (1 + math.e), math.e / (1 + math.e)], rtol=1e-14)


def test_exponential_mechanism_roulette_frequencies(record_property):
    utilities, eps, du = [3.0, 1.0, 0.0, 2.5], 1.5, 1.0
    p = exponential_mechanism_probabilities(utilities, eps, du)
    draws = exponential_mechanism_choice(utilities, eps, du, size=DRAWS)
    freq = np.bincount(draws, minlength=len(p)) / DRAWS
    deviation = float(np.abs(freq - p).max())
    record_property("roulette_max_abs_deviation", deviation)
    print(f"roulette max |freq - p| = {deviation:.4g}")
    assert deviation < 0.01
    single = exponential_mechanism_choice(utilities, eps, du)
    assert isinstance(single, int) and 0 <= single < len(p)


def test_roulette_never_picks_zero_probability_outcome():
    draws = mechanisms.roulette_wheel([0.5, 0.0, 0.5, 0.0], size=20_000)
    assert set(np.unique(draws)) <= {0, 2}


def test_two_outcome_keep_probability_equals_general_mechanism():
    k, eps, dq = 100, 0.05, 1.0
    for v in [0, 1, 37, 50, 63, 100, 12.5]:
        general = exponential_mechanism_probabilities([v, k - v], eps, dq)[0]
        closed = math.exp(eps * v / (2 * dq)) / (math.exp(eps * v / (2 * dq)) + math.exp(eps * (k - v) / (2 * dq)))
        assert two_outcome_keep_probability(v, k, eps, dq) == pytest.approx(general, rel=1e-12)
        assert two_outcome_keep_probability(v, k, eps, dq) == pytest.approx(closed, rel=1e-12)
    assert two_outcome_keep_probability(50, 100, 0.05, 1.0) == 0.5
    vec = two_outcome_keep_probability(np.array([0, 100]), 100, 0.1, 1.0)
    assert vec.shape == (2,) and vec[0] == pytest.approx(1 - vec[1])
    # No overflow where the naive ratio would be inf/inf.
    assert two_outcome_keep_probability(1e5, 1e5, 100.0, 1.0) == 1.0


# ---------------------------------------------------------------- τ-approximation and subsampling

def test_tau_approximation_closed_form_and_norm():
    v = np.array([3.0, 0.0, 5.0, 2.0])
    np.testing.assert_allclose(tau_approximation(v, 4.0), v * 4.0 / 10.0)
    np.testing.assert_array_equal(tau_approximation(v, 20.0), v)
    np.testing.assert_array_equal(tau_approximation(np.zeros(3), 1.0), np.zeros(3))
    for _ in range(20):
        w = laplace_noise(5.0, 13)
        assert np.abs(tau_approximation(w, 1.0)).sum() <= 1.0 + 1e-12
    with pytest.raises(ValueError):
        tau_approximation(v, 0.0)


def test_poisson_subsample_rate():
    n, rate = 200_000, 0.05
    mask = poisson_subsample(n, rate)
    assert mask.dtype == bool and mask.shape == (n,)
    se = math.sqrt(rate * (1 - rate) / n)
    assert abs(mask.mean() - rate) < 4 * se
    assert not poisson_subsample(1000, 0.0).any()
    assert poisson_subsample(1000, 1.0).all()
    with pytest.raises(ValueError):
        poisson_subsample(10, 1.5)
