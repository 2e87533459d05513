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
search, so τ is reached with what is released and a 64 px perturbation does not stain a wild photo; and
each identity step reads the recognizer through a randomly zoomed and shifted chip (input diversity,
``--input-diversity``), which carries the perturbation to recognizers it never saw, while the stopping
test reads the plain chip.
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


DIVERSITY_SEED = 0


def diverse_theta(theta, amount: float, generator):
    """``theta`` (N x 2 x 3, ``affine_grid``'s) zoomed by a random factor in [1 − amount, 1 + amount] and
    shifted by up to ``amount`` of half the crop in x and y: input diversity (Xie et al., Improving
    Transferability of Adversarial Examples with Input Diversity, CVPR 2019; not in the thesis)."""
    import torch

    n = theta.shape[0]
    u = torch.rand(n, 3, generator=generator, device=generator.device).to(theta) * 2.0 - 1.0
    zoom = 1.0 + amount * u[:, :1, None]
    return torch.cat([theta[..., :2] * zoom, theta[..., 2:] + amount * u[:, 1:, None]], dim=2)


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
        # Channels-last convolutions: the same maths, about a sixth less time per iteration on the CPU (README, FSAP).
        self.backbone.to(self.device, torch.channels_last)
        for net in (self.recognizer, self.perceptual):
            net.to(memory_format=torch.channels_last)

    def embed(self, crops, generator=None):
        """The recognizer's vectors of working crops in [-1, 1] (differentiable), centred where its
        vectors share a common part (``identity.centres``). With ``generator``, the chip is cut with a
        random zoom and shift of up to --input-diversity (``diverse_theta``)."""
        import torch.nn.functional as F

        n, s = len(crops), self.chip_size
        theta = self.chip_theta.expand(n, 2, 3)
        if generator is not None:
            theta = diverse_theta(theta, self.params["input_diversity"], generator)
        grid = F.affine_grid(theta, (n, 3, s, s), align_corners=False)
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
        perceptual = self.perceptual.against(x)

        def released(decoded):
            return crop_t + self.enlarge(limit_perturbation(decoded - reconstruction, self.limits))

        def identity_loss(decoded, generator=None):
            return cosine_distance(reference, self.embed(released(decoded), generator))

        views = None
        if self.params["input_diversity"] > 0:   # a fixed seed per face: the same photo gives the same output
            views = torch.Generator(device=self.device).manual_seed(DIVERSITY_SEED)
        result = fsap_search(
            w, self.backbone.decode,
            identity_loss=lambda decoded: identity_loss(decoded, views),
            attribute_losses=(lambda d: mse_loss(x, d), perceptual, lambda d: ssim_loss(x, d)),
            settings=self.settings, identity_test=identity_loss if views is not None else None)
        with torch.no_grad():
            out = self.to_crop(released(result.decoded))
        outcome = {"iterations": result.iterations[0], "identity_loss": round(result.identity_loss[0], 4),
                   "tau_reached": result.reached[0], "perceptual": self.perceptual.name}
        return AnonymizedFace(out, outcome=outcome)
