"""A perceptual distance that works offline: LPIPS's form (Zhang et al., CVPR 2018, eq. 1) on the
early residual blocks of dlib's face ResNet, the one deep network every install has.

    d(x, y) = Σ_l mean_hw ‖ f̂_l(x) − f̂_l(y) ‖²,   f̂_l = f_l / ‖f_l‖ over channels

with LPIPS's learned per-channel weights replaced by ones (their "baseline" variant): LPIPS's own
weights sit on AlexNet/VGG files that cannot be downloaded here. Seed 000 asks for LPIPS in the
student decoder's loss; this is what stands in for it, and says so.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DlibPerceptual(nn.Module):
    """Faces as N x 3 x R x R in [−0.5, 0.5], aligned with ``margin`` (anoncli.faces.align)."""

    def __init__(self, encoder, resolution: int, margin: float, blocks: int = 4):
        super().__init__()
        from ..identity.representation import representation_without_code

        self.representation = representation_without_code(encoder, resolution, margin)
        self.blocks = blocks

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        chips = self.representation.chips(2.0 * x)     # the representation's crops are in [−1, 1]
        return [F.normalize(f, dim=1, eps=1e-10) for f in self.representation.encoder.block_features(chips, self.blocks)]

    def reference_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x's features, computed once for many ``distance_to`` calls."""
        return self._features(x)

    def distance_to(self, reference: list[torch.Tensor], y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample distances, N, from x's ``reference_features``; ``weights`` (1 x 1 x R x R on the
        crop) weigh each place's difference, carried onto each block's grid by area."""
        if weights is None:
            return sum(((a - b) ** 2).sum(1).mean((1, 2)) for a, b in zip(reference, self._features(y)))
        on_chip = self.representation.to_chip(weights)
        return sum((((a - b) ** 2).sum(1) * F.adaptive_avg_pool2d(on_chip, a.shape[-2:])[:, 0]).mean((1, 2))
                   for a, b in zip(reference, self._features(y)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample distances, N."""
        return self.distance_to(self.reference_features(x), y)
