"""RDP accounting (METHODS.md §8, thesis Theorem 4.4.1) against independent closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from anoncli.privacy.accountant import (
    dp_image_iterations_for_epsilon,
    dp_image_rdp,
    dp_image_sigma_for_epsilon,
    dp_image_t_sigma_squared_for_epsilon,
    gaussian_rdp,
    linear_rdp_to_dp,
    rdp_to_dp,
)
from anoncli.privacy.rng import os_entropy_generator


def test_gaussian_rdp_formula():
    assert gaussian_rdp(4.0, 2.0, 0.5) == pytest.approx(4.0 * 4.0 / (2 * 0.25))
    assert gaussian_rdp(4.0, 2.0, 0.5, steps=10) == pytest.approx(10 * gaussian_rdp(4.0, 2.0, 0.5))


def test_dp_image_rdp_is_thesis_formula_divided_by_iterations():
    assert dp_image_rdp(3.0, 3840, 0.2, 100) == pytest.approx(3.0 * 3840 ** 2 / (2 * 100 * 0.04))
    assert dp_image_rdp(3.0, 3840, 0.2, 100) == pytest.approx(gaussian_rdp(3.0, 3840, 0.2) / 100)
    with pytest.raises(ValueError):
        dp_image_rdp(3.0, 3840, 0.2, 0)


@pytest.mark.parametrize("iterations", [10 ** 4, 10 ** 5])
def test_dp_image_epsilon_matches_independent_closed_form(iterations, record_property):
    delta_f, sigma, delta = 3840.0, 0.2, 1e-8
    epsilon, alpha = rdp_to_dp(lambda a: dp_image_rdp(a, delta_f, sigma, iterations), delta)
    c = delta_f ** 2 / (2 * iterations * sigma ** 2)
    closed = c + 2 * math.sqrt(c * math.log(1 / delta))
    record_property("dp_image_epsilon", epsilon)
    print(f"DP-Image T={iterations}: eps={epsilon:.8g} (closed form {closed:.8g}), alpha*={alpha:.8g}")
    assert epsilon == pytest.approx(closed, rel=5e-4)  # 3 significant digits
    assert epsilon == pytest.approx(closed, rel=1e-9)  # and in fact far better
    assert alpha == pytest.approx(1 + math.sqrt(math.log(1 / delta) / c), rel=1e-6)


def test_linear_rdp_to_dp_matches_numeric_minimisation_on_random_inputs():
    rng = os_entropy_generator()  # test inputs only, not DP noise
    for _ in range(40):
        c = 10 ** rng.uniform(-4, 5)
        delta = 10 ** rng.uniform(-12, -2)
        closed_eps, closed_alpha = linear_rdp_to_dp(c, delta)
        numeric_eps, numeric_alpha = rdp_to_dp(lambda a, c=c: c * a, delta)
        assert numeric_eps == pytest.approx(closed_eps, rel=1e-9), (c, delta)
        assert numeric_alpha == pytest.approx(closed_alpha, rel=1e-5), (c, delta)


def test_rdp_to_dp_with_user_grid_and_validation():
    eps, alpha = rdp_to_dp(lambda a: 0.5 * a, 1e-6, alphas=[1.5, 2, 4, 8, 16, 32, 64])
    assert eps == pytest.approx(linear_rdp_to_dp(0.5, 1e-6)[0], rel=1e-9)
    for bad in [dict(delta=0.0), dict(delta=1.0), dict(delta=1e-5, alphas=[1.0, 2.0])]:
        with pytest.raises(ValueError):
            rdp_to_dp(lambda a: a, **bad)


@pytest.mark.parametrize("epsilon,iterations", [(8.0, 10 ** 5), (1.0, 10), (19597.4, 10 ** 4)])
def test_dp_image_sigma_for_epsilon_round_trips(epsilon, iterations):
    delta, delta_f = 1e-8, 3840.0
    sigma = dp_image_sigma_for_epsilon(epsilon, delta, delta_f, iterations)
    back, _ = rdp_to_dp(lambda a: dp_image_rdp(a, delta_f, sigma, iterations), delta)
    assert back == pytest.approx(epsilon, rel=1e-9)
    t_sigma2 = dp_image_t_sigma_squared_for_epsilon(epsilon, delta, delta_f)
    assert iterations * sigma ** 2 == pytest.approx(t_sigma2, rel=1e-12)


def test_dp_image_sigma_for_epsilon_thesis_point():
    # The thesis setting σ=0.2, T=10⁵ gives ε≈2212; solving back from that ε returns σ=0.2.
    eps, _ = linear_rdp_to_dp(3840.0 ** 2 / (2 * 10 ** 5 * 0.04), 1e-8)
    assert dp_image_sigma_for_epsilon(eps, 1e-8, 3840.0, 10 ** 5) == pytest.approx(0.2, rel=1e-12)


def test_dp_image_iterations_for_epsilon_and_refusal():
    t = dp_image_iterations_for_epsilon(8.0, 1e-8, 3840.0, 0.2)
    eps_at_t = linear_rdp_to_dp(3840.0 ** 2 / (2 * t * 0.04), 1e-8)[0]
    eps_before = linear_rdp_to_dp(3840.0 ** 2 / (2 * (t - 1) * 0.04), 1e-8)[0]
    assert eps_at_t <= 8.0 < eps_before
    with pytest.raises(ValueError, match=r"T >= \d+ iterations, more than the limit 100000"):
        dp_image_iterations_for_epsilon(8.0, 1e-8, 3840.0, 0.2, max_iterations=10 ** 5)


@pytest.mark.parametrize("args", [(0.0, 1e-8, 3840, 10), (1.0, 0.0, 3840, 10), (1.0, 1e-8, -1, 10),
                                  (1.0, 1e-8, 3840, 0), (1.0, 1e-8, 3840, 2.5), (math.nan, 1e-8, 3840, 10)])
def test_dp_image_sigma_for_epsilon_refuses_invalid(args):
    with pytest.raises(ValueError):
        dp_image_sigma_for_epsilon(*args)


def test_linear_rdp_to_dp_small_epsilon_no_cancellation():
    # c tiny: ε ≈ 2√(c·L); the inverse must still round-trip.
    for eps in (1e-6, 1e-3, 0.1):
        sigma2 = dp_image_t_sigma_squared_for_epsilon(eps, 1e-8, 1.0)
        assert linear_rdp_to_dp(1.0 / (2 * sigma2), 1e-8)[0] == pytest.approx(eps, rel=1e-10)
    assert np.isfinite(linear_rdp_to_dp(1e-12, 1e-8)[0])
