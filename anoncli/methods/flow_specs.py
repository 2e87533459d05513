"""Parameters of FFEM's flow-latent rotation (seed 001, Sec. 3.2-3.3; METHODS.md §7). Importable
without torch."""
from __future__ import annotations

from .base import MethodSpec, Param, RestoreCapability, RestoreKind

_FLOW = "glow-celeba-utk-64"
_STUDENT = "flow-student-celeba-utk-64"
_FFEM = "Zhu et al., People Taking Photos That Faces Never Share (FFEM)"


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
            "temperature λ into a fake face; restore turns back the latent images written with --output-latent (refused without them).",
    citation=_FFEM + ", Sec. 3.2 (encryption Z_enc = A·Z), 3.3 (temperature λ = 0.5), 5 (setup); METHODS.md §7 decision "
             "(one A per face from the keyfile)",
    params=(
        Param("model", str, "teacher", "The flow f: teacher, the Glow (exact inverse); student, its tiny CNN encoder and decoder "
              "distilled by `anoncli train student` (seed 000, MCKD: faster, lossy; its fake faces are measured in its model card).",
              choices=("teacher", "student")),
        Param("temperature", float, 0.5, "λ: the fake face is f⁻¹(λ·A·Z). FFEM uses 0.5 (better quality, less age and gender "
              "spread, Sec. 3.3) and sweeps 0.5-0.8 (Table 6); restore divides by it.", minimum=1e-3, maximum=1.0),
        Param("shape", str, "crop", "Region replaced by the fake face: crop, the whole aligned crop; ellipse or hull keep the "
              "original's pixels around the face.", choices=("crop", "ellipse", "hull")),
        Param("feather", float, 0.0, "Soft edge of an ellipse or hull mask, Gaussian sigma as a fraction of the crop size "
              "(the whole crop has no edge to soften).", minimum=0.0, maximum=0.2),
        Param("output_latent", bool, False, "Also write each face's encrypted latent Z_enc as an image (FFEM's \"encrypted "
              "latent-variable face\", for users who need no face at all) to OUTPUT/latents/<image>.face<i>.png: the m x 3m "
              "matrix as m x m RGB pixels, 128 + 32·z. `anoncli restore` needs these images (or --escrow)."),
    ),
    load=_load,
    reversible=True,
    weights=(_FLOW,),
    param_weights=lambda params: (_STUDENT,) if params.get("model") == "student" else (),
    restore=_restore_capability,
    aliases=("ffem",),
)
