"""DDIM decoding and inversion (thesis eq. 6.4-6.6) against the closed forms of Gaussian data, where
the optimal ε-predictor is known: for x_0 ~ N(μ, s²I), E[ε | x_t] = √(1 − ᾱ)(x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anoncli.diffusion.ddim import (NoiseSchedule, _predicted_x0, ddim_decode, ddim_invert, ddim_timesteps,
                                    denoising_loss, linear_schedule, loss_weights, q_sample)

MU, S = 0.3, 0.5


def gaussian_oracle(schedule: NoiseSchedule):
    alphas = torch.as_tensor(schedule.alphas_cumprod)

    def eps(x, t, cond):
        a = alphas[t].view(-1, *[1] * (x.dim() - 1)).to(x.dtype)
        return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S ** 2 + 1 - a)
    return eps


def test_linear_schedule_matches_ddpm():
    s = linear_schedule()
    betas = 1 - s.alphas_cumprod / np.concatenate([[1.0], s.alphas_cumprod[:-1]])
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert s.alphas_cumprod[-1] == pytest.approx(4.0358e-5, rel=1e-3)


def test_ddim_timesteps_follow_the_official_respacing():
    assert ddim_timesteps(1000, 20) == list(range(0, 1000, 50))
    assert ddim_timesteps(1000, 1000) == list(range(1000))
    for bad in (0, 7, 1001):
        with pytest.raises(ValueError, match="DDIM steps"):
            ddim_timesteps(1000, bad)


def test_decoding_maps_standard_noise_to_the_data_law():
    schedule = linear_schedule()
    x_T = torch.randn(20000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x0 = ddim_decode(gaussian_oracle(schedule), schedule, x_T, None, 1000, clip_denoised=False)
    assert float(x0.mean()) == pytest.approx(MU, abs=0.01)
    assert float(x0.std()) == pytest.approx(S, rel=0.02)
    coarse = ddim_decode(gaussian_oracle(schedule), schedule, x_T, None, 10, clip_denoised=False)
    assert float(coarse.std()) != pytest.approx(S, rel=0.02)   # 10 steps are visibly off the ODE


def test_inversion_then_decoding_returns_the_image_to_first_order():
    schedule = linear_schedule()
    model = gaussian_oracle(schedule)
    x0 = MU + S * torch.randn(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    errors = {}
    for steps in (100, 1000):
        x_T = ddim_invert(model, schedule, x0, None, steps, clip_denoised=False)
        assert float(x_T.std()) == pytest.approx(1.0, rel=0.1)      # inversion lands on standard noise
        errors[steps] = float((ddim_decode(model, schedule, x_T, None, steps, clip_denoised=False) - x0).abs().mean())
    assert errors[1000] < 3e-3
    assert 8 < errors[100] / errors[1000] < 12      # Euler-like: ten times the steps, a tenth of the error


def test_loss_is_zero_for_the_true_noise_and_q_sample_is_the_forward_law():
    schedule = linear_schedule()
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    a = torch.as_tensor(schedule.alphas_cumprod[[0, 10, 500, 999]], dtype=torch.float32).view(4, 1, 1, 1)
    torch.testing.assert_close(q_sample(schedule, x0, t, noise), a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert denoising_loss(lambda x, t, c: noise, schedule, x0, None, t, noise).abs().max() == 0
    assert denoising_loss(lambda x, t, c: torch.zeros_like(x), schedule, x0, None, t, noise).tolist() == \
        pytest.approx(noise.pow(2).flatten(1).mean(1).tolist())


def test_clipping_keeps_every_step_inside_the_image_range():
    """clip_denoised: a network whose ε is off by 0.05 everywhere would put x̂_0 far outside [−1, 1] at
    t = 950 (×1/√ᾱ ≈ 100); clipped, the decoded image stays in range, unclipped it does not."""
    schedule = linear_schedule()
    oracle = gaussian_oracle(schedule)

    def biased(x, t, cond):
        return oracle(x, t, cond) + 0.05

    x_T = torch.randn(200, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    clipped = ddim_decode(biased, schedule, x_T, None, 20)
    unclipped = ddim_decode(biased, schedule, x_T, None, 20, clip_denoised=False)
    assert float(clipped.abs().max()) <= 1.0 + 1e-9
    assert float(unclipped.abs().max()) > 1.1


def test_truncated_snr_weighting_is_the_larger_of_the_noise_and_the_image_errors():
    schedule = linear_schedule()
    t = torch.tensor([0, 100, 300, 600, 999])
    a = torch.as_tensor(schedule.alphas_cumprod[t.numpy()], dtype=torch.float64)
    assert loss_weights(schedule, t, "simple").tolist() == [1.0] * 5
    weights = loss_weights(schedule, t, "truncated-snr")
    torch.testing.assert_close(weights.double(), torch.maximum(torch.ones(5, dtype=torch.float64), (1 - a) / a), rtol=1e-6, atol=0)
    assert weights[0] == 1 and weights[-1] > 1000   # x_0 counts from where SNR falls below 1
    x0, noise = torch.rand(5, 3, 8, 8) * 2 - 1, torch.randn(5, 3, 8, 8)
    x_t = q_sample(schedule, x0, t, noise)
    wrong_eps = noise + 0.1 * torch.randn(5, 3, 8, 8)
    eps_error = denoising_loss(lambda x, t_, c: wrong_eps, schedule, x0, None, t, noise)
    x0_error = (_predicted_x0(x_t, wrong_eps, a.float().view(-1, 1, 1, 1)) - x0).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(eps_error * weights, torch.maximum(eps_error, x0_error), rtol=2e-3, atol=1e-6)
    with pytest.raises(ValueError, match="unknown loss weighting"):
        loss_weights(schedule, t, "p2")
