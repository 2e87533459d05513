"""Stage-I losses of IdentityDP / identity rotation (book eq. 5.14-5.18 and 6.11-6.15), as pure
functions of tensors.

- L_adv (eq. 5.14): log D(X) + log(1 − D(X̂)), at every scale of the multi-scale discriminator.
  The generator minimises the non-saturating form −log D(X̂) (Goodfellow et al., 2014).
- L_id (eq. 5.15): 1 − cos(r_id(X̂), r_id(X_s)).
- L_att (eq. 5.16): ½ Σ_k ‖r_att^k(X̂) − r_att^k(X)‖², each level's squared distance taken per
  element (a mean), so that no level weighs more for being larger.
- L_rec (eq. 5.17): ½ ‖X̂ − X‖² per pixel, only where identity and attributes come from the same
  face (ch. 5.3.8: "L_rec = 0 when the two faces are different").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """−[log D(X) + log(1 − D(X̂))], averaged over patches, summed over scales."""
    return sum(F.softplus(-r).mean() + F.softplus(f).mean() for r, f in zip(real_logits, fake_logits))


def generator_adversarial_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """−log D(X̂), averaged over patches, summed over scales."""
    return sum(F.softplus(-f).mean() for f in fake_logits)


def identity_loss(generated_codes: torch.Tensor, source_codes: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(generated_codes, source_codes, dim=1)).mean()


def attribute_loss(generated_maps: list[torch.Tensor], target_maps: list[torch.Tensor]) -> torch.Tensor:
    return 0.5 * sum(((g - t) ** 2).mean() for g, t in zip(generated_maps, target_maps))


def reconstruction_loss(generated: torch.Tensor, target: torch.Tensor, same_face: torch.Tensor) -> torch.Tensor:
    """½ mean squared error over the samples whose source is their own target (0 when there are none)."""
    per_sample = 0.5 * ((generated - target) ** 2).flatten(1).mean(1)
    weight = same_face.to(per_sample.dtype)
    return (per_sample * weight).sum() / weight.sum().clamp(min=1.0)
