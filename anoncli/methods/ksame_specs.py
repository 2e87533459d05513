"""Parameters of the k-Same family (METHODS.md §3; book ch. 3.1.2; Newton, Sweeney, Malin 2005;
k-Same-Select: Gross, Airoldi, Malin, Sweeney 2005)."""
from __future__ import annotations

from dataclasses import replace

from ..faces.compositing_config import CompositingConfig
from .base import MethodSpec, Param
from .compositing_specs import compositing_params, compositing_weights
from .obfuscation_specs import common_shape_params

_CITATION = ("Newton, Sweeney, Malin, Preserving privacy by de-identifying face images, IEEE TKDE 2005 "
             "(book ch. 3.1.2; METHODS.md §3); clustering: MDAV, Domingo-Ferrer & Torra 2005")
_GUARANTEE = ("k-anonymity of the released faces: every output face is shared by at least k identities "
              "(with identity labels) or k faces of the run; not differential privacy")


def _k_and_labels(select: bool) -> tuple[Param, ...]:
    labels_help = ("CSV with an `image` column (file names) and an identity column"
                   + (", and the --select attribute columns" if select else "")
                   + " (CelebA or UTKFace labels.csv). With identities, k counts people, not images.")
    return (
        Param("k", int, 5, "Smallest group: every output face is the average of at least k units (identities or faces).", minimum=2),
        Param("labels", str, "", labels_help),
        Param("identity_column", str, "auto", "Column of --labels with the person's identity; auto: `identity` if present; none: cluster faces, assuming each person appears once."),
    )


def _load(class_name: str):
    def load():
        from . import ksame

        return getattr(ksame, class_name)

    return load


def _load_m():
    from .ksame_m import KSameM

    return KSameM


_M_CITATION = ("Gross, Sweeney, De la Torre, Baker, Model-based face de-identification, CVPRW 2006 (book ch. 3.1.2, "
               "ref. 24; METHODS.md §3b); shape-free texture and shape weighting: Cootes, Edwards, Taylor, Active "
               "appearance models, IEEE TPAMI 2001, §3-4; landmarks: dlib's 68-point shape predictor (Kazemi & "
               "Sullivan, CVPR 2014; trained on iBUG 300-W, whose licence excludes commercial use); clustering: MDAV, "
               "Domingo-Ferrer & Torra 2005")
_M_GUARANTEE = (_GUARANTEE + "; with --render-shape own only the texture is: the face's 68-point shape "
                "(outline, pose, expression) is the original's and is not k-anonymised")
_M_PARAMS = (
    Param("render_shape", str, "group",
          "Shape the group's average texture is drawn on: group (the group's average shape, every face of a group "
          "identical: k-anonymous) or own (the face's own 68-point shape, keeping pose and expression; the shape is "
          "then NOT k-anonymised). Gross et al. 2006 render the average model, i.e. group; METHODS.md §3b.",
          choices=("group", "own")),
    Param("unit_face", str, "medoid",
          "With identity labels, what stands for a person in the group average: medoid (the person's photo nearest "
          "their mean in the shape-and-texture space: a group face averages k photos and stays sharp) or mean (the "
          "mean of all their photos: smoother). Either way every person counts once (METHODS.md §3 Decision).",
          choices=("medoid", "mean")),
    Param("bound", str, "faces",
          "What the 1/k bound covers when people have several photos: faces (groups are also balanced so that no "
          "person holds more than 1/k of a group's faces: a recognizer naming one person is right for at most 1/k of "
          "the faces; groups grow as needed, and a person with more than 1/k of all faces is refused) or units "
          "(plain MDAV groups of k people, Newton et al. 2005: 1/k of the people, not of their photos).",
          choices=("faces", "units")),
    Param("detail", float, 1.0,
          "Fine detail (skin, hair) the averaging removed that is put back, 0-1: each detail band of the group's "
          "texture is amplified toward the mean energy of its members' bands (a statistic of the whole group, so the "
          "group still shares one face). 0 = the plain average of Gross et al. 2006; heuristics for authentic faces: "
          "Prinosil et al. 2017 (book ref. 26); 1 measured more realistic (README, k-Same-M).",
          minimum=0.0, maximum=1.0),
    Param("trim", float, 0.2,
          "Per pixel, the share of the group's members dropped at each end before averaging (a trimmed mean), so that "
          "a feature only one member has (glasses, a mole, a stray lock) does not ghost into the group face; 0 = the "
          "plain mean of Gross et al. 2006.", minimum=0.0, maximum=0.45),
    Param("shape_weight", float, 1.0,
          "Weight of shape against texture in the clustering distance: the shape coordinates are scaled so that their "
          "total variance is this times the texture's (1 = the AAM's combined model, Cootes et al. 2001 §4.2).",
          minimum=0.0),
    Param("border_points", int, 4,
          "Fixed points per side of the crop's border added to the triangulation of the mean shape, so that the "
          "piecewise-affine warp covers the whole crop (corners included); more points pin the border more closely.",
          minimum=1, maximum=64),
)


