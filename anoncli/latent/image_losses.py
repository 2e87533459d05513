"""FSAP's attribute losses (thesis §5.4.2.2, eq. 5.4): L_m (MSE), L_l (LPIPS) and L_s (SSIM)
between the original x and the decoded x̂, differentiable in x̂. Images are N x 3 x R x R in
[-1, 1] (the ``models.tensors`` convention)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..metrics.image_quality import DYNAMIC_RANGE, K1, K2, WINDOW_SIGMA

SSIM_WINDOW = 11
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def mse_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error, on the [-1, 1] scale."""
    return ((x_hat - x) ** 2).flatten(1).mean(1)


def _gaussian_window(device, dtype) -> torch.Tensor:
    r = torch.arange(SSIM_WINDOW, device=device, dtype=dtype) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-r ** 2 / (2 * WINDOW_SIGMA ** 2))
    return g / g.sum()


def _symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Mirror padding that repeats the edge pixel (OpenCV's BORDER_REFLECT, "fedcba|abcdef")."""
    x = torch.cat([x[..., :pad].flip(-1), x, x[..., -pad:].flip(-1)], dim=-1)
    return torch.cat([x[..., :pad, :].flip(-2), x, x[..., -pad:, :].flip(-2)], dim=-2)


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    x = _symmetric_pad(x, SSIM_WINDOW // 2)
    x = F.conv2d(x, window.view(1, 1, 1, -1))
    return F.conv2d(x, window.view(1, 1, -1, 1))


def ssim(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample mean SSIM (Wang et al. 2004) on the luma at the 0..255 scale: the same constants,
    window and luma as ``metrics.image_quality.ssim`` (which the tests compare it to)."""
    weights = torch.tensor(LUMA_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    a = ((x + 1.0) * (DYNAMIC_RANGE / 2) * weights).sum(1, keepdim=True)
    b = ((x_hat + 1.0) * (DYNAMIC_RANGE / 2) * weights).sum(1, keepdim=True)
    window = _gaussian_window(x.device, x.dtype)
    c1, c2 = (K1 * DYNAMIC_RANGE) ** 2, (K2 * DYNAMIC_RANGE) ** 2
    ma, mb = _blur(a, window), _blur(b, window)
    va, vb, cab = _blur(a * a, window) - ma * ma, _blur(b * b, window) - mb * mb, _blur(a * b, window) - ma * mb
    index = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return index.flatten(1).mean(1)


def ssim_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """L_s = 1 − SSIM(x, x̂), per sample."""
    return 1.0 - ssim(x, x_hat)


class PerceptualLoss(torch.nn.Module):
    """L_l: LPIPS v0.1 (AlexNet) when its two files are present (``anoncli weights``), else the
    offline stand-in ``models.perceptual.DlibPerceptual`` (LPIPS's form on dlib's first residual
    blocks, unit channel weights); ``name`` says which, and the manifest records it. ``dlib_encoder``:
    a frozen dlib network already loaded (a method whose recognizer is dlib's), which the stand-in
    then shares instead of loading its own copy."""

    def __init__(self, resolution: int, margin: float, weights_dir=None, prefer_lpips: bool = True, dlib_encoder=None):
        super().__init__()
        from ..metrics import lpips

        if prefer_lpips and lpips.available(weights_dir)[0]:
            self.net = lpips.LPIPS.from_registry(weights_dir).net
            self.name = lpips.NAME
            self._scale = 1.0          # LPIPS reads [-1, 1]
        else:
            from ..identity.encoders import load_identity_encoder
            from ..models.perceptual import DlibPerceptual

            encoder = dlib_encoder if dlib_encoder is not None else load_identity_encoder("dlib-resnet", weights_dir)
            self.net = DlibPerceptual(encoder, resolution, margin)
            self.name = "dlib-perceptual"   # the offline stand-in for LPIPS
            self._scale = 0.5          # DlibPerceptual reads [-0.5, 0.5]
        self.net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return self.net(x * self._scale, x_hat * self._scale)

    def against(self, x: torch.Tensor):
        """L_l(x, ·) as a function of (x̂, rows): x̂'s row i is compared with x[rows[i]], x's features
        computed once (a search compares many x̂ with the same faces)."""
        with torch.no_grad():
            reference = self.net.reference_features(x * self._scale)
        return lambda x_hat, rows: self.net.distance_to([f[rows] for f in reference], x_hat * self._scale)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − cos(a, b) per row (thesis eq. 5.3)."""
    return 1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-12)


assert math.isclose(sum(LUMA_WEIGHTS), 1.0)
