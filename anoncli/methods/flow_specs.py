"""Parameters of FFEM's flow-latent rotation (seed 001, Sec. 3.2-3.3; METHODS.md §7). Importable
without torch."""
from __future__ import annotations

from ..faces.compositing_config import CompositingConfig
from .base import MethodSpec, Param, RestoreCapability, RestoreKind
from .compositing_specs import compositing_params, compositing_weights
from .upsampling_specs import upsampler_params, upsampler_weights

_FLOW = "glow-celeba-utk-64"
_STUDENT = "flow-student-celeba-utk-64"
_FFEM = "Zhu et al., People Taking Photos That Faces Never Share (FFEM)"

CROP_SIZE = 256
DETAIL_SIGMA = 0.5
"""flowrot's --detail-sigma, in its 64 px crop's pixels (about 1/200 of the face's width): the largest
of 0, 0.1, 0.15, 0.2, 0.25, 0.5 and 1 at which the fake faces of 40 held-out CelebA crops stayed
protected for at least 95 % by both recognizers (README, flowrot); coarser detail of the photo
carries the original's identity through the fake face (0.25: 85 % by dlib, 1: 10 %)."""
CROSSHATCH_SIGMA = 1.5
"""flowrot's --crosshatch-sigma, in the flow's pixels: the Gaussian over which the local amplitude of
each of the Glow's period-2 patterns is measured and removed (``flow.enlarge``); 1.5 leaves smooth
content within 0.05 grey levels on average (tests/test_flow_enlarge.py)."""
UPSAMPLER_STRENGTH = 0.75
"""flowrot's --upsampler-strength. On the 300 held-out crops KID / floor (dlib mid) was 7.7 and 8.1 with
bicubic and sharpening (two runs), 8.0 at 0.75 and 9.1 at 1 (9.9 is issue 20's bound); on 40 CelebA
wild photos the texture was 0.53, 0.52 at 0.5, 0.68 at 0.75 and 0.76 at 1 (0.6 asked); protection
rose (0.954-0.984 -> 0.993 by MobileFaceNet on the crops at 0.75). README, flowrot."""
SHARPEN = 0.0
SHARPEN_BICUBIC = 1.5
SHARPEN_SIGMA = 1.0
"""flowrot's --sharpen and --sharpen-sigma (flow pixels): unsharp masking of the enlarged fake face. With
--upsampler bicubic, on the 300 held-out crops (README, flowrot) it brought KID / floor (dlib mid) from 13.2
to 7.4 at 1.5 and 7.3 at 2.0, after the crosshatch removal, with protection unchanged; 1.5 draws softer
edges than 2.0 (looked at). Without the crosshatch removal, sharpening brings the Glow's grid forward.
The learned upsampler draws its own edges: off by default."""
FOREHEAD_RAISE = 0.5
"""flowrot's --forehead-raise: a bare forehead lets the original through; raising the region over it
lifted MobileFaceNet protection on the 300 held-out crops from 0.921/0.938 to 0.938-0.967 (mean 0.954, four
runs) without cutting into fringes as --brow-raise 0.5 does (README, flowrot)."""


def _load():
    from .flowrot import FlowRotation

    return FlowRotation


def _restore_capability(params: dict) -> RestoreCapability:
    """Restore needs each face's encrypted latent image: re-encoding the fake face (FFEM's
    model-only path) recovered 0.7 % of identities here (README, flowrot), so it is refused."""
    if not params["output_latent"]:
        return RestoreCapability(RestoreKind.IMPOSSIBLE, "it wrote no encrypted latent images, and re-encoding its fake faces "
                                 "does not recover the originals (0.7 % of identities back within dlib 0.5)",
                                 ("--output-latent", "--escrow"))
    if params["model"] == "student":
        return RestoreCapability(RestoreKind.APPROXIMATE, "the student's inverse is lossy: restore gives back the student's own "
                                 "round trip of each face, written with its measured round-trip PSNR")
    return RestoreCapability(RestoreKind.EXACT, "the Glow's exact inverse of each face's latent image (to its 8 bits)")


