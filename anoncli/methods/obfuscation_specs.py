"""Parameters of the obfuscation baselines (METHODS.md §1; book ch. 3.1.1, ch. 4-6).

Strengths are relative to the face width (cheek to cheek in the aligned crop), so the same
setting removes the same amount of identity at any image resolution; the manifest records
the resulting absolute pixel values per face. Defaults were chosen so that dlib's
face_recognition distance between original and anonymized face exceeds 0.6 on at least
90 % of CelebA faces (book ch. 4, Table 4.1: blur r=5 leaves it at 0.26, too weak).
"""
from __future__ import annotations

from .base import MethodSpec, Param

_BOOK = "Wen et al., Face De-identification (2023), ch. 3.1.1; settings ch. 4 Table 4.1, ch. 5 Table 5.1"

_SHAPE = ("ellipse", "box", "hull")


_OBFUSCATION_RESOLUTION = "the obfuscations remove detail, so 128 loses nothing they keep."


def common_shape_params(shape_default: str, feather_default: float,
                        resolution_why: str = _OBFUSCATION_RESOLUTION) -> tuple[Param, ...]:
    return (
        Param("shape", str, shape_default, "Region replaced: ellipse over the face, box, or hull grown from the 5 landmarks.", choices=_SHAPE),
        Param("feather", float, feather_default, "Soft edge of the blend mask, Gaussian sigma as a fraction of the crop size (0 = hard edge).", minimum=0.0, maximum=0.2),
        Param("resolution", int, 128, "Side of the aligned face crop the method works on, in pixels; " + resolution_why, minimum=32, maximum=2048),
    )


def _load(name: str):
    def load():
        from . import obfuscation

        return getattr(obfuscation, name)

    return load


OBFUSCATION_SPECS = (
    MethodSpec(
        name="blur",
        summary="Gaussian blur, or the downsample-upsample blur of Ryoo et al., over the face.",
        citation=_BOOK + "; downsample variant: book ch. 5.4 (7x7, 19x19)",
        params=(
            Param("kind", str, "gaussian", "gaussian: Gaussian kernel; downsample: shrink the face to a few samples and enlarge back.", choices=("gaussian", "downsample")),
            Param("sigma", float, 0.22, "Gaussian sigma as a fraction of the face width (kind=gaussian).", minimum=0.0, maximum=1.0),
            Param("cells", float, 3.0, "Samples across the face width (kind=downsample); fewer is stronger.", minimum=1.0, maximum=256.0),
            *common_shape_params("ellipse", 0.02),
        ),
        load=_load("Blur"),
    ),
    MethodSpec(
        name="pixelate",
        summary="Mosaic: the face is divided into square cells, each replaced by its mean colour.",
        citation=_BOOK + " (4x4, 8x8, 16x16 cells)",
        params=(
            Param("cells", float, 7.0, "Cells across the face width; fewer is stronger.", minimum=1.0, maximum=256.0),
            *common_shape_params("ellipse", 0.0),
        ),
        load=_load("Pixelate"),
    ),
    MethodSpec(
        name="mask",
        summary="Opaque fill of the face region with one colour.",
        citation=_BOOK + " (black rectangular blocks are the most common form)",
        params=(
            Param("color", str, "#000000", "Fill colour as #rrggbb."),
            *common_shape_params("box", 0.0),
        ),
        load=_load("Mask"),
    ),
    MethodSpec(
        name="noise",
        summary="Additive Gaussian noise on the face region (not differentially private).",
        citation=_BOOK + " (sigma = 9, 10, 15, 30, 49 on the 0-255 scale)",
        params=(
            Param("sigma", float, 128.0, "Noise standard deviation on the 0-255 scale.", minimum=0.0, maximum=255.0),
            Param("grain", float, 0.04, "Size of a noise cell as a fraction of the face width (0 = one crop pixel).", minimum=0.0, maximum=0.5),
            *common_shape_params("ellipse", 0.02),
        ),
        load=_load("Noise"),
        deterministic=False,
    ),
)

def _cells_fit(params: dict) -> None:
    if params["resolution"] % params["cell"]:
        raise ValueError(f"--resolution {params['resolution']} must be a multiple of --cell {params['cell']} "
                         "(every cell must hold b x b pixels for the stated sensitivity)")


DPPIX_SPEC = MethodSpec(
    name="dppix",
    summary="DP-Pix: pixelate, then Laplace noise of scale 255*m/(b^2*eps) on every cell mean.",
    citation="Fan, Image pixelization with differential privacy, DBSec 2018 (METHODS.md §2; book ch. 3.1.1)",
    params=(
        Param("epsilon", float, 0.5, "Privacy budget of each face's cell means (Laplace mechanism).", minimum=1e-6),
        Param("cell", int, 16, "Cell side b in pixels of the aligned crop; --resolution must be a multiple of it.", minimum=1, maximum=512),
        Param("m", int, 16, "Colour samples of the aligned crop (one channel of one pixel) that may differ between neighbouring faces.", minimum=1),
        Param("resolution", int, 128, "Side of the aligned face crop in pixels.", minimum=32, maximum=2048),
    ),
    load=lambda: __import__("anoncli.methods.dppix", fromlist=["DPPix"]).DPPix,
    formal_guarantee="epsilon-DP for the face box of the aligned crop under an m-sample neighbourhood (Laplace mechanism)",
    deterministic=False,
    check=_cells_fit,
)
