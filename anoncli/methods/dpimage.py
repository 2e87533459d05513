"""DP-Image (thesis ch. 4, Algorithm 6, Theorem 4.4.1; METHODS.md §8) on a latent backbone
(``anoncli.latent``; the project's Glow by default): z_0 = f_E(x) of the face at the backbone's
resolution, T noisy clipped steps (``latent.dpimage.dp_image_chain``, noise from the OS's
cryptographic generator, never stored), X_T = f_D(z_T) enlarged to the working crop (``--upsampler``) and put into
the photo's face region by ``anoncli.faces.compositing``. The manifest's guarantee per face is
what ``latent.dpimage.dp_image_account`` computes, stated as proved or assumed per backbone."""
from __future__ import annotations

import numpy as np

from .latent_face import LatentFaceMethod


DEFAULT_ITERATIONS = 1000
DEFAULT_CLIPS = {"glow": 0.5}
"""--clip when not given, per backbone; any other backbone: its ``BackboneSpec.clip``, the range of
real codes (thesis ±20 on W+). On the Glow, clip 3 (its range) decoded to no face within 10 steps
at σ = 0.2 (README, DP-Image)."""


def dpimage_settings(params: dict, backbone):
    """The run's ``DpImageSettings`` on ``backbone`` (a ``BackboneSpec``): --iterations as given, or
    with --epsilon the smallest T that reaches (ε, δ) at σ (ValueError with the numbers when it
    exceeds --max-iterations)."""
    from ..latent.dpimage import DpImageSettings
    from ..privacy.accountant import dp_image_iterations_for_epsilon

    latent_size = backbone.latent_size
    clip = params["clip"] if params["clip"] is not None else DEFAULT_CLIPS.get(backbone.name, backbone.clip)
    iterations = params["iterations"]
    if params["epsilon"] is not None:
        if iterations is not None:
            raise ValueError("give --epsilon (T is then solved for) or --iterations, not both")
        iterations = dp_image_iterations_for_epsilon(params["epsilon"], params["delta"], 2.0 * clip * np.sqrt(latent_size),
                                                     params["sigma"], params["max_iterations"])
    elif iterations is None:
        iterations = DEFAULT_ITERATIONS
    return DpImageSettings(params["sigma"], int(iterations), float(clip), params["delta"])


class DPImage(LatentFaceMethod):
    def __init__(self, weights_dir=None, backbone_model=None, **params):
        super().__init__(weights_dir, backbone_model, **params)
        from ..latent.dpimage import dp_image_account
        from .upsampling_specs import create_method_upsampler

        spec = self.backbone.spec
        self.upsample = create_method_upsampler(self.params, weights_dir, self.device)
        self.settings = dpimage_settings(self.params, spec)
        self.account = dp_image_account(self.settings, spec.latent_size)

    def _reencode(self, z: np.ndarray) -> np.ndarray:
        """f_E(f_D(z)) on a backbone whose inverse is not exact."""
        import torch

        with torch.no_grad():
            latent = torch.as_tensor(z, dtype=torch.float32, device=self.device)[None]
            return self.backbone.encode(self.backbone.decode(latent))[0].double().cpu().numpy()

    def release_latent(self, crop: np.ndarray) -> np.ndarray:
        """z_T for one working crop."""
        import torch

        from ..latent.dpimage import dp_image_chain

        with torch.no_grad():
            z0 = self.backbone.encode(self.to_backbone(self.crop_tensor(crop)))[0].double().cpu().numpy()
        return dp_image_chain(z0, self.settings, None if self.backbone.spec.exact_inverse else self._reencode)

    def anonymize_crop(self, crop, landmarks_in_crop, key=None):
        import torch

        z = self.release_latent(crop)
        with torch.no_grad():
            decoded = self.backbone.decode(torch.as_tensor(z, dtype=torch.float32, device=self.device)[None])
        face = self.to_crop(decoded)
        if self.backbone.spec.squeeze_grid:
            from ..flow.enlarge import remove_crosshatch

            face = remove_crosshatch(face, self.params.get("crosshatch_sigma", 0.0)).clip(0.0, 255.0)
        return self.upsample(face, self.resolution)

    def guarantee(self) -> dict:
        spec, a, s = self.backbone.spec, self.account, self.settings
        if spec.exact_inverse:
            proof = (f"proved: on the {spec.name} backbone f_E(f_D(z)) = z (an invertible flow) and clipping is 1-Lipschitz, so "
                     "every step is the same contraction and privacy amplification by iteration (Feldman et al. 2018) gives "
                     f"(α, αΔf²/(2Tσ²))-RDP with Δf = 2c√d, d = {a.dimension}")
        else:
            proof = (f"assumed, not proved: the bound needs z ↦ clip(f_E(f_D(z))) to be contractive, which the {spec.name} "
                     "encoder and generator are not shown to be (thesis Theorem 4.4.1 assumes it)")
        return {"mechanism": "Gaussian, iterated and clipped in a latent space (DP-Image, thesis ch. 4, Algorithm 6)",
                "epsilon": round(a.epsilon, 6), "delta": a.delta, "best_alpha": round(a.best_alpha, 6),
                "sigma": s.sigma, "iterations": s.iterations, "clip": s.clip, "dimension": a.dimension,
                "l2_sensitivity": round(a.sensitivity, 6), "rdp": f"{a.rdp_coefficient:.6g} * alpha",
                "backbone": spec.name, "bound": proof,
                "protects": f"the face's {a.dimension}-d latent code against any other face's (image-level neighbours), and "
                            "the decoded face as its post-processing; not covered: the pixels outside the face region, the "
                            "region's outline (from the photo's landmarks) and whatever --colour and --detail-sigma take from "
                            "the photo; never pure DP (the thesis' α = ∞ claim is false)",
                "noise_source": "os.urandom, never stored"}
