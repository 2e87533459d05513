"""Stage-I losses of IdentityDP / identity rotation (book eq. 5.14-5.18 and 6.11-6.15), as pure
functions of tensors.

- L_adv (eq. 5.14): log D(X) + log(1 − D(X̂)), at every scale of the multi-scale discriminator.
  The generator minimises the non-saturating form −log D(X̂) (Goodfellow et al., 2014).
- L_id (eq. 5.15): 1 − cos(r_id(X̂), r_id(X_s)).
- L_att (eq. 5.16): ½ Σ_k ‖r_att^k(X̂) − r_att^k(X)‖², each level's squared distance taken per
  element (a mean), so that no level weighs more for being larger.
- L_rec (eq. 5.17): ½ ‖X̂ − X‖² per pixel, only where identity and attributes come from the same
  face (ch. 5.3.8: "L_rec = 0 when the two faces are different").

``component_weights`` (not in the book) weighs the eyes and the mouth more in the pixel and perceptual
terms, after GFPGAN's facial-component losses (Wang et al., CVPR 2021, §3.3), where those features
come out smeared.
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


def reconstruction_loss(generated: torch.Tensor, target: torch.Tensor, same_face: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """½ mean squared error over the samples whose source is their own target (0 when there are none);
    ``weights`` (1 x 1 x H x W, ``component_weights``) weigh each pixel's error."""
    squared = (generated - target) ** 2
    per_sample = 0.5 * (squared if weights is None else squared * weights).flatten(1).mean(1)
    weight = same_face.to(per_sample.dtype)
    return (per_sample * weight).sum() / weight.sum().clamp(min=1.0)


def component_weights(resolution: int, margin: float, weight: float) -> torch.Tensor:
    """1 + ``weight`` · b(x, y) on the aligned crop (1 x 1 x R x R), b the largest of three Gaussian bumps
    of height 1: one on each eye of the crop's template, with σ a fifth of the distance between them,
    and one on the mouth's centre, σ 0.3 of it across and 0.15 down (the mouth is wider than high)."""
    from ..faces.align import template_points

    points = torch.as_tensor(template_points(resolution, margin), dtype=torch.float32)
    left_eye, right_eye, _, mouth_left, mouth_right = points
    eyes = float(torch.linalg.vector_norm(right_eye - left_eye))
    mouth = (mouth_left + mouth_right) / 2
    coords = torch.arange(resolution, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")

    def bump(centre, sigma_x, sigma_y):
        return torch.exp(-((x - centre[0]) ** 2 / (2 * sigma_x ** 2) + (y - centre[1]) ** 2 / (2 * sigma_y ** 2)))

    bumps = torch.stack([bump(left_eye, 0.2 * eyes, 0.2 * eyes), bump(right_eye, 0.2 * eyes, 0.2 * eyes),
                         bump(mouth, 0.3 * eyes, 0.15 * eyes)]).amax(0)
    return (1.0 + weight * bumps)[None, None]
