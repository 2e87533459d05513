"""What FSAP and DP-Image share: a latent backbone (``anoncli.latent``) on the device asked for,
the face's working crop carried to the backbone's resolution and back, and the compositing that
puts the result into the photograph (``anoncli.faces.compositing``)."""
from __future__ import annotations

import numpy as np

from .base import FaceMethod


class LatentFaceMethod(FaceMethod):
    CROP_MASK_FEATHER = 0.02   # soft edge of ``blend_mask``, the region as seen from the crop

    def __init__(self, weights_dir=None, backbone_model=None, **params):
        """``backbone_model``: a ``latent.LatentBackbone`` already built (tests); otherwise ``--backbone``'s."""
        super().__init__(**params)
        from ..devices import resolve_device
        from ..faces.compositing import Compositor
        from ..faces.compositing_config import config_from_params
        from ..latent import create_backbone

        self.device = resolve_device(self.params["device"])
        self.backbone = backbone_model or create_backbone(self.params["backbone"], weights_dir, self.device)
        spec = self.backbone.spec
        self.resolution = int(self.params["crop_size"])
        if self.resolution < spec.resolution:
            raise ValueError(f"--crop-size must be at least the {spec.name} backbone's {spec.resolution} px, got {self.resolution}")
        self.margin = self.backbone.margin
        self.compositor = Compositor(config_from_params(self.params), weights_dir)

    def blend_mask(self, landmarks_in_crop: np.ndarray) -> np.ndarray:
        from ..faces.blend import face_mask

        shape = self.params["shape"]
        return face_mask(self.resolution, shape, self.CROP_MASK_FEATHER, self.margin,
                         landmarks_in_crop if shape == "hull" else None, self.params["brow_raise"])

    def crop_tensor(self, crop: np.ndarray):
        """The working crop as a 1 x 3 x S x S tensor in [-1, 1] on the method's device."""
        from ..models.tensors import to_tensor

        return to_tensor(np.asarray(crop, np.float32)[None]).to(self.device)

    def to_backbone(self, crop_t):
        """The working crop area-averaged to the backbone's resolution."""
        import torch.nn.functional as F

        r = self.backbone.spec.resolution
        return crop_t if crop_t.shape[-1] == r else F.interpolate(crop_t, size=(r, r), mode="area")

    def enlarge(self, small_t):
        """A backbone-resolution tensor enlarged to the working crop (bicubic, differentiable)."""
        import torch.nn.functional as F

        from ..models.bicubic import enlarge_bicubic

        size = small_t.shape[-1]
        if self.resolution % size == 0:
            return enlarge_bicubic(small_t, self.resolution // size)
        return F.interpolate(small_t, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False)

    @staticmethod
    def to_crop(tensor) -> np.ndarray:
        """A 1 x 3 x S x S tensor in [-1, 1] back to an S x S x 3 float crop in 0..255."""
        from ..models.tensors import to_images

        return np.float32(to_images(tensor.detach().cpu().clamp(-1.0, 1.0))[0])
