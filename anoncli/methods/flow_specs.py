"""Parameters of FFEM's flow-latent rotation (seed 001, Sec. 3.2-3.3; METHODS.md §7). Importable
without torch."""
from __future__ import annotations

from .base import MethodSpec, Param

_FLOW = "glow-celeba-utk-64"
_STUDENT = "flow-student-celeba-utk-64"
_FFEM = "Zhu et al., People Taking Photos That Faces Never Share (FFEM)"


def _load():
    from .flowrot import FlowRotation

    return FlowRotation


FLOWROT_SPEC = MethodSpec(
    name="flowrot",
    summary="FFEM: the face's flow latent turned by an orthogonal matrix derived from the face's key and decoded at "
            "temperature λ into a fake face; restore re-encodes the fake face and turns the latent back.",
    citation=_FFEM + ", Sec. 3.2 (encryption Z_enc = A·Z), 3.3 (temperature λ = 0.5), 5 (setup); METHODS.md §7 decision "
             "(one A per face from the keyfile)",
    params=(
        Param("model", str, "teacher", "The flow f: teacher, the Glow (exact inverse); student, its tiny CNN encoder and decoder "
              "distilled by `anoncli train student` (seed 000, MCKD: faster, lossy; its fake faces are measured in its model card).",
              choices=("teacher", "student")),
        Param("temperature", float, 0.5, "λ: the fake face is f⁻¹(λ·A·Z). FFEM uses 0.5 (better quality, less age and gender "
              "spread, Sec. 3.3) and sweeps 0.5-0.8 (Table 6); restore divides by it.", minimum=1e-3, maximum=1.0),
        Param("shape", str, "crop", "Region replaced by the fake face: crop, the whole aligned crop (model-only restore re-encodes "
              "exactly what the flow wrote); ellipse or hull keep the original's pixels around the face, but then the "
              "re-encoded crop is no longer the flow's output and model-only restore degrades.", choices=("crop", "ellipse", "hull")),
        Param("feather", float, 0.0, "Soft edge of an ellipse or hull mask, Gaussian sigma as a fraction of the crop size "
              "(the whole crop has no edge to soften).", minimum=0.0, maximum=0.2),
        Param("output_latent", bool, False, "Also write each face's encrypted latent Z_enc as an image (FFEM's \"encrypted "
              "latent-variable face\", for users who need no face at all) to OUTPUT/latents/<image>.face<i>.png: the m x 3m "
              "matrix as m x m RGB pixels, 128 + 32·z."),
    ),
    load=_load,
    reversible=True,
    weights=(_FLOW,),
    param_weights=lambda params: (_STUDENT,) if params.get("model") == "student" else (),
    aliases=("ffem",),
)
