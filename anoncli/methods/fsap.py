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


def diversity_draws(iterations: int, seed: int = DIVERSITY_SEED):
    """The uniform draws in [-1, 1) (zoom, shift x, shift y) of each outer iteration 0..N: the same for
    every face, so that a face's views, and with them its result, do not depend on the faces it is
    searched with."""
    import torch

    return torch.rand(iterations + 1, 3, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


def diverse_theta(theta, amount: float, draws):
    """``theta`` (N x 2 x 3, ``affine_grid``'s) zoomed by 1 + amount·draws[:, 0] (in [1 − amount, 1 + amount])
    and shifted by amount·draws[:, 1:] of half the crop in x and y: input diversity (Xie et al., Improving
    Transferability of Adversarial Examples with Input Diversity, CVPR 2019; not in the thesis)."""
    import torch

    u = draws.to(theta)
    zoom = 1.0 + amount * u[:, :1, None]
    return torch.cat([theta[..., :2] * zoom, theta[..., 2:] + amount * u[:, 1:, None]], dim=2)


class FSAP(LatentFaceMethod):
    def __init__(self, weights_dir=None, backbone_model=None, recognizer_model=None, perceptual_loss=None, **params):
        """``*_model`` / ``perceptual_loss``: modules already built (tests); otherwise from the flags."""
        super().__init__(weights_dir, backbone_model, **params)
        import torch

        from ..devices import search_dtype
        from ..identity.encoders import get_encoder_spec, load_identity_encoder
        from ..latent.fsap import FsapSettings
        from ..latent.image_losses import PerceptualLoss
        from ..latent.perturbation import PerturbationLimits

        self.torch = torch
        self.limits = PerturbationLimits(self.params["low_sigma"], self.params["low_luminance"], self.params["max_change"])
        self.settings = FsapSettings(self.params["iterations"], self.params["attribute_steps"], self.params["tau"],
                                     self.params["lambda_identity"], self.params["lambda_attribute"])
        self.faces_together = self.params["faces_together"]
        self.search_dtype = search_dtype(self.params["precision"], self.device)
        self.views = diversity_draws(self.settings.iterations).to(self.device)
        encoder_spec = get_encoder_spec(self.params["recognizer"])
        self.recognizer = (recognizer_model or load_identity_encoder(encoder_spec.name, weights_dir)).to(self.device)
        from ..identity.centres import descriptor_centre

        centre = descriptor_centre(encoder_spec.name)
        self.centre = None if centre is None else torch.tensor(centre, dtype=torch.float32, device=self.device)[None]
        self.chip_size = encoder_spec.chip_size
        self.chip_theta = torch.tensor(recognizer_chip_theta(encoder_spec, self.resolution, self.margin),
                                       dtype=torch.float32, device=self.device)[None]
        self.perceptual = perceptual_loss or PerceptualLoss(
            self.backbone.spec.resolution, self.margin, weights_dir, prefer_lpips=self.params["perceptual"] == "auto",
            dlib_encoder=self.recognizer if encoder_spec.name == "dlib-resnet" else None)
        self.perceptual = self.perceptual.to(self.device)
        # Channels-last convolutions: the same maths, about a sixth less time per iteration on the CPU (README, FSAP).
        self.backbone.to(self.device, torch.channels_last)
        for net in (self.recognizer, self.perceptual):
            net.to(memory_format=torch.channels_last)

    def low_precision(self):
        """Autocast to the search's dtype (``--precision``), or nothing for float32."""
        import contextlib

        if self.search_dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.torch.device(self.device).type, dtype=self.search_dtype)

    def chip_grid(self, n: int, steps=None):
        """``affine_grid`` of the recognizer's chip for n crops; with ``steps`` (each row's outer iteration),
        zoomed and shifted by that iteration's input-diversity draws (``diverse_theta``)."""
        import torch.nn.functional as F

        s = self.chip_size
        theta = self.chip_theta.expand(n, 2, 3)
        if steps is not None:
            theta = diverse_theta(theta, self.params["input_diversity"], self.views[steps])
        return F.affine_grid(theta, (n, 3, s, s), align_corners=False)

    def embed_chips(self, chips):
        """The recognizer's vectors of chips on the 0..255 scale, centred where its vectors share a common
        part (``identity.centres``)."""
        vectors = self.recognizer(chips).float()
        return vectors if self.centre is None else vectors - self.centre

    def chips(self, crops, grid=None):
        """The recognizer's chips (0..255) of working crops in [-1, 1], through ``grid`` (the plain chip's by default)."""
        import torch.nn.functional as F

        grid = self.chip_grid(len(crops)) if grid is None else grid
        return F.grid_sample((crops + 1.0) * 127.5, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def embed(self, crops):
        """The recognizer's vectors of working crops in [-1, 1] (differentiable), through the plain chip."""
        return self.embed_chips(self.chips(crops))

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        return self.anonymize_face(crop, landmarks_in_crop, key).crop

    def anonymize_face(self, crop, landmarks_in_crop, key=None):
        from .base import FaceRequest

        face = self.anonymize_many([FaceRequest(crop, landmarks_in_crop, key)])[0]
        if isinstance(face, Exception):
            raise face
        return face

    def anonymize_many(self, requests):
        """Algorithm 7 for every face of ``requests``, ``--faces-together`` of them sharing each decode."""
        from ..latent.fsap import FaceRows, fsap_search
        from ..latent.image_losses import cosine_distance, mse_loss, ssim_loss
        from ..latent.perturbation import limit_perturbation

        torch = self.torch
        crop_t = torch.cat([self.crop_tensor(r.crop) for r in requests])
        with torch.no_grad():
            x = self.to_backbone(crop_t)
            w = self.backbone.encode(x)
            reconstruction = self.backbone.decode(w)
            reference = self.embed(crop_t)
        perceptual = self.perceptual.against(x)

        def released(decoded, rows):
            return crop_t[rows.faces] + self.enlarge(limit_perturbation(decoded - reconstruction[rows.faces], self.limits))

        def identity_loss(decoded, rows, diverse: bool):
            """L_I of the released crop; ``diverse``: through this iteration's randomly zoomed and shifted chip."""
            chips = self.chips(released(decoded, rows), self.chip_grid(len(decoded), rows.steps if diverse else None))
            with self.low_precision():
                return cosine_distance(reference[rows.faces], self.embed_chips(chips))

        def decode(latents):
            with self.low_precision():
                return self.backbone.decode(latents).float()

        def confirm(latents, rows):
            """The float32 decode and its plain-chip L_I, for a face the search would stop."""
            decoded = self.backbone.decode(latents)
            return decoded, cosine_distance(reference[rows.faces], self.embed(released(decoded, rows)))

        diverse = self.params["input_diversity"] > 0
        result = fsap_search(
            w, decode,
            identity_loss=lambda d, rows: identity_loss(d, rows, diverse),
            attribute_losses=(lambda d, rows: mse_loss(x[rows.faces], d),
                              lambda d, rows: self._perceptual(perceptual, d, rows.faces),
                              lambda d, rows: ssim_loss(x[rows.faces], d)),
            settings=self.settings, identity_test=(lambda d, rows: identity_loss(d, rows, False)) if diverse else None,
            batch_size=self.faces_together, confirm=confirm if self.search_dtype is not None else None)
        faces = []
        every = torch.arange(len(requests), device=w.device)
        with torch.no_grad():
            out = released(result.decoded, FaceRows(every, torch.zeros_like(every)))
        for i in range(len(requests)):
            if not torch.isfinite(out[i]).all():   # never written: the stage fails that image with this reason
                faces.append(ValueError("the backbone decoded this face to values that are not finite"))
                continue
            outcome = {"iterations": result.iterations[i], "identity_loss": round(result.identity_loss[i], 4),
                       "tau_reached": result.reached[i], "diverged": result.diverged[i], "perceptual": self.perceptual.name,
                       "precision": "float32" if self.search_dtype is None else str(self.search_dtype).removeprefix("torch.")}
            faces.append(AnonymizedFace(self.to_crop(out[i:i + 1]), outcome=outcome))
        return faces

    def _perceptual(self, perceptual, decoded, faces):
        with self.low_precision():
            return perceptual(decoded, faces).float()
