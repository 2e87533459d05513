"""DP-Pix (Fan, DBSec 2018; METHODS.md §2, cited in book ch. 3.1.1): pixelate the aligned face
into b x b cells, then add Laplace noise of scale 255·m/(b²·ε) to every cell mean.

Neighbouring images differ in at most m samples (one colour channel of one pixel each), each
by at most 255, so the vector of cell means has L1 sensitivity 255·m/b² and the noisy means are
ε-differentially private (Laplace mechanism); what the method writes is post-processing of them.
The guarantee covers the pixels inside the replaced box of the aligned crop, under that
m-sample neighbourhood; pixels outside the box are released unchanged. The mask is hard (no
feather) because a soft edge would mix original pixels into the output.
"""
from __future__ import annotations

import numpy as np

from ..faces.blend import face_mask
from ..privacy.mechanisms import laplace_noise
from .base import FaceMethod
from .obfuscation import cell_means, fill_cells

PIXEL_RANGE = 255.0


def dppix_noise_scale(cell_px: int, m: int, epsilon: float) -> float:
    """Laplace scale 255·m/(b²·ε)."""
    if cell_px < 1 or m < 1 or not epsilon > 0:
        raise ValueError("DP-Pix needs cell >= 1, m >= 1 and epsilon > 0")
    return PIXEL_RANGE * m / (cell_px ** 2 * epsilon)


def dp_pixelate(img: np.ndarray, cell_px: int, m: int, epsilon: float, noise=laplace_noise) -> np.ndarray:
    """The DP-Pix image: noisy cell means, clipped to [0, 255], each repeated over its cell.
    Every cell must hold b x b pixels (the sensitivity assumes it)."""
    h, w = img.shape[:2]
    if h % cell_px or w % cell_px:
        raise ValueError(f"a {h}x{w} crop does not divide into {cell_px}-pixel cells")
    means, row_sizes, col_sizes = cell_means(img, cell_px)
    noisy = np.clip(means + noise(dppix_noise_scale(cell_px, m, epsilon), means.shape), 0.0, PIXEL_RANGE)
    return fill_cells(noisy, row_sizes, col_sizes).astype(img.dtype)


class DPPix(FaceMethod):
    def __init__(self, **params):
        super().__init__(**params)
        self.resolution = int(params["resolution"])
        self._mask = face_mask(self.resolution, "box", 0.0, self.margin)

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        return dp_pixelate(crop, int(self.params["cell"]), int(self.params["m"]), float(self.params["epsilon"]))

    def blend_mask(self, landmarks_in_crop):
        return self._mask

    def guarantee(self) -> dict:
        cell, m, eps = int(self.params["cell"]), int(self.params["m"]), float(self.params["epsilon"])
        return {"mechanism": "Laplace (DP-Pix, Fan 2018)", "epsilon": eps, "delta": 0.0,
                "noise_scale": dppix_noise_scale(cell, m, eps), "cell_px": cell, "m": m,
                "l1_sensitivity": PIXEL_RANGE * m / cell ** 2,
                "sensitivity_bound": "m samples of [0, 255] change, each b x b cell mean moves by at most 255/b^2 per sample",
                "protects": f"the pixels of the replaced box of the {self.resolution}-px aligned crop, against "
                            f"changes of up to {m} colour samples of that crop (one image pixel may feed several through the warp); "
                            "pixels outside the box are unchanged",
                "noise_source": "os.urandom, never stored"}
