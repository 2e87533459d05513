"""FSAP, feature-space adversarial perturbation (thesis ch. 5, Algorithm 7; METHODS.md §9), on a
latent backbone (``anoncli.latent``; the project's Glow by default).

W = f_E(x) of the face at the backbone's resolution; ``latent.fsap.fsap_search`` moves W′ away
from the face's identity (L_I = 1 − cos of the recognizer's vectors, eq. 5.3) while keeping MSE,
LPIPS and SSIM to x low (eq. 5.4-5.8). The released crop is the original working crop plus the
decoded perturbation f_D(W′) − f_D(W), enlarged from the backbone's resolution (bicubic): with an
exact backbone f_D(W) = x, so at the backbone's resolution this is f_D(W′) itself, and the photo
keeps every detail the perturbation does not touch. L_I is measured on that released crop (what a
recognizer sees), the attribute losses at the backbone's resolution (the thesis' x and x̂).
Not in the thesis (which releases a StyleGAN2 face): the perturbation passes through
``latent.perturbation.limit_perturbation`` (low band grey and bounded, every pixel bounded) inside the
search, so τ is reached with what is released and a 64 px perturbation does not stain a wild photo.
The crop goes into the photo through ``anoncli.faces.compositing`` (68-point region, multi-band).
"""
from __future__ import annotations

import numpy as np

from .base import AnonymizedFace
from .latent_face import LatentFaceMethod


def recognizer_chip_theta(encoder_spec, resolution: int, margin: float):
    """The ``affine_grid`` theta that cuts the recognizer's own chip from a working crop."""
    from ..faces.align import estimate_similarity, template_points
    from ..identity.representation import crop_to_chip_matrix, sampling_theta

    if encoder_spec.name == "dlib-resnet":
        matrix = crop_to_chip_matrix(resolution, margin, encoder_spec.chip_size)
    else:   # the ArcFace template, as the registry's other encoders read it
        matrix = estimate_similarity(template_points(resolution, margin), template_points(encoder_spec.chip_size, 0.0))
    return sampling_theta(matrix, resolution, encoder_spec.chip_size)


class FSAP(LatentFaceMethod):
    def __init__(self, weights_dir=None, backbone_model=None, recognizer_model=None, perceptual_loss=None, **params):
        """``*_model`` / ``perceptual_loss``: modules already built (tests); otherwise from the flags."""
        super().__init__(weights_dir, backbone_model, **params)
        import torch

        from ..identity.encoders import get_encoder_spec, load_identity_encoder
        from ..latent.fsap import FsapSettings
        from ..latent.image_losses import PerceptualLoss
        from ..latent.perturbation import PerturbationLimits

        self.torch = torch
        self.limits = PerturbationLimits(self.params["low_sigma"], self.params["low_luminance"], self.params["max_change"])
        self.settings = FsapSettings(self.params["iterations"], self.params["attribute_steps"], self.params["tau"],
                                     self.params["lambda_identity"], self.params["lambda_attribute"])
        encoder_spec = get_encoder_spec(self.params["recognizer"])
        self.recognizer = (recognizer_model or load_identity_encoder(encoder_spec.name, weights_dir)).to(self.device)
        from ..identity.centres import descriptor_centre

        centre = descriptor_centre(encoder_spec.name)
        self.centre = None if centre is None else torch.tensor(centre, dtype=torch.float32, device=self.device)[None]
        self.chip_size = encoder_spec.chip_size
        self.chip_theta = torch.tensor(recognizer_chip_theta(encoder_spec, self.resolution, self.margin),
                                       dtype=torch.float32, device=self.device)[None]
        self.perceptual = perceptual_loss or PerceptualLoss(self.backbone.spec.resolution, self.margin, weights_dir,
                                                       prefer_lpips=self.params["perceptual"] == "auto")
        self.perceptual = self.perceptual.to(self.device)

    def embed(self, crops):
        """The recognizer's vectors of working crops in [-1, 1] (differentiable), centred where its
        vectors share a common part (``identity.centres``)."""
        import torch.nn.functional as F

        n, s = len(crops), self.chip_size
        grid = F.affine_grid(self.chip_theta.expand(n, 2, 3), (n, 3, s, s), align_corners=False)
        chips = F.grid_sample((crops + 1.0) * 127.5, grid, mode="bilinear", padding_mode="border", align_corners=False)
        vectors = self.recognizer(chips)
        return vectors if self.centre is None else vectors - self.centre

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        return self.anonymize_face(crop, landmarks_in_crop, key).crop

    def anonymize_face(self, crop, landmarks_in_crop, key=None):
        from ..latent.fsap import fsap_search
        from ..latent.image_losses import cosine_distance, mse_loss, ssim_loss
        from ..latent.perturbation import limit_perturbation

        torch = self.torch
        crop_t = self.crop_tensor(crop)
        with torch.no_grad():
            x = self.to_backbone(crop_t)
            w = self.backbone.encode(x)
            reconstruction = self.backbone.decode(w)
            reference = self.embed(crop_t)

        def released(decoded):
            return crop_t + self.enlarge(limit_perturbation(decoded - reconstruction, self.limits))

        result = fsap_search(
            w, self.backbone.decode,
            identity_loss=lambda decoded: cosine_distance(reference, self.embed(released(decoded))),
            attribute_losses=(lambda d: mse_loss(x, d), lambda d: self.perceptual(x, d), lambda d: ssim_loss(x, d)),
            settings=self.settings)
        with torch.no_grad():
            out = self.to_crop(released(result.decoded))
        outcome = {"iterations": result.iterations[0], "identity_loss": round(result.identity_loss[0], 4),
                   "tau_reached": result.reached[0], "perceptual": self.perceptual.name}
        return AnonymizedFace(out, outcome=outcome)
