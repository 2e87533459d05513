"""Parameters of the latent-space methods (thesis ch. 4-5; METHODS.md §8-9): FSAP and DP-Image
move a face's code in a latent backbone (``anoncli.latent``) and decode it. Importable without torch."""
from __future__ import annotations

from ..devices import DEVICE_HELP, PRECISION_HELP, PRECISIONS, check_device_name
from ..faces.compositing_config import CompositingConfig
from ..latent import get_backbone_spec, list_backbones
from .base import MethodSpec, Param
from .compositing_specs import compositing_params, compositing_weights
from .upsampling_specs import upsampler_params, upsampler_weights

_THESIS = "Xue, PhD thesis (seed 003)"
ENCODER_EVALUATORS = {"dlib-resnet": "dlib", "arcface-ir-se50": "arcface"}
"""Identity encoders (``identity.encoders``) -> the report evaluator that is the same network."""


def backbone_params(crop_size: int, compositing: CompositingConfig) -> tuple[Param, ...]:
    return (
        Param("backbone", str, "glow", "Latent backbone f_E / f_D (README, Latent backbones): " + "; ".join(
              f"{b.name}, {b.resolution} px, {'exact' if b.exact_inverse else 'approximate'} inverse, weights "
              f"{', '.join(b.weights)}" for b in list_backbones()) + ".", choices=tuple(b.name for b in list_backbones())),
        Param("device", str, "auto", f"Where the networks run: {DEVICE_HELP}."),
        Param("crop_size", int, crop_size, "Side in pixels of the aligned crop the method works in and composites from; the "
              "backbone sees it area-averaged to its own resolution.", minimum=16, maximum=2048),
        *compositing_params(compositing),
    )


def _check_backbone(params: dict) -> None:
    if check_device_name(params["device"]).startswith("cuda"):
        from ..devices import resolve_device   # imports torch: only when a GPU is asked for

        resolve_device(params["device"])
    spec = get_backbone_spec(params["backbone"])
    if params["crop_size"] < spec.resolution:
        raise ValueError(f"--crop-size {params['crop_size']} is below the {spec.name} backbone's {spec.resolution} px")


def _backbone_weights(params: dict) -> tuple[str, ...]:
    return get_backbone_spec(params["backbone"]).weights + compositing_weights(params)


def _load_fsap():
    from .fsap import FSAP

    return FSAP


def _fsap_weights(params: dict) -> tuple[str, ...]:
    from ..identity.encoders import get_encoder_spec

    return _backbone_weights(params) + get_encoder_spec(params["recognizer"]).weights


FSAP_SPEC = MethodSpec(
    name="fsap",
    summary="FSAP: the face's latent code moved by signed-gradient steps that raise a recognizer's identity loss and "
            "keep MSE, LPIPS and SSIM to the original low, until the identity loss passes τ; the photo gets the decoded "
            "perturbation (its own detail kept), composited into the 68-point face region. White-box against --recognizer.",
    citation=_THESIS + ", ch. 5: Algorithm 7, eq. 5.3-5.8, settings §5.5.1.2; METHODS.md §9 (errata: ascend identity "
             "loss, descend attribute loss)",
    params=(
        *backbone_params(256, CompositingConfig(colour="none", detail_sigma=0.0)),
        Param("iterations", int, 100, "N: the most outer iterations (one identity step and --attribute-steps attribute steps each; "
              "thesis 100).", minimum=1, maximum=100000),
        Param("attribute_steps", int, 1, "k: attribute steps after each identity step. Thesis 6 (on StyleGAN2's W+); on the Glow, "
              "whose decoder is a bijection so that every attribute step pulls straight back toward W, 6 steps left faces at dlib "
              "distance 0.14 after 20 iterations, 1 step at 0.73 (README, FSAP).", minimum=0, maximum=1000),
        Param("tau", float, 1.4, "τ: stop once the identity loss 1 − cos(f_I(x), f_I(x̂)) passes this. Thesis 0.8 (ArcFace, "
              "white-box); with dlib's centred vectors 0.8 fooled dlib but not MobileFaceNet (2 % protected); 1.4 with "
              "--input-diversity 0.1 protected as well as 1.6 without it, with a cleaner face (README, FSAP).",
              minimum=0.0, maximum=2.0),
        Param("lambda_identity", float, 0.03, "λ_I: size of each identity step, per latent coordinate (eq. 5.6). Thesis "
              "0.02; 0.03 reaches τ in a quarter fewer iterations (the speed the issue asks on 2 cores) with protection, "
              "face SSIM and realism within the targets on 300 held-out crops (README, FSAP).", minimum=1e-6, maximum=10.0),
        Param("lambda_attribute", float, 0.006, "λ_P: size of each attribute step, per latent coordinate and loss (eq. 5.8). "
              "Thesis 0.008; at τ = 1.6 on the Glow λ_P = λ_I / 5 kept face SSIM at 0.89 and reached MobileFaceNet "
              "protection 0.95 against 0.78 at 0.4·λ_I (README, FSAP); kept at λ_I / 5.", minimum=0.0, maximum=10.0),
        Param("low_sigma", float, 3.0, "Perturbation limit (not in the thesis; README, FSAP): σ in backbone pixels of the "
              "low band whose colour is dropped and whose luminance is bounded, so that broad shading and colour casts of "
              "the decoded perturbation do not stain the photo; 0 turns the band rule off.", minimum=0.0, maximum=64.0),
        Param("low_luminance", float, 0.1, "Perturbation limit: largest luminance change of the low band, images in "
              "[-1, 1] (0.1: about 13 grey levels; soft bound L·tanh(x/L)); 0: unbounded.", minimum=0.0, maximum=2.0),
        Param("max_change", float, 0.6, "Perturbation limit: largest change of any pixel and channel, images in [-1, 1] "
              "(0.6: about 77 grey levels; soft bound); 0: unbounded. Tighter limits protect less (README, FSAP).",
              minimum=0.0, maximum=2.0),
        Param("input_diversity", float, 0.1, "Transfer aid (not in the thesis; Xie et al., CVPR 2019): each identity step "
              "reads the recognizer's chip with a random zoom within ±D and a shift within ±D of half the crop, so that the "
              "perturbation fools more than one exact view of --recognizer and transfers better to recognizers it never saw "
              "(MobileFaceNet); the stopping test reads the plain chip. 0: off (README, FSAP).", minimum=0.0, maximum=0.5),
        Param("recognizer", str, "dlib-resnet", "f_I, the recognizer the identity loss reads (identity-encoder registry): "
              "dlib-resnet (offline) or arcface-ir-se50 (`anoncli weights fetch facexlib-arcface-ir-se50`). Reports mark it "
              "white-box.", choices=tuple(ENCODER_EVALUATORS)),
        Param("perceptual", str, "auto", "L_l: auto uses LPIPS v0.1 (AlexNet) when its weights are present and otherwise "
              "the offline dlib-perceptual term (LPIPS's form on dlib's first residual blocks); offline always uses the "
              "latter. The manifest names the one used.", choices=("auto", "offline")),
        Param("faces_together", int, 8, "Speed only: how many faces share each pass through the networks (a batch); "
              "each face still follows Algorithm 7 on its own, and one that stops makes room for the next. Each worker "
              "is given enough images to keep the batch full (README, FSAP speed).", minimum=1, maximum=256),
        Param("precision", str, "auto", "Speed only: what the search's networks compute in: " + PRECISION_HELP + ". "
              "Below float32 every face the search would stop is decoded and tested again in float32, stops only if "
              "its identity loss still passes τ, and is released from that decode (README, FSAP speed).",
              choices=PRECISIONS),
    ),
    load=_load_fsap,
    weights=(),
    param_weights=_fsap_weights,
    param_recognizers=lambda params: (ENCODER_EVALUATORS[params["recognizer"]],),
    check=_check_backbone,
    faces_together=lambda params: params["faces_together"],
)


