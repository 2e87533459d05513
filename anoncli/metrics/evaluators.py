"""Face recognizers used as attackers by `anoncli report`: a registry, like the methods'.

Each evaluator embeds faces given the image and the face's box and five landmarks (from the
anonymization manifest, so an anonymized face is measured where the original was), and
compares embeddings with its own metric. ``literature_threshold`` is the same-person
threshold its source gives; the report also calibrates one at FAR 1e-3 on impostor pairs of
the original images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


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


class Evaluator:
    spec: EvaluatorSpec

    def embed(self, rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
        """(len(faces), D) embeddings; ``faces`` carry ``box`` and ``landmarks`` in image pixels."""
        raise NotImplementedError


class _Dlib(Evaluator):
    def __init__(self, weights_dir):
        from .dlib_identity import DlibIdentity

        self.model = DlibIdentity(weights_dir)

    def embed(self, rgb, faces):
        return np.stack([self.model.descriptor(rgb, f["box"]) for f in faces]) if faces else np.zeros((0, 128))


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


EVALUATORS: dict[str, EvaluatorSpec] = {
    "dlib": EvaluatorSpec(
        "dlib", "dlib ResNet (face_recognition), 128-d", "euclidean", 0.6,
        "face_recognition / dlib: same person below 0.6 (used in book ch. 4-7 and thesis ch. 5)",
        ("dlib-face-recognition-resnet", "dlib-shape-predictor-5"), lambda w: _Dlib(w), requires="eval", module="dlib"),
    "mobilefacenet": EvaluatorSpec(
        "mobilefacenet", "MobileFaceNet, ArcFace loss, CASIA-WebFace (Xiaoccer/MobileFaceNet_Pytorch)", "cosine",
        _literature_threshold("mobilefacenet_identity"), "none stated: the source picks one per LFW fold; only the FAR 1e-3 threshold is reported", ("mobilefacenet-arcface-casia",), lambda w: _MobileFaceNet(w)),
    "arcface": EvaluatorSpec(
        "arcface", "ArcFace IR-SE50 (facexlib, MS1M)", "cosine", _literature_threshold("arcface_identity"),
        "TreB1eN/InsightFace_Pytorch face_verify.py: same person at squared L2 distance <= 1.54, i.e. cosine distance "
        "<= 0.77 (a demo setting, not a measured rate)", ("facexlib-arcface-ir-se50",), lambda w: _ArcFace(w)),
}


def evaluator_available(name: str, weights_dir: str | None = None) -> tuple[bool, str | None]:
    """(usable, reason it is not)."""
    from ..weights import REGISTRY, locate

    spec = EVALUATORS[name]
    for w in spec.weights:
        if w not in REGISTRY:
            return False, f"no registry entry {w}"
        if locate(w, weights_dir)[0] is None:
            return False, f"weights {w} missing: `anoncli weights import DIR` or `anoncli weights fetch {w}`"
    return True, None
