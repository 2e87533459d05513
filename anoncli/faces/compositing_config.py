"""How a method's face is put back into the photograph: the typed settings of
``anoncli.faces.compositing`` (its flags: ``anoncli.methods.compositing_specs``). Importable
without cv2 or torch."""
from __future__ import annotations

from dataclasses import dataclass, fields

REGIONS = ("landmarks", "ellipse", "hull")
COLOUR_MATCHES = ("lab", "lab-chroma", "lab-local", "none")
BLENDS = ("multiband", "alpha")


@dataclass(frozen=True)
class CompositingConfig:
    """One method's compositing; every field is a method flag of the same name
    (``shape`` is ``--shape``, ``blend_width`` is ``--blend-width``...)."""

    shape: str = "landmarks"
    """landmarks: the face outline from dlib's 68 points (jaw 0-16, brows 17-26 raised toward the
    forehead), predicted in the photo; ellipse or hull: the fixed shapes of ``face_mask`` from the five
    detector landmarks."""
    brow_raise: float = 0.25
    """How far the brow points are moved up, as a fraction of the brow-to-chin distance (landmarks only)."""
    forehead_raise: float = 0.0
    """Above ``brow_raise``, each brow point's edge goes on up to this fraction (landmarks only) as
    far as the photo shows the forehead's bare skin (``faces.forehead``): the region takes a bare
    forehead and stops below a fringe, a hat or glasses; 0 (or at most ``brow_raise``) is off."""
    jaw_inset: float = 0.0
    """How far the jaw points are moved in toward the face's centre, as a fraction of the face's width
    (landmarks only): the photo keeps the face's edge where a generator draws a narrower face."""
    colour: str = "lab-chroma"
    """lab: the generated face's mean and standard deviation per Lab channel set to the original
    region's (on both images low-passed at the detail scale); lab-chroma, lab-local: then also the
    photo's chroma, or all three Lab channels, below ``colour_scale`` (local colour casts and blotches
    go; the chroma cost no measured protection, the shading does: README); none: the method's colours."""
    colour_scale: float = 0.05
    """lab-chroma / lab-local: the photo's chroma (a, b) / Lab channels below this Gaussian scale, as a
    fraction of the face's width, replace the generated face's (local colour casts and blotches)."""
    blend: str = "multiband"
    """multiband: each frequency band of the change blended with a transition as wide as the band
    (Burt & Adelson 1983); alpha: one transition of ``blend_width`` for all frequencies."""
    blend_width: float = 0.1
    """Width of the widest (lowest-frequency) transition inside the region's edge, as a fraction of
    the face's width (jaw point 0 to 16)."""
    outline_pose: bool = True
    """Where the 68 points fail (extreme pose or expression) the region is the mean outline placed by the
    five detector landmarks: True bends it by the face's pose (the nose's offset from the eyes;
    ``outline.posed_mean_outline``), False keeps the frontal mean."""
    occluder_ratio: float = 1.5
    """A face whose outline is this many times as wide as this one's is taken to be in front of it: its
    head zone (``faces.occlusion``) is left out of this face's region, but for this face's own features,
    so a small face behind a large one is not drawn over the large one's head; 0 composites every face whole."""
    detail_sigma: float = 0.5
    """Gaussian sigma, in the method's crop pixels, below which the photo keeps its own detail (skin
    texture, noise, grain) instead of the enlarged method output's; 0 keeps the method's output at every
    scale. Measured with identitydp (128 px crops, README): 0.5 keeps the photo's texture at a small cost in
    protection, 1.0 costs 15 points, 2.0 nearly all."""


def config_from_params(params: dict) -> CompositingConfig:
    """The compositing settings held in a method's resolved parameters (absent ones at their defaults)."""
    return CompositingConfig(**{f.name: params[f.name] for f in fields(CompositingConfig) if f.name in params})
