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

Each face follows Algorithm 7 on its own; for speed several faces share every decode (a batch
through the networks), and a face that stops makes room for the next one waiting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass(frozen=True)
class FaceRows:
    """Which faces a decoded batch holds: row i is face ``faces[i]`` at its outer iteration ``steps[i]``."""

    faces: torch.Tensor   # long, indices into the searched faces
    steps: torch.Tensor   # long, 0 before the first identity step

    def __getitem__(self, index) -> "FaceRows":
        return FaceRows(self.faces[index], self.steps[index])


Loss = Callable[[torch.Tensor, FaceRows], torch.Tensor]   # (decoded rows, which faces) -> per-row loss
Confirm = Callable[[torch.Tensor, FaceRows], tuple[torch.Tensor, torch.Tensor]]   # (W′ rows, faces) -> (decoded, L_I)


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
    diverged: list[bool]       # whether it stopped because a step made its decode not finite


def _sign_gradients(latent: torch.Tensor, decode: Callable, losses: Sequence[Loss],
                    rows: FaceRows) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """(the decoded rows, each loss's per-row values, sign(∂loss/∂W′) for each loss), from one decode."""
    w = latent.detach().requires_grad_(True)
    with torch.enable_grad():
        decoded = decode(w)
        values = [loss(decoded, rows) for loss in losses]
        grads = [torch.autograd.grad(v.sum(), w, retain_graph=i + 1 < len(values))[0] for i, v in enumerate(values)]
    # A gradient entry that is not finite moves nothing (sign(NaN) would make W′ NaN for good).
    return decoded.detach(), [v.detach() for v in values], [g.nan_to_num(0.0, 0.0, 0.0).sign() for g in grads]


def fsap_search(latent: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor], identity_loss: Loss,
                attribute_losses: Sequence[Loss], settings: FsapSettings = FsapSettings(),
                identity_test: Loss | None = None, batch_size: int | None = None,
                confirm: Confirm | None = None) -> FsapResult:
    """Algorithm 7 for every face of ``latent`` (N x latent, W = f_E(x) per row). The losses compare
    decoded rows with the originals of the faces ``FaceRows`` names. ``identity_test``, when given,
    is the L_I that the stopping test reads (the identity steps still follow ``identity_loss``): for
    an identity loss that reads a randomly transformed view, the plain view of what is released.

    The test of iteration n reads L_I of the decode that the identity step of iteration n + 1
    differentiates anyway (the same W′), so each iteration decodes 1 + k times, not 2 + k.
    ``batch_size``: at most this many faces share each decode (all of them when None); a face that
    stops makes room for the next. ``confirm``, for a search whose decode and losses run at a lower
    precision: each face the test would stop is decoded and tested again by it, stops only if that
    L_I passes τ too (or N is used up), and is released as that decode. Otherwise a face is released
    as the first decode whose L_I passed τ, or the last one after N iterations. A face whose decode is
    not finite after a step (an inverse flow can explode off its data) stops there and is released as
    its last finite decode (``diverged``)."""
    w = latent.detach().clone()
    n_faces = len(w)
    steps = torch.zeros(n_faces, dtype=torch.long, device=w.device)
    released: list[torch.Tensor | None] = [None] * n_faces
    final_loss = [float("nan")] * n_faces
    used = [settings.iterations] * n_faces
    diverged = torch.zeros(n_faces, dtype=torch.bool, device=w.device)
    last_w, last_decoded, last_loss = w.clone(), None, torch.full((n_faces,), float("nan"), device=w.device)
    waiting = iter(range(n_faces))
    slots: list[int] = []
    capacity = batch_size or n_faces

    def refill():
        while len(slots) < capacity:
            face = next(waiting, None)
            if face is None:
                return
            slots.append(face)

    refill()
    with torch.no_grad():
        while slots:
            faces = torch.tensor(slots, dtype=torch.long, device=w.device)
            rows = FaceRows(faces, steps[faces])
            decoded, (loss,), (ascent,) = _sign_gradients(w[faces], decode, [identity_loss], rows)
            if identity_test is not None:
                loss = identity_test(decoded, rows)
            if last_decoded is None:
                last_decoded = torch.full((n_faces,) + decoded.shape[1:], float("nan"), dtype=decoded.dtype, device=w.device)
            finite = torch.isfinite(decoded.flatten(1)).all(1) & torch.isfinite(loss)
            ok = faces[finite]
            last_w[ok], last_decoded[ok], last_loss[ok] = w[ok], decoded[finite], loss[finite]
            if not finite.all():   # back to each such face's last finite W′ (NaN if none: ``confirm`` may help), and stop it there
                bad = faces[~finite]
                w[bad], diverged[bad] = last_w[bad], True
                keep = finite.view((-1,) + (1,) * (decoded.dim() - 1))
                decoded = torch.where(keep, decoded, last_decoded[faces])
                loss = torch.where(finite, loss, last_loss[faces])
                rows = FaceRows(faces, (rows.steps - (~finite).long()).clamp(min=0))
            last = rows.steps == settings.iterations
            stop = (loss > settings.tau) | last | ~finite
            if confirm is not None and stop.any():
                which = torch.nonzero(stop).flatten()
                exact, exact_loss = confirm(w[faces[which]], rows[which])
                decoded, loss = decoded.clone(), loss.clone()
                decoded[which], loss[which] = exact.to(decoded.dtype), exact_loss.to(loss.dtype)
                stop = (loss > settings.tau) | last | ~finite
            for i in torch.nonzero(stop).flatten().tolist():
                face = slots[i]
                released[face], final_loss[face], used[face] = decoded[i].clone(), float(loss[i]), int(rows.steps[i])
            go = torch.nonzero(~stop).flatten()
            if len(go):
                moving = faces[go]
                w[moving] += settings.lambda_identity * ascent[go]
                for _ in range(settings.attribute_steps):
                    w[moving] -= settings.lambda_attribute * sum(_sign_gradients(w[moving], decode, attribute_losses, rows[go])[2])
                steps[moving] += 1
            slots = [slots[i] for i in go.tolist()]
            refill()
    reached = [v > settings.tau for v in final_loss]
    return FsapResult(w, torch.stack(released), used, final_loss, reached, diverged.tolist())
