"""Adam (Kingma & Ba, ICLR 2015, Algorithm 1) as a pure function of the parameters, the gradient and
the moments, for the fits that run inside ``anoncli anonymize`` and ``restore``.

Why not ``torch.optim.Adam``: its first construction in a process imports ``torch._dynamo``, about
1.2 s on this machine, paid again in every worker (a tenth of a 100-face identitydp run on 2 cores).
The update is torch's own for ``Adam(amsgrad=False, weight_decay=0, maximize=False)``, checked
against it in the tests. Training keeps ``torch.optim``: its start-up is paid once per run."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BETAS = (0.9, 0.999)   # the paper's and torch's defaults
EPS = 1e-8


@dataclass(frozen=True)
class AdamMoments:
    """The running first and second moments of the gradient after ``steps`` updates."""

    first: Any
    second: Any
    steps: int = 0


def adam_start(parameters) -> AdamMoments:
    """Zero moments shaped like ``parameters`` (a tensor)."""
    import torch

    return AdamMoments(torch.zeros_like(parameters), torch.zeros_like(parameters))


def adam_step(parameters, gradient, moments: AdamMoments, lr: float, betas: tuple[float, float] = BETAS,
              eps: float = EPS):
    """One Adam update: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², θ ← θ − lr·m̂ / (√v̂ + ε) with the
    bias-corrected m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ). Returns the new parameters and moments
    (new tensors; nothing is changed in place)."""
    beta1, beta2 = betas
    steps = moments.steps + 1
    first = beta1 * moments.first + (1.0 - beta1) * gradient
    second = beta2 * moments.second + (1.0 - beta2) * gradient * gradient
    denominator = second.sqrt() / math.sqrt(1.0 - beta2 ** steps) + eps
    updated = parameters - (lr / (1.0 - beta1 ** steps)) * first / denominator
    return updated, AdamMoments(first, second, steps)
