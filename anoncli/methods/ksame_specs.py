"""Parameters of the k-Same family (METHODS.md §3; book ch. 3.1.2; Newton, Sweeney, Malin 2005;
k-Same-Select: Gross, Airoldi, Malin, Sweeney 2005)."""
from __future__ import annotations

from .base import MethodSpec, Param
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


def _load():
    from .ksame import KSame

    return KSame


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
        load=_load, formal_guarantee=_GUARANTEE, dataset_level=True,
    ),
    MethodSpec(
        name="ksame-eigen",
        summary="k-Same-Eigen: groups and averages in an eigenface (PCA) space; output = reconstruction of the group mean.",
        citation=_CITATION,
        params=(*_k_and_labels(False), _COMPONENTS, *common_shape_params("ellipse", 0.02, _RESOLUTION_WHY)),
        load=_load, formal_guarantee=_GUARANTEE, dataset_level=True,
    ),
    MethodSpec(
        name="ksame-select",
        summary="k-Same-Select: partition by attribute columns of --labels, then k-Same inside each partition.",
        citation=_CITATION + "; k-Same-Select: Gross et al., Integrating utility into face de-identification, PET 2005",
        params=(*_k_and_labels(True),
                Param("select", str, "", "Comma-separated attribute columns of --labels whose values every group shares, e.g. Male,Young."),
                Param("space", str, "pixel", "k-Same inside each partition: pixel (k-Same-Pixel) or eigen (k-Same-Eigen).", choices=("pixel", "eigen")),
                _COMPONENTS, *common_shape_params("ellipse", 0.02, _RESOLUTION_WHY)),
        load=_load, formal_guarantee=_GUARANTEE, dataset_level=True, check=_needs_select,
    ),
)
