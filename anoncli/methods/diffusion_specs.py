"""Parameters of diffusion de-identification (thesis ch. 6, §6.5; METHODS.md §10). The thesis leaves
the optimisation's steps, learning rate, loss weights and DDIM steps unspecified; the defaults are the
settings measured in the README (diffusion section)."""
from __future__ import annotations

from ..faces.compositing_config import CompositingConfig
from .base import MethodSpec, Param
from .compositing_specs import compositing_params, compositing_weights
from .flow_specs import CROP_SIZE, DETAIL_SIGMA
from .upsampling_specs import upsampler_params, upsampler_weights

_THESIS = "PhD thesis (seed 004), ch. 6: §6.4 diffusion autoencoder, §6.5 fake set, pairing, eq. 6.7-6.8; METHODS.md §10"


def _load():
    from .diffusion import DiffusionDeid

    return DiffusionDeid


SEMANTIC_SSIM_FOR_FACES = 0.6
"""Held-out SSIM of the autoencoder's decodes from z̄ alone (random x_T, its model card) below which the
method's faces are not photographs of another person: with the committed file at 0.30 z̄ carries pose,
hair and colouring but not the face, and the optimisation changes the face adversarially (README, diffusion)."""


def _autoencoder_advisory(weights_dir, params=None) -> str | None:
    from ..weights import held_out_shortfall

    short = held_out_shortfall("diffae-celeba-utk-64", "semantic_only_ssim", SEMANTIC_SSIM_FOR_FACES, weights_dir)
    if short is None:
        return None
    path, card, ssim = short
    return (f"the diffusion autoencoder ({path.name}, {card.get('steps')} training steps) decodes a face from z̄ "
            f"alone at SSIM {ssim:.2f} on held-out faces: z̄ does not carry the face yet, so this method changes the faces "
            "adversarially (blotches) instead of making another person's photograph. Its figures are in the README "
            "(diffusion); measure with `anoncli report`.")


def _check(params: dict) -> None:
    from ..diffusion.ddim import DEFAULT_TRAINING_STEPS, ddim_timesteps

    try:
        ddim_timesteps(DEFAULT_TRAINING_STEPS, params["ddim_steps"])
    except ValueError as e:
        raise ValueError(f"--ddim-steps: {e}") from None


DIFFUSION_SPEC = MethodSpec(
    name="diffusion",
    summary="Diffusion de-identification: each face's semantic code z̄ replaced, from its nearest fake (decoded from "
            "codes sampled from the autoencoder's code prior), by optimising it against the face's identity while "
            "keeping attributes, with the face's inverted x_T fixed; composited into the 68-point face region "
            "(dataset-level, two passes). No formal guarantee; per face the manifest records the losses.",
    citation=_THESIS,
    params=(
        Param("fake_ratio", float, 2.0, "|X_F| / |X_R|: fakes decoded per real face of the run (§6.5.2 asks for more fakes "
              "than real faces).", minimum=1.0001, maximum=100.0),
        Param("steps", int, 10, "Adam steps on z̄_A (unspecified in the thesis; README, diffusion).", minimum=0, maximum=10000),
        Param("lr", float, 0.05, "Adam's learning rate on z̄_A (unspecified in the thesis).", minimum=1e-9, maximum=10.0),
        Param("identity_weight", float, 1.0, "w_id of L_id = |cos(E_A(x_A), E_A(x_R))| (eq. 6.7), E_A dlib's ResNet port with "
              "its vectors centred (reports mark dlib white-box).", minimum=0.0),
        Param("attribute_weight", float, 1.0, "w_att of L_att = ‖E_I(x_A) − E_I(x_R)‖₁ per feature (eq. 6.8), E_I the last "
              "feature map of the attribute classifier trained here (the thesis' FaRL is not available offline).", minimum=0.0),
        Param("ddim_steps", int, 10, "DDIM steps of the inversion to x_T and of every decode (a divisor of 1000); each "
              "optimisation step runs the decoder this many times forward and backward.", minimum=1, maximum=1000),
        Param("batch", int, 4, "Faces optimised together; also the unit an interrupted plan resumes from.", minimum=1,
              maximum=256),
        Param("crop_size", int, CROP_SIZE, "Side in pixels of the aligned crop the face is cached at and composited from: "
              "the autoencoder sees it area-averaged to its 64 px and its result comes back enlarged (--upsampler); the photo "
              "keeps its own detail finer than --detail-sigma of this crop's pixels.", minimum=64, maximum=1024),
        *upsampler_params("the autoencoder's 64 px face", "bicubic", 1.0),
        *compositing_params(CompositingConfig(detail_sigma=DETAIL_SIGMA)),
    ),
    load=_load,
    dataset_level=True,
    weights=("diffae-celeba-utk-64", "attributes-celeba-64", "dlib-face-recognition-resnet"),
    param_weights=lambda params: upsampler_weights(params) + compositing_weights(params),
    recognizers=("dlib",),
    check=_check,
    advisory=_autoencoder_advisory,
)