KSAME_M_COMPOSITING = CompositingConfig(colour="none", detail_sigma=0.0)
"""k-Same-M's faces go into the photo through the compositor (issue 20 §2: the 68-point region from
brows to chin, multi-band blend), but with nothing taken from the photo inside the region: the
photo's colour (``--colour``) or its fine detail (``--detail-sigma``) are the person's own, and the
released face would no longer be the group's alone (the guarantee then says so)."""


def _m_shape_params() -> tuple[Param, ...]:
    """k-Same-M's crop at 512 px (its aligned averages keep the detail that smaller crops lose when the
    face is enlarged back into the photo: texture inside the face 0.34 of the original's at 128 px on
    CelebA crops; 0.60 at 256 px and 0.68 at 512 on 300 held-out crops, 0.54 and 0.68 on 40 wild photos,
    for 2.2 times the time; README, k-Same-M) and the compositing flags."""
    why = ("the first pass caches every face at this size (3·r² bytes each) and the plan holds their shape-free "
           "textures in memory (as many bytes again); 512 keeps the detail of the aligned averages in photos whose "
           "faces are 300 px wide (256: about half the time and a quarter of the memory per face, softer faces).")
    resolution = next(p for p in common_shape_params("ellipse", 0.02, _RESOLUTION_WHY) if p.name == "resolution")
    return (replace(resolution, default=512, help=resolution.help.split(";")[0] + "; " + why),
            *compositing_params(KSAME_M_COMPOSITING))


def photo_inside_caveat(params: dict) -> str:
    """What of the photo a k-Same-M face carries inside its region with these flags ("" = nothing)."""
    taken = []
    if params.get("colour", "none") != "none":
        taken.append(f"colour (--colour {params['colour']})")
    if float(params.get("detail_sigma", 0.0)) > 0:
        taken.append(f"detail finer than {params['detail_sigma']} crop pixels (--detail-sigma)")
    return ("the face also carries the photo's own " + " and ".join(taken) + ", which are the person's and not "
            "k-anonymised") if taken else ""


def _needs_select(params: dict) -> None:
    if not params["labels"] or not params["select"].strip(","):
        raise ValueError("ksame-select needs --labels CSV and --select COLUMN[,COLUMN...] (e.g. --select Male,Young)")


_RESOLUTION_WHY = ("the first pass caches every face at this size (3·r² bytes each), and clustering costs "
                   "grow with it; 128 is the book's CelebA crop (ch. 4.5.1).")
_COMPONENTS = Param("components", int, 100, "Eigenfaces kept (principal components of the dataset's aligned faces) for distances and the reconstruction.", minimum=1)

KSAME_SPECS = (
    MethodSpec(
        name="ksame-pixel",
        summary="k-Same-Pixel: each face becomes the pixel average of its group of >= k (dataset-level, two passes).",
        citation=_CITATION,
        params=(*_k_and_labels(False), *common_shape_params("ellipse", 0.02, _RESOLUTION_WHY)),
        load=_load("KSame"), formal_guarantee=_GUARANTEE, dataset_level=True,
    ),
    MethodSpec(
        name="ksame-eigen",
        summary="k-Same-Eigen: groups and averages in an eigenface (PCA) space; output = reconstruction of the group mean.",
        citation=_CITATION,
        params=(*_k_and_labels(False), _COMPONENTS, *common_shape_params("ellipse", 0.02, _RESOLUTION_WHY)),
        load=_load("KSameEigen"), formal_guarantee=_GUARANTEE, dataset_level=True,
    ),
    MethodSpec(
        name="ksame-m",
        summary="k-Same-M: groups of >= k averaged as 68-point shapes and shape-free textures (piecewise-affine warp), "
                "so group faces are sharp (dataset-level, two passes).",
        citation=_M_CITATION,
        params=(*_k_and_labels(False), *_M_PARAMS, *_m_shape_params()),
        load=_load_m, formal_guarantee=_M_GUARANTEE, dataset_level=True, weights=("dlib-shape-predictor-68",),
        param_weights=compositing_weights,
    ),
    MethodSpec(
        name="ksame-select",
        summary="k-Same-Select: partition by attribute columns of --labels, then k-Same inside each partition.",
        citation=_CITATION + "; k-Same-Select: Gross et al., Integrating utility into face de-identification, PET 2005",
        params=(*_k_and_labels(True),
                Param("select", str, "", "Comma-separated attribute columns of --labels whose values every group shares, e.g. Male,Young."),
                Param("space", str, "pixel", "k-Same inside each partition: pixel (k-Same-Pixel) or eigen (k-Same-Eigen).", choices=("pixel", "eigen")),
                _COMPONENTS, *common_shape_params("ellipse", 0.02, _RESOLUTION_WHY)),
        load=_load("KSameSelect"), formal_guarantee=_GUARANTEE, dataset_level=True, check=_needs_select,
    ),
)
