"""FSAP's perturbation search (thesis ch. 5, §5.4.3, Algorithm 7; METHODS.md §9), on any latent
backbone: the procedure only, the networks come in as functions.

    W′ ← W;  for n = 1..N:
        W′ ← W′ + λ_I · sign(∂L_I/∂W′)                                   (eq. 5.6: ascend identity loss)
        k times:  W′ ← W′ − λ_P · (sign ∂L_m/∂W′ + sign ∂L_l/∂W′ + sign ∂L_s/∂W′)   (eq. 5.8)
        stop when L_I(x, f_D(W′)) > τ, measured on a fresh decode

L_I = 1 − cos(f_I(x), f_I(x̂)) (eq. 5.3). The thesis' Algorithm 1/2 signs contradict their labels;
this is "ascend identity loss, descend attribute loss" (METHODS.md §9 errata). Each attribute
step decodes once and takes its three gradients from that one decode (three separate sign
vectors, as eq. 5.8 writes them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Loss = Callable[[torch.Tensor], torch.Tensor]   # decoded faces (N x 3 x R x R) -> per-face loss (N)


@dataclass(frozen=True)
class FsapSettings:
    """Algorithm 7's parameters, defaults from the thesis' experiments (§5.5.1.2)."""

    iterations: int = 100            # N, the most outer iterations
    attribute_steps: int = 6         # k, attribute steps per identity step
    tau: float = 0.8                 # τ, identity loss at which a face counts as de-identified
    lambda_identity: float = 0.02    # λ_I, the identity step
    lambda_attribute: float = 0.008  # λ_P, the attribute step (λ_1 = λ_2 = λ_3, eq. 5.8)

    def __post_init__(self):
        if self.iterations < 1 or self.attribute_steps < 0:
            raise ValueError("FSAP needs N >= 1 iterations and k >= 0 attribute steps")
        if not (self.lambda_identity > 0 and self.lambda_attribute >= 0):
            raise ValueError("FSAP needs λ_I > 0 and λ_P >= 0")


@dataclass(frozen=True)
class FsapResult:
    latent: torch.Tensor       # W′, N x latent
    decoded: torch.Tensor      # f_D(W′), the face released
    iterations: list[int]      # outer iterations each face used
    identity_loss: list[float]   # its final L_I
    reached: list[bool]        # whether L_I > τ stopped it before N


def _sign_gradients(latent: torch.Tensor, decode: Callable,
                    losses: Sequence[Loss]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """(the decoded batch, each loss's per-face values, sign(∂loss/∂W′) for each loss), from one decode."""
    w = latent.detach().requires_grad_(True)
    with torch.enable_grad():
        decoded = decode(w)
        values = [loss(decoded) for loss in losses]
        grads = [torch.autograd.grad(v.sum(), w, retain_graph=i + 1 < len(values))[0] for i, v in enumerate(values)]
    return decoded.detach(), [v.detach() for v in values], [g.sign() for g in grads]


def fsap_search(latent: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor], identity_loss: Loss,
                attribute_losses: Sequence[Loss], settings: FsapSettings = FsapSettings(),
                identity_test: Loss | None = None) -> FsapResult:
    """Algorithm 7 from W = f_E(x) (``latent``: N faces at once; a face that has passed τ stops
    moving while the others go on). ``identity_loss`` and ``attribute_losses`` compare a decoded
    batch with the originals they were built for. ``identity_test``, when given, is the L_I that the
    stopping test and the result read (the identity steps still follow ``identity_loss``): for an
    identity loss that reads a randomly transformed view, the plain view of what is released.

    The test of iteration n reads L_I of the decode that the identity step of iteration n + 1
    differentiates anyway (the same W′), so each iteration decodes 1 + k times, not 2 + k; a face
    is released as the first decode whose L_I passed τ, or the last one after N iterations."""
    w = latent.detach().clone()
    n_faces = len(w)
    shape = (-1,) + (1,) * (w.dim() - 1)
    active = torch.ones(n_faces, dtype=torch.bool, device=w.device)
    used = [settings.iterations] * n_faces
    released = final_loss = None
    with torch.no_grad():
        for n in range(settings.iterations + 1):
            decoded, (loss,), (ascent,) = _sign_gradients(w, decode, [identity_loss])
            if identity_test is not None:
                loss = identity_test(decoded)
            passed = active & (loss > settings.tau)
            if released is None:
                released, final_loss = decoded.clone(), loss.clone()
            keep = active.view(shape)
            released = torch.where(keep, decoded, released)
            final_loss = torch.where(active, loss, final_loss)
            for i in torch.nonzero(passed).flatten().tolist():
                used[i] = n
            active &= ~passed
            if n == settings.iterations or not active.any():
                break
            gate = active.to(w.dtype).view(shape)
            w += settings.lambda_identity * gate * ascent
            for _ in range(settings.attribute_steps):
                w -= settings.lambda_attribute * gate * sum(_sign_gradients(w, decode, attribute_losses)[2])
    reached = [bool(v) for v in final_loss > settings.tau]
    return FsapResult(w, released, used, [float(v) for v in final_loss], reached)