def _load_dpimage():
    from .dpimage import DPImage

    return DPImage


def _check_dpimage(params: dict) -> None:
    """Everything decidable before a network loads: the flags and the T that --epsilon needs."""
    _check_backbone(params)
    from .dpimage import dpimage_settings

    spec = get_backbone_spec(params["backbone"])
    dpimage_settings(params, spec)


DPIMAGE_UPSAMPLER_STRENGTH = 1.0
"""dpimage's --upsampler-strength: on 40 CelebA wild photos (crosshatch removed) the texture was 0.18 bicubic,
0.46 at 0.75 and 0.62 at 1 (0.6 asked), KID / floor dlib mid 4.5, 1.7 and 1.6 (README, DP-Image)."""

DPIMAGE_SPEC = MethodSpec(
    name="dpimage",
    summary="DP-Image: the face's latent code clipped to ±c and given Gaussian noise T times (cryptographic noise, never "
            "stored), decoded and composited into the 68-point face region. (ε, δ)-DP of the latent code against any other "
            "face, proved on the Glow (exact inverse), assumed on encoder + generator backbones; ε is written per face.",
    citation=_THESIS + ", ch. 4: Algorithm 6, Theorem 4.4.1, settings §4.5; METHODS.md §8 (decision for exact backbones, "
             "errata: no pure DP)",
    params=(
        *backbone_params(256, CompositingConfig(colour="none", detail_sigma=0.0)),
        Param("sigma", float, 0.2, "σ: standard deviation of the Gaussian noise of every step (thesis 0.2, 0.4, 0.6).",
              minimum=1e-9),
        Param("iterations", int, None, "T: noisy steps (thesis 1 to 10^5). Default 1000, or with --epsilon the smallest T "
              "that reaches it at --sigma.", minimum=1, maximum=10_000_000),
        Param("clip", float, None, "c: every step clips the code to ±c; Δf = 2c√d. Default: 0.5 on glow (its real codes lie "
              "99.86 % within ±3, but at ±3 the noise soon leaves what the Glow decodes as a face: README, DP-Image), the "
              "backbone's range elsewhere (±20 on StyleGAN2's W+, thesis §4.5.1.3).", minimum=1e-6),
        Param("delta", float, 1e-8, "δ of the (ε, δ) guarantee (thesis 1e-8).", minimum=1e-300, maximum=0.5),
        Param("epsilon", float, None, "Target ε at --delta: T is solved for (needs T·σ² = Δf²/(2ρ)); refused, with the "
              "numbers, when it needs more than --max-iterations.", minimum=1e-9),
        Param("max_iterations", int, 1_000_000, "Largest T --epsilon may ask for (each step draws d Gaussian values).",
              minimum=1),
        Param("crosshatch_sigma", float, 1.5, "On the Glow and its student (squeeze layers), the decoded face's crosshatch "
              "of a 2-pixel period is removed before it is enlarged, as flowrot does (its --crosshatch-sigma, in the "
              "backbone's pixels); 0 keeps it.", minimum=0.0, maximum=8.0),
        *upsampler_params("the decoded face (post-processing of the released code: the guarantee is unchanged)",
                          "realesrgan-x4plus", DPIMAGE_UPSAMPLER_STRENGTH),
    ),
    load=_load_dpimage,
    formal_guarantee="(epsilon, delta)-DP of the face's latent code against any other face, by Theorem 4.4.1 "
                     "(proved on exact backbones, assumed otherwise); written per face",
    deterministic=False,
    param_weights=lambda params: _backbone_weights(params) + upsampler_weights(params),
    check=_check_dpimage,
)
