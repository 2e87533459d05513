"""Face recognizers used as attackers by `anoncli report`: a registry, like the methods'.

Each evaluator embeds faces given the image and the face's box and five landmarks (from the
anonymization manifest, so an anonymized face is measured where the original was), and
compares embeddings with its own metric. ``literature_threshold`` is the same-person
threshold its source gives. ``reference_threshold`` is one at FAR 1e-3 calibrated on a
labelled reference set (``benchmarks/calibrate_thresholds.py``): the report uses it when the run
has no identity labels, since "pairs of different images" of a face data set include the same
person's other photos and a threshold calibrated on them is far too low. With labels the report
calibrates its own on the run's originals, impostors being different labelled identities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ReferenceThreshold:
    """A same-person threshold at false accept rate ``far`` measured on labelled photos:
    ``threshold_at_far`` of the distances of ``impostor_pairs`` pairs of different identities
    (``benchmarks/calibrate_thresholds.py``, results in ``benchmarks/results/``)."""

    value: float
    far: float
    data: str                 # which photos: set, split, count, identities
    impostor_pairs: int
    genuine_pairs: int
    frr: float                # genuine pairs at or above the threshold (false rejections)
    date: str
    script: str = "benchmarks/calibrate_thresholds.py"


@dataclass(frozen=True)
class EvaluatorSpec:
    name: str
    summary: str
    metric: str                               # euclidean or cosine (1 - cosine similarity)
    literature_threshold: float | None
    threshold_source: str
    weights: tuple[str, ...]
    load: Callable[[str | None], "Evaluator"]
    requires: str = ""                        # the extra to install when its import fails
    module: str = ""                          # a module it needs beyond the core dependencies
    reference_threshold: ReferenceThreshold | None = None   # FAR 1e-3 on a labelled reference set


class Evaluator:
    spec: EvaluatorSpec

    def embed(self, rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
        """(len(faces), D) embeddings; ``faces`` carry ``box`` and ``landmarks`` in image pixels."""
        raise NotImplementedError


class _Dlib(Evaluator):
    """dlib's descriptor as face_recognition computes it at a known box (5-point shape predictor,
    ``get_face_chip``, ResNet), all three ported: no dlib needed, dlib's numbers to about 1e-6."""

    def __init__(self, weights_dir):
        from .dlib_port_identity import DlibPortIdentity

        self.model = DlibPortIdentity(weights_dir)

    def embed(self, rgb, faces):
        return self.model.descriptors(rgb, [f["box"] for f in faces])


class _MobileFaceNet(Evaluator):
    def __init__(self, weights_dir):
        from .mobilefacenet_identity import MobileFaceNetIdentity

        self.model = MobileFaceNetIdentity.from_registry(weights_dir)

    def embed(self, rgb, faces):
        if not faces:
            return np.zeros((0, self.model.embedding_dim), np.float32)
        return self.model.embed([rgb] * len(faces), [np.asarray(f["landmarks"], np.float64) for f in faces])


class _ArcFace(_MobileFaceNet):
    """facexlib's ArcFace IR-SE50: the same five-landmark interface as MobileFaceNet, 512-d."""

    def __init__(self, weights_dir):
        from .arcface_identity import ArcFaceIdentity

        self.model = ArcFaceIdentity.from_registry(weights_dir)


def _literature_threshold(module: str) -> float | None:
    """The module's LITERATURE_THRESHOLD, or None when its imports are missing."""
    import importlib

    try:
        return importlib.import_module(f"{__package__}.{module}").LITERATURE_THRESHOLD
    except ImportError:
        return None


_CELEBA_REFERENCE = ("CelebA crops (celeba-crops): 1,500 photos of 315 identities of the training split "
                     "(identity mod 10 != 0), main face by retinaface-onnx")

EVALUATORS: dict[str, EvaluatorSpec] = {
    "dlib": EvaluatorSpec(
        "dlib", "dlib ResNet (face_recognition), 128-d; ported to numpy and PyTorch, no dlib needed", "euclidean", 0.6,
        "face_recognition / dlib: same person below 0.6 (used in book ch. 4-7 and thesis ch. 5)",
        ("dlib-face-recognition-resnet", "dlib-shape-predictor-5"), lambda w: _Dlib(w),
        reference_threshold=ReferenceThreshold(
            0.5768, 1e-3, _CELEBA_REFERENCE, impostor_pairs=1120362, genuine_pairs=3888, frr=0.0838, date="2026-12-03")),
    "mobilefacenet": EvaluatorSpec(
        "mobilefacenet", "MobileFaceNet, ArcFace loss, CASIA-WebFace (Xiaoccer/MobileFaceNet_Pytorch)", "cosine",
        _literature_threshold("mobilefacenet_identity"), "none stated: the source picks one per LFW fold; only the FAR 1e-3 threshold is reported", ("mobilefacenet-arcface-casia",), lambda w: _MobileFaceNet(w),
        reference_threshold=ReferenceThreshold(
            0.6237, 1e-3, _CELEBA_REFERENCE, impostor_pairs=1120362, genuine_pairs=3888, frr=0.0862, date="2026-12-03")),
    "arcface": EvaluatorSpec(
        "arcface", "ArcFace IR-SE50 (facexlib, MS1M)", "cosine", _literature_threshold("arcface_identity"),
        "TreB1eN/InsightFace_Pytorch face_verify.py: same person at squared L2 distance <= 1.54, i.e. cosine distance "
        "<= 0.77 (a demo setting, not a measured rate)", ("facexlib-arcface-ir-se50",), lambda w: _ArcFace(w)),
}


def evaluator_available(name: str, weights_dir: str | None = None) -> tuple[bool, str | None]:
    """(usable, why not: what is missing and the command that gets it)."""
    import importlib.util

    from ..weights import REGISTRY, weights_available

    spec = EVALUATORS[name]
    missing = [w for w in spec.weights if w not in REGISTRY]
    if missing:
        return False, f"no registry entry {', '.join(missing)}"
    if spec.module and importlib.util.find_spec(spec.module) is None:
        return False, f"{spec.module} is not installed: pip install 'anoncli[{spec.requires}]'"
    return weights_available(spec.weights, weights_dir)
