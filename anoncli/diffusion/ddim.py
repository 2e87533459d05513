"""Noise schedule, training objective, and deterministic DDIM decoding and inversion.

Thesis (seed 003) §6.4: the forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) with
ᾱ_t = ∏_{i≤t} (1 − β_i); the conditional DDIM step, eq. 6.5,

    x_{t−1} = √ᾱ_{t−1} f_θ(x_t, t, z̄) + √(1 − ᾱ_{t−1}) ε_θ(x_t, t, z̄),
    f_θ(x_t, t, z̄) = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t, z̄)) / √ᾱ_t          (eq. 6.4)

and its reverse, eq. 6.6, which encodes an image x_0 into the stochastic code x_T.

The schedule and the respacing follow the diffusion autoencoder's code (Preechakul et al., CVPR
2022), so that its official checkpoints decode as they were trained: β linear from 1e-4 to 0.02
over T = 1000 steps; S DDIM steps visit t = 0, T/S, 2T/S, ..., T − T/S; decoding starts at the
last of them and ends with ᾱ = 1, inversion starts from the image at t = 0 and ends with ᾱ = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TRAINING_STEPS = 1000


@dataclass(frozen=True)
class NoiseSchedule:
    """ᾱ_t for t = 0 … T−1 (float64)."""

    alphas_cumprod: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.alphas_cumprod)


def linear_schedule(steps: int = DEFAULT_TRAINING_STEPS, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """DDPM's linear β schedule, scaled as the guided-diffusion code scales it for other step counts."""
    scale = DEFAULT_TRAINING_STEPS / steps
    betas = np.linspace(scale * beta_start, scale * beta_end, steps, dtype=np.float64)
    return NoiseSchedule(np.cumprod(1.0 - betas))


def ddim_timesteps(training_steps: int, sampling_steps: int) -> list[int]:
    """The S timesteps DDIM visits, ascending: 0, T/S, 2T/S, … (T/S an integer, as the official respacing requires)."""
    if sampling_steps < 1 or sampling_steps > training_steps:
        raise ValueError(f"DDIM steps must be between 1 and {training_steps}, got {sampling_steps}")
    if training_steps % sampling_steps:
        divisors = [s for s in (5, 10, 20, 25, 50, 100, 200, 250, 500, 1000) if training_steps % s == 0]
        raise ValueError(f"DDIM steps must divide the {training_steps} training steps (for example {', '.join(map(str, divisors))}), "
                         f"got {sampling_steps}")
    stride = training_steps // sampling_steps
    return list(range(0, training_steps, stride))


def q_sample(schedule: NoiseSchedule, x0, t, noise):
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, for a batch of timesteps ``t`` (long tensor)."""
    import torch

    a = torch.as_tensor(schedule.alphas_cumprod, dtype=x0.dtype, device=x0.device)[t].view(-1, *[1] * (x0.dim() - 1))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def denoising_loss(model, schedule: NoiseSchedule, x0, cond, t, noise):
    """L_simple of DDPM for a conditional ε-predictor: mean ‖ε − ε_θ(x_t, t, z̄)‖² per face (N values)."""
    eps = model(q_sample(schedule, x0, t, noise), t, cond)
    return (eps - noise).pow(2).flatten(1).mean(1)


LOSS_WEIGHTINGS = ("simple", "truncated-snr")


def loss_weights(schedule: NoiseSchedule, t, weighting: str):
    """Per-face weights of the ε-prediction loss at timesteps ``t``.

    "simple": 1 (DDPM's L_simple, what the official DiffAE trains with). "truncated-snr":
    max(1, 1/SNR_t) with SNR_t = ᾱ_t / (1 − ᾱ_t) (Salimans & Ho, Progressive Distillation, ICLR 2022,
    §4), so a face's loss is max(‖ε − ε̂‖², ‖x_0 − x̂_0‖²): at large t, where x_t has almost no trace
    of x_0 and L_simple almost no gradient, the network is asked for the image itself, which only
    z̄ can give it."""
    import torch

    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; one of {', '.join(LOSS_WEIGHTINGS)}")
    a = torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float64)[t.cpu()]
    if weighting == "simple":
        return torch.ones(len(t), dtype=torch.float32, device=t.device)
    return torch.clamp((1 - a) / a, min=1.0).to(torch.float32).to(t.device)


def _predicted_x0(x, eps, a):
    return (x - (1 - a) ** 0.5 * eps) / a ** 0.5


def _denoised(x, eps, a, clip: bool):
    """(x̂_0, ε) of one step; with ``clip`` x̂_0 is clamped to the image range [−1, 1] and ε re-derived from
    it, as the official samplers do (guided-diffusion's ``clip_denoised``, on by default in DiffAE's
    sampling and inversion loops): at large t, 1/√ᾱ_t multiplies the network's ε error about a hundredfold."""
    x0 = _predicted_x0(x, eps, a)
    if not clip:
        return x0, eps
    x0 = x0.clamp(-1, 1)
    return x0, (x - a ** 0.5 * x0) / (1 - a) ** 0.5


def ddim_decode(model, schedule: NoiseSchedule, x_T, cond, sampling_steps: int, progress=None, clip_denoised: bool = True):
    """Eq. 6.5 from the stochastic code x_T to the image x_0 (deterministic, η = 0).

    Differentiable in ``cond`` and ``x_T`` when called with gradients enabled; ``progress`` is
    called with each finished step's index (for bars)."""
    import torch

    times = ddim_timesteps(schedule.steps, sampling_steps)
    alphas = [float(schedule.alphas_cumprod[t]) for t in times]
    x = x_T
    for i in reversed(range(len(times))):
        t = torch.full((x.shape[0],), times[i], dtype=torch.long, device=x.device)
        eps = model(x, t, cond)
        a_prev = alphas[i - 1] if i > 0 else 1.0
        x0, eps = _denoised(x, eps, alphas[i], clip_denoised)
        x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
        if progress is not None:
            progress(i)
    return x


def ddim_invert(model, schedule: NoiseSchedule, x0, cond, sampling_steps: int, progress=None, clip_denoised: bool = True):
    """Eq. 6.6 from the image x_0 to its stochastic code x_T (the reverse of ``ddim_decode``)."""
    import torch

    times = ddim_timesteps(schedule.steps, sampling_steps)
    alphas = [float(schedule.alphas_cumprod[t]) for t in times]
    x = x0
    for i in range(len(times)):
        t = torch.full((x.shape[0],), times[i], dtype=torch.long, device=x.device)
        eps = model(x, t, cond)
        a_next = alphas[i + 1] if i + 1 < len(times) else 0.0
        x0, eps = _denoised(x, eps, alphas[i], clip_denoised)
        x = a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps
        if progress is not None:
            progress(i)
    return x