FLOWROT_SPEC = MethodSpec(
    name="flowrot",
    summary="FFEM: the face's flow latent turned by an orthogonal matrix derived from the face's key and decoded at "
            "temperature λ into a fake face (the flow's crosshatch removed, enlarged by Real-ESRGAN), put into the photo's face region (68-point outline, colour matched, the photo's "
            "finest detail kept, multi-band blend); restore turns back the latent images written with --output-latent "
            "(refused without them).",
    citation=_FFEM + ", Sec. 3.2 (encryption Z_enc = A·Z), 3.3 (temperature λ = 0.5), 5 (setup); METHODS.md §7 decision "
             "(one A per face from the keyfile)",
    params=(
        Param("model", str, "teacher", "The flow f: teacher, the Glow (exact inverse); student, its tiny CNN encoder and decoder "
              "distilled by `anoncli train student` (seed 000, MCKD: faster, lossy; its fake faces are measured in its model card).",
              choices=("teacher", "student")),
        Param("temperature", float, 0.5, "λ: the fake face is f⁻¹(λ·A·Z). FFEM uses 0.5 (better quality, less age and gender "
              "spread, Sec. 3.3) and sweeps 0.5-0.8 (Table 6); restore divides by it. Applies to the rotated levels (--keep-levels).", minimum=1e-3, maximum=1.0),
        Param("keep_levels", int, 0, "Finest flow levels kept from the original (their ε not rotated, decoded at temperature "
              "1); the coarser ones are rotated. 0 = FFEM, every level rotated. Keeping fine levels keeps the original's "
              "identity: on 40 held-out CelebA crops MobileFaceNet protection fell from 0.68 to 0.38 (1 level) and 0.18 "
              "(2 levels) at --detail-sigma 0.5 (README).", minimum=0, maximum=8),
        Param("crop_size", int, CROP_SIZE, "Side in pixels of the aligned crop the fake face is made in and composited from: "
              "the flow sees it area-averaged to its 64 px, and its fake face comes back enlarged (bicubic). The photo keeps "
              "its own detail finer than this crop and than --detail-sigma of its pixels (64 = the flow's own crop: the photo "
              "keeps all detail finer than 64 px, which carries identity).", minimum=64, maximum=1024),
        Param("crosshatch_sigma", float, CROSSHATCH_SIGMA, "Before the fake face is enlarged, the crosshatch the Glow's "
              "squeeze layers leave (patterns of a 2-pixel period) is removed: each pattern's local amplitude, averaged "
              "over a Gaussian of this sigma in the flow's pixels, is subtracted; 0 keeps it.", minimum=0.0, maximum=8.0),
        *upsampler_params("the flow's 64 px fake face", "realesrgan-x4plus", UPSAMPLER_STRENGTH,
                          " Restored faces are always enlarged bicubic."),
        Param("sharpen", float, SHARPEN, "Unsharp masking of the enlarged fake face, x + a·(x − G·x): a, the amount "
              f"(0 = none; with --upsampler bicubic, {SHARPEN_BICUBIC} was measured best). Not applied to restored faces.",
              minimum=0.0, maximum=5.0),
        Param("sharpen_sigma", float, SHARPEN_SIGMA, "The Gaussian G of --sharpen, in the flow's pixels.", minimum=0.1, maximum=8.0),
        *compositing_params(CompositingConfig(detail_sigma=DETAIL_SIGMA, forehead_raise=FOREHEAD_RAISE)),
        Param("output_latent", bool, False, "Also write each face's encrypted latent Z_enc as an image (FFEM's \"encrypted "
              "latent-variable face\", for users who need no face at all) to OUTPUT/latents/<image>.face<i>.png: the m x 3m "
              "matrix as m x m RGB pixels, 128 + 32·z. `anoncli restore` needs these images (or --escrow)."),
    ),
    load=_load,
    reversible=True,
    weights=(_FLOW,),
    param_weights=lambda params: (((_STUDENT,) if params.get("model") == "student" else ())
                                  + upsampler_weights(params) + compositing_weights(params)),
    restore=_restore_capability,
    aliases=("ffem",),
)
